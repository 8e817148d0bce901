"""The OpenFeature provider (django_zkflags/openfeature.py) with the real SDK
(``openfeature-sdk``) against a real ZooKeeper: booleans by the flag's rules for the
evaluation context (users, staff, groups, percentages, anonymous visitors, prerequisites)
and their reasons; values with TYPE_MISMATCH and FLAG_NOT_FOUND; the version in the flag
metadata; the events (READY, CONFIGURATION_CHANGED with flags_changed, STALE while the
connection is cut through a TcpProxy, READY again, READY after a late first snapshot); the
middleware that makes the request's user the evaluation context, sync and async.

The change event after a save in another OS process: tests/system/test_openfeature.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from django.urls import path
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.transaction_context import get_transaction_context

from django_zkflags import flag_is_active, flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.evaluation import RequestFlags
from django_zkflags.openfeature import (
    OpenFeatureContextMiddleware,
    ZKFlagsProvider,
    context_for,
)
from django_zkflags.rules import bucket, validate_environments_document
from django_zkflags.snapshot import EMPTY
from tests.support.openfeature_events import OpenFeature

from ..conftest import served_version, wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def openfeature(zkflags: Any) -> Iterator[OpenFeature]:
    of = OpenFeature(ZKFlagsProvider())
    try:
        yield of
    finally:
        of.close()


def user_context(pk: int, **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=str(pk), attributes=attributes)


# -- booleans: the rules for the context ----------------------------------------------------


def test_booleans_follow_the_rules_with_openfeatures_reasons(openfeature, zkflags, people):
    users, groups = people
    member, other = users[0], users[1]
    member.groups.add(groups[0])
    zkflags.write("on", everyone=True)
    zkflags.write("off", everyone=False)
    zkflags.write("staff", staff=True)
    zkflags.write("listed", users=[other.pk])
    zkflags.write("grp", groups=[groups[0].pk])
    zkflags.write("needs", everyone=True, requires=["off"])
    client = openfeature.client

    def details(name: str, context: EvaluationContext | None = None, default: bool = False):
        return client.get_boolean_details(name, default, context)

    on = details("on")
    assert (on.value, on.reason, on.variant, on.error_code) == (True, Reason.STATIC, "on", None)
    assert on.flag_metadata["version"] == served_version("on")
    assert on.flag_metadata["reason"] == "everyone"
    off = details("off", default=True)
    assert (off.value, off.reason, off.variant) == (False, Reason.DISABLED, "off")
    staff = details("staff", user_context(other.pk, is_staff=True))
    assert (staff.value, staff.reason) == (True, Reason.TARGETING_MATCH)
    not_staff = details("staff", user_context(other.pk))
    assert (not_staff.value, not_staff.reason) == (False, Reason.DEFAULT)
    assert not_staff.flag_metadata["reason"] == "no-match"
    listed = details("listed", user_context(other.pk))
    assert (listed.value, listed.reason, listed.flag_metadata["reason"]) == (
        True,
        Reason.TARGETING_MATCH,
        "users",
    )
    grp = details("grp", user_context(member.pk, groups=[groups[0].pk]))
    assert (grp.value, grp.flag_metadata["reason"]) == (True, "groups")
    assert details("grp", user_context(member.pk, groups=[str(groups[0].pk)])).value is True
    assert details("grp", user_context(member.pk)).value is False  # no groups, no request
    needs = details("needs")
    assert (needs.value, needs.reason) == (False, Reason.TARGETING_MATCH)
    assert needs.flag_metadata["prerequisite"] == "off"

    missing = details("missing", default=True)
    assert (missing.value, missing.reason, missing.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    )
    names = details("grp", user_context(member.pk, groups=["beta"]), default=True)
    assert (names.value, names.error_code) == (True, ErrorCode.INVALID_CONTEXT)


def test_percentages_split_users_and_anonymous_visitors_as_the_checks_do(
    openfeature, zkflags, people, rf
):
    users, _groups = people
    zkflags.write("pct", percent=50)
    client = openfeature.client
    for user in users:
        answer = client.get_boolean_details("pct", False, user_context(user.pk))
        assert answer.reason == Reason.SPLIT
        assert answer.flag_metadata["bucket"] == bucket("pct", user.pk)
        assert answer.flag_metadata["threshold"] == 5000
        assert answer.value is flag_is_active_for_user(user, "pct")
    for visitor in ("v1", "v2", "v3", "v4"):
        context = EvaluationContext(targeting_key=visitor, attributes={"authenticated": False})
        answer = client.get_boolean_details("pct", False, context)
        assert answer.flag_metadata["bucket"] == bucket("pct", visitor)
        request = rf.get("/")
        request.user = AnonymousUser()
        request.flags = RequestFlags(request)
        request.flags.anonymous_id = visitor  # as its cookie would give it
        assert answer.value is flag_is_active(request, "pct")
    nobody = client.get_boolean_details("pct", False, EvaluationContext())
    assert (nobody.value, nobody.reason, nobody.flag_metadata["reason"]) == (
        False,
        Reason.DEFAULT,
        "no-match",
    )


def test_declared_flags_answer_their_default(openfeature, settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "FLAGS": {"declared": {"default": True, "value": 3}}}
    answer = openfeature.client.get_boolean_details("declared", False)
    assert (answer.value, answer.reason, answer.error_code) == (True, Reason.DEFAULT, None)
    assert answer.flag_metadata["declared"] is True
    value = openfeature.client.get_integer_details("declared", 0)
    assert (value.value, value.reason) == (3, Reason.DEFAULT)


# -- values ------------------------------------------------------------------------------------


def test_values_with_type_mismatch_and_flag_not_found(openfeature, zkflags):
    zkflags.write("limit", value=25)
    zkflags.write("ratio", value=0.75)
    zkflags.write("greeting", value="hello")
    zkflags.write("switch", value=True)
    zkflags.write("layout", value={"columns": [1, 2], "theme": "dark"})
    zkflags.write("plain", everyone=True)
    client = openfeature.client

    greeting = client.get_string_details("greeting", "x")
    assert (greeting.value, greeting.reason, greeting.error_code) == ("hello", Reason.STATIC, None)
    assert greeting.flag_metadata["version"] == served_version("greeting")
    assert client.get_integer_value("limit", 0) == 25
    assert client.get_float_value("limit", 0.0) == 25.0  # an integer is a number too
    assert client.get_float_value("ratio", 0.0) == 0.75
    layout = client.get_object_details("layout", {})
    assert layout.value == {"columns": [1, 2], "theme": "dark"}
    assert isinstance(layout.value, dict) and isinstance(layout.value["columns"], list)

    for name, getter, default in (
        ("ratio", client.get_integer_details, 1),
        ("limit", client.get_string_details, "d"),
        ("switch", client.get_integer_details, 7),  # a boolean is not an integer
        ("greeting", client.get_object_details, {"d": 1}),
    ):
        answer = getter(name, default)
        assert (answer.value, answer.reason, answer.error_code) == (
            default,
            Reason.ERROR,
            ErrorCode.TYPE_MISMATCH,
        ), name
    missing = client.get_integer_details("nowhere", 3)
    assert (missing.value, missing.error_code) == (3, ErrorCode.FLAG_NOT_FOUND)
    plain = client.get_string_details("plain", "d")
    assert (plain.value, plain.reason, plain.error_code) == ("d", Reason.DEFAULT, None)


def test_a_value_set_for_this_processs_environment_says_so(openfeature, zkflags, settings):
    zkflags.writer.write_environments(
        validate_environments_document({"parents": {"canary": None}}), None
    )
    zkflags.write("limit", value=10, environments={"canary": {"value": 20}})
    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "canary"}
    wait_until(lambda: store.base.chain == ("canary",))
    answer = openfeature.client.get_integer_details("limit", 0)
    assert (answer.value, answer.flag_metadata["environment"]) == (20, "canary")


# -- events --------------------------------------------------------------------------------


def test_ready_then_configuration_changed_for_every_change(openfeature, zkflags):
    events = openfeature.events
    events.wait(ProviderEvent.PROVIDER_READY)
    assert openfeature.client.get_provider_status().value == "READY"
    mark = len(events.kinds())
    zkflags.write("banner", everyone=True)
    [changed] = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, after=mark)
    assert changed.flags_changed == ["banner"]
    assert changed.provider_name == "django-zkflags"
    mark = len(events.kinds())
    zkflags.write("banner", everyone=False)
    zkflags.write("other", percent=5)
    changes = events.wait(
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        after=mark,
    )
    assert [c.flags_changed for c in changes] == [["banner"], ["other"]]


def test_stale_while_disconnected_and_ready_again(proxied_site):
    of = OpenFeature(ZKFlagsProvider())
    try:
        of.events.wait(ProviderEvent.PROVIDER_READY)
        mark = len(of.events.kinds())
        proxied_site.proxy.block()
        of.events.wait(ProviderEvent.PROVIDER_STALE, after=mark)
        assert of.client.get_provider_status().value == "STALE"
        # Still answering, from the last snapshot.
        assert (
            of.client.get_boolean_details("nothing", False).error_code == ErrorCode.FLAG_NOT_FOUND
        )
        proxied_site.write("during", everyone=True)  # around the proxy
        proxied_site.proxy.unblock()
        of.events.wait(
            ProviderEvent.PROVIDER_STALE,
            ProviderEvent.PROVIDER_READY,
            ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
            after=mark,
        )
        assert of.client.get_provider_status().value == "READY"
        assert of.client.get_boolean_value("during", False) is True
    finally:
        of.close()


@pytest.fixture
def unreachable(proxy: Any, settings: Any) -> Iterator[Any]:
    """This process's runtime pointed at ZooKeeper through a proxy that refuses it."""
    proxy.block()
    settings.ZKFLAGS = {**settings.ZKFLAGS, "STARTUP_TIMEOUT": 0.2}
    settings.ZKFLAGS_URL = f"zk://{proxy.hosts}/openfeature-late"
    try:
        yield proxy
    finally:
        runtime.stop()
        store.publish(EMPTY)


def test_ready_only_once_a_first_snapshot_came(unreachable):
    of = OpenFeature(ZKFlagsProvider(startup_timeout=0.2), wait=False)
    try:
        [error] = of.events.wait(ProviderEvent.PROVIDER_ERROR)
        assert error.error_code == ErrorCode.PROVIDER_NOT_READY
        # Answering meanwhile, from what the process has (nothing here).
        assert of.client.get_boolean_details("x", True).value is True
        assert ProviderEvent.PROVIDER_READY not in of.events.kinds()
        unreachable.unblock()
        of.events.wait(ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_READY)
        assert of.client.get_provider_status().value == "READY"
    finally:
        of.close()


# -- the request's user as the evaluation context ---------------------------------------------


def of_view(request: Any) -> HttpResponse:
    client = api.get_client(request.GET["domain"])
    name = request.GET["flag"]
    answer = client.get_boolean_details(name, False)
    return JsonResponse(
        {
            "openfeature": answer.value,
            "reason": answer.flag_metadata.get("reason"),
            "bucket": answer.flag_metadata.get("bucket"),
            "native": flag_is_active(request, name),
        }
    )


async def of_async_view(request: Any) -> HttpResponse:
    client = api.get_client(request.GET["domain"])
    answer = await client.get_boolean_details_async(request.GET["flag"], False)
    return JsonResponse({"openfeature": answer.value, "reason": answer.flag_metadata.get("reason")})


urlpatterns = [path("of/", of_view), path("of-async/", of_async_view)]

MIDDLEWARE_PATH = "django_zkflags.openfeature.OpenFeatureContextMiddleware"


@pytest.fixture
def site(settings: Any, openfeature: OpenFeature) -> OpenFeature:
    settings.ROOT_URLCONF = __name__
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, MIDDLEWARE_PATH]
    return openfeature


def ask(client: Any, site: OpenFeature, flag: str, view: str = "of") -> dict[str, Any]:
    response = client.get(f"/{view}/", {"domain": site.domain, "flag": flag})
    assert response.status_code == 200, response.content[:2000]
    return json.loads(response.content)


def test_the_requests_user_is_the_context(site, zkflags, people):
    users, groups = people
    member = users[0]
    member.groups.add(groups[0])
    zkflags.write("grp", groups=[groups[0].pk])
    zkflags.write("pct", percent=50)
    client = Client()
    client.force_login(member)
    answer = ask(client, site, "grp")  # the user's group ids, fetched for the rule
    assert answer == {"openfeature": True, "reason": "groups", "bucket": None, "native": True}
    answer = ask(client, site, "pct")
    assert answer["openfeature"] is answer["native"]
    assert answer["bucket"] == bucket("pct", member.pk)
    assert get_transaction_context().targeting_key is None  # taken away after the response


def test_an_anonymous_visitor_keeps_its_bucket_across_requests(site, zkflags):
    zkflags.write("pct", percent=50)
    client = Client()
    first = ask(client, site, "pct")  # its id minted by request.flags, set as a cookie
    cookie = client.cookies["zkflags_uid"].value
    assert first["bucket"] is not None and first["openfeature"] is first["native"]
    for _ in range(3):
        assert ask(client, site, "pct") == first
    assert client.cookies["zkflags_uid"].value == cookie


def test_async_views_get_the_context_without_sync_queries(site, zkflags, people):
    users, groups = people
    member = users[0]
    member.groups.add(groups[0])
    zkflags.write("grp", groups=[groups[0].pk])
    client = AsyncClient()
    client.force_login(member)

    async def get() -> Any:
        return await client.get("/of-async/", {"domain": site.domain, "flag": "grp"})

    try:
        response = async_to_sync(get)()
    except SynchronousOnlyOperation as exc:  # pragma: no cover - the failure it guards
        pytest.fail(f"a sync query in async code: {exc}")
    assert json.loads(response.content) == {"openfeature": True, "reason": "groups"}


def test_middleware_alone_with_one_group_query_and_the_context_for_a_user(
    openfeature, zkflags, people, rf
):
    users, groups = people
    member = users[0]
    member.groups.add(groups[0])
    zkflags.write("grp", groups=[groups[0].pk])
    zkflags.write("grp2", groups=[groups[0].pk], staff=True)
    client = openfeature.client

    def view(request: Any) -> HttpResponse:
        with CaptureQueriesContext(connection) as queries:
            answers = [client.get_boolean_value(name, False) for name in ("grp", "grp2", "grp")]
        view.result = (answers, len(queries))  # type: ignore[attr-defined]
        return HttpResponse()

    request = rf.get("/")
    request.user = type(member).objects.get(pk=member.pk)  # group ids not fetched yet
    OpenFeatureContextMiddleware(view)(request)
    assert view.result == ([True, True, True], 1)  # type: ignore[attr-defined]

    context = context_for(member)
    assert context.targeting_key == str(member.pk)
    assert context.attributes == {"authenticated": True, "is_staff": False, "is_superuser": False}
    assert client.get_boolean_value("grp", False, context) is False  # no request: no groups
    with_groups = EvaluationContext(
        context.targeting_key, {**context.attributes, "groups": [groups[0].pk]}
    )
    assert client.get_boolean_value("grp", False, with_groups) is True
