"""Async views (django_zkflags/api.py's ``a*`` functions, decorators.py on ``async def``
views and async class-based views, middleware.py on an async stack) through Django's
AsyncClient, with flags written to a real ZooKeeper.

The views are tests/testapp/async_views.py. A synchronous query in async code raises
``SynchronousOnlyOperation``, which the AsyncClient re-raises here: every request below
answering is the proof that none was made. The same views under a real ASGI server
process: tests/system/test_asgi.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.core.exceptions import SynchronousOnlyOperation
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext

from django_zkflags import aflag_is_active, aflag_is_active_for_user, flag_is_active_for_user
from django_zkflags.evaluation import ANONYMOUS_SALT
from django_zkflags.middleware import FlagMiddleware
from django_zkflags.rules import bucket

COOKIE = "zkflags_uid"

pytestmark = pytest.mark.django_db


def run(coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``coroutine()`` in an event loop, its thread-sensitive ORM calls on this thread
    (so on the test's database connection), as Django runs an async test method."""
    return async_to_sync(coroutine)()


def get(client: AsyncClient, path: str, **params: str) -> Any:
    async def request() -> Any:
        return await client.get(path, params)

    return run(request)


def flags_of(response: Any) -> dict[str, bool]:
    assert response.status_code == 200, response.content[:2000]
    return json.loads(response.content)["flags"]


def split_by(name_prefix: str, inside: Any, outside: Any) -> str:
    """A flag name whose 50 % puts ``inside`` in its bucket range and ``outside`` out."""
    return next(
        name
        for name in (f"{name_prefix}-{i}" for i in range(1000))
        if bucket(name, inside.pk) < 5000 <= bucket(name, outside.pk)
    )


def group_queries(queries: CaptureQueriesContext) -> int:
    return sum('"auth_user_groups"' in query["sql"] for query in queries.captured_queries)


@pytest.fixture
def world(zkflags: Any, people: Any) -> dict[str, Any]:
    """person0 in group0 (the rules' group), person1 in no group; flags in ZooKeeper."""
    users, groups = people
    users[0].groups.add(groups[0])
    pct = split_by("pct", users[0], users[1])
    zkflags.write("grp", groups=[groups[0].pk])
    zkflags.write("grp2", groups=[groups[0].pk], users=[users[2].pk])
    zkflags.write(pct, percent=50)
    zkflags.write("anon", percent=50)
    zkflags.write("bool", everyone=True)
    return {"users": users, "groups": groups, "pct": pct, "zkflags": zkflags}


def client_for(user: Any = None) -> AsyncClient:
    client = AsyncClient()
    if user is not None:
        client.force_login(user)
    return client


# -- await aflag_is_active(...) ---------------------------------------------------------------


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "no-middleware"])
def test_aflag_is_active_group_percent_boolean(world, settings, middleware):
    if not middleware:
        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "FlagMiddleware" not in m]
    person0, person1, _ = world["users"]
    pct = world["pct"]
    names = f"grp,grp2,{pct},bool,missing"
    with CaptureQueriesContext(connection) as queries:
        answers = flags_of(get(client_for(person0), "/async/checks/", names=names))
    assert answers == {"grp": True, "grp2": True, pct: True, "bool": True, "missing": False}
    assert group_queries(queries) == 1  # two group flags, one query: kept on the user
    with CaptureQueriesContext(connection) as queries:
        answers = flags_of(get(client_for(person1), "/async/checks/", names=names))
    assert answers == {"grp": False, "grp2": False, pct: False, "bool": True, "missing": False}
    assert group_queries(queries) == 1


def test_no_group_query_without_a_group_rule(world):
    with CaptureQueriesContext(connection) as queries:
        flags_of(get(client_for(world["users"][0]), "/async/checks/", names=f"{world['pct']},bool"))
    assert group_queries(queries) == 0


def test_a_flag_change_in_zookeeper_is_seen_by_the_next_async_request(world):
    person1 = world["users"][1]
    client = client_for(person1)
    assert flags_of(get(client, "/async/checks/", names="grp"))["grp"] is False
    world["zkflags"].write("grp", users=[person1.pk])
    assert flags_of(get(client, "/async/checks/", names="grp"))["grp"] is True


def test_sync_check_after_await_request_auser(world):
    """The failure of issue 11: the request's flags had captured the lazy request.user."""
    person0, person1, _ = world["users"]
    pct = world["pct"]
    assert flags_of(get(client_for(person0), "/async/sync-after-auser/", names=pct)) == {pct: True}
    assert flags_of(get(client_for(person1), "/async/sync-after-auser/", names=pct)) == {pct: False}


def test_aflag_is_active_for_user_group_rules(world):
    person0, person1, _ = world["users"]
    assert flags_of(get(client_for(person0), "/async/for-user/", names="grp,grp2")) == {
        "grp": True,
        "grp2": True,
    }
    assert flags_of(get(client_for(person1), "/async/for-user/", names="grp,grp2")) == {
        "grp": False,
        "grp2": False,
    }


def test_template_after_an_await_answers_without_a_sync_query(world):
    """A template rendered in an async view: the awaited flag is memoised, and a second
    group flag answers from the group ids the first await fetched."""
    person0, person1, _ = world["users"]
    on = get(client_for(person0), "/async/template/", first="grp", second="grp2")
    assert on.status_code == 200 and on.content == b"on on"
    off = get(client_for(person1), "/async/template/", first="grp", second="grp2")
    assert off.status_code == 200 and off.content == b"off off"


def test_anonymous_visitor_gets_a_stable_bucket_and_its_cookie(world):
    client = client_for()
    first = get(client, "/async/checks/", names="anon,grp")
    morsel = first.cookies[COOKIE]
    anonymous_id = cookie_id(morsel.value)  # raises if it is not signed by us
    assert morsel["httponly"] and morsel["samesite"] == "Lax"
    expected = bucket("anon", anonymous_id) < 5000
    assert flags_of(first) == {"anon": expected, "grp": False}
    for _ in range(3):
        again = get(client, "/async/checks/", names="anon")
        assert COOKIE not in again.cookies  # read back, not minted again
        assert flags_of(again) == {"anon": expected}


def test_anonymous_without_the_middleware_reads_the_cookie(world, settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "FlagMiddleware" not in m]
    inside = next(f"id-{i}" for i in range(1000) if bucket("anon", f"id-{i}") < 5000)
    client = client_for()
    assert flags_of(get(client, "/async/checks/", names="anon")) == {"anon": False}
    client.cookies[COOKIE] = signed(inside)
    assert flags_of(get(client, "/async/checks/", names="anon")) == {"anon": True}


def cookie_id(value: str) -> str:
    """The anonymous id inside a signed cookie value (raises if the signature is bad)."""
    request = HttpRequest()
    request.COOKIES[COOKIE] = value
    return request.get_signed_cookie(COOKIE, salt=ANONYMOUS_SALT)


def signed(anonymous_id: str) -> str:
    """A cookie value signed the way the middleware signs it."""
    response = HttpResponse()
    response.set_signed_cookie(COOKIE, anonymous_id, salt=ANONYMOUS_SALT)
    return response.cookies[COOKIE].value


def test_aget_value(world):
    world["zkflags"].write("limits", everyone=True, value={"rate": 5, "tiers": ["a", "b"]})
    response = get(client_for(), "/async/value/limits/")
    assert json.loads(response.content) == {"value": {"rate": 5, "tiers": ["a", "b"]}}
    response = get(client_for(), "/async/value/missing/")
    assert json.loads(response.content) == {"value": "unset"}


def test_the_api_in_an_event_loop(world, rf):
    """Straight calls in a coroutine: the request's lazy user, group ids and all."""
    from django.contrib.auth.models import User
    from django.utils.functional import SimpleLazyObject

    person0 = world["users"][0]

    async def go() -> tuple[bool, ...]:
        user = await User.objects.aget(pk=person0.pk)
        request = rf.get("/")
        request.user = SimpleLazyObject(lambda: User.objects.get(pk=person0.pk))
        fresh = rf.get("/")
        fresh.user = SimpleLazyObject(lambda: User.objects.get(pk=person0.pk))
        return (
            await aflag_is_active_for_user(user, "grp"),
            await aflag_is_active_for_user(request.user, "grp2"),  # lazy: loaded in a thread
            await aflag_is_active(fresh, "grp"),  # no auser (Django 4.2's request)
            await aflag_is_active_for_user(None, "grp"),
        )

    assert run(go) == (True, True, True, False)


def test_sync_group_check_in_async_code_says_what_to_use(world):
    from django.contrib.auth.models import User

    person0 = world["users"][0]

    async def go() -> None:
        user = await User.objects.aget(pk=person0.pk)
        flag_is_active_for_user(user, "grp")

    with pytest.raises(SynchronousOnlyOperation, match="aflag_is_active"):
        run(go)


# -- @flag_required and FlagRequiredMixin on async views ----------------------------------------


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/async/guarded/", b"async guarded content"),
        ("/async/guarded-cbv/", b"async guarded cbv content"),
    ],
)
def test_guards_on_async_views(world, path, content):
    zkflags = world["zkflags"]
    person0, person1, _ = world["users"]
    assert get(client_for(), path).status_code == 404  # unknown flag: off
    zkflags.write("guarded", everyone=True)
    response = get(client_for(), path)
    assert (response.status_code, response.content) == (200, content)
    zkflags.write("guarded", everyone=None, groups=[world["groups"][0].pk])
    assert get(client_for(person1), path).status_code == 404
    response = get(client_for(person0), path)
    assert (response.status_code, response.content) == (200, content)
    zkflags.write("guarded", everyone=False, groups=[])
    assert get(client_for(person0), path).status_code == 404


@pytest.mark.parametrize("path", ["/async/guarded-redirect/", "/async/guarded-cbv-redirect/"])
def test_guards_on_async_views_redirect_when_off(world, path):
    zkflags = world["zkflags"]
    zkflags.write("guarded", everyone=False)
    response = get(client_for(), path)
    assert (response.status_code, response["Location"]) == (302, "/async/off/")
    zkflags.write("guarded", everyone=True)
    response = get(client_for(), path)
    assert response.status_code == 200 and response.content.startswith(b"async guarded")


def test_decorated_async_view_stays_a_coroutine_function():
    from tests.testapp import async_views, views

    assert iscoroutinefunction(async_views.guarded)
    assert iscoroutinefunction(async_views.GuardedView.as_view())
    assert not iscoroutinefunction(views.guarded)


# -- FlagMiddleware on an async stack -----------------------------------------------------------


def test_middleware_runs_as_a_coroutine_with_no_thread_hop(settings, caplog):
    settings.DEBUG = True  # Django logs every adaptation (a sync_to_async hop) at DEBUG
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()  # loads the middleware for an async stack
    adapted = [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]
    assert not [message for message in adapted if "FlagMiddleware" in message], adapted

    async def view(request: Any) -> Any:
        return None

    assert iscoroutinefunction(FlagMiddleware(view))
    assert not iscoroutinefunction(FlagMiddleware(lambda request: None))


def test_a_prerequisite_with_group_rules(world):
    """A flag on for everyone that requires a group flag: the group ids are fetched for the
    prerequisite's rules too."""
    person0, person1, _ = world["users"]
    world["zkflags"].write("gated", everyone=True, requires=["grp"])
    assert flags_of(get(client_for(person0), "/async/checks/", names="gated")) == {"gated": True}
    assert flags_of(get(client_for(person1), "/async/checks/", names="gated")) == {"gated": False}
    assert flags_of(get(client_for(person0), "/async/for-user/", names="gated")) == {"gated": True}
    assert get(client_for(person0), "/async/template/", first="gated", second="grp").content == (
        b"on on"
    )
