"""``django_zkflags.explain`` / ``aexplain`` (evaluation.explain_in, FlagRule.why): why a flag
is on or off, and that the answer always agrees with the checks.

The property test draws random rules (with prerequisites, cycles and missing ones among
them, and environment overrides), random users and random visitors (a user object, a
request with or without the middleware's RequestFlags, with or without an anonymous id),
and asserts ``explain(...).active`` equals ``flag_is_active(...)`` /
``flag_is_active_for_user(...)``. No ZooKeeper: snapshots are compiled here the way the
watcher compiles them and published into the store. Against ZooKeeper:
tests/integration/test_explain.py.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser, Group
from django.core import signing
from django.test import RequestFactory, override_settings
from django.utils.functional import SimpleLazyObject
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_zkflags import aexplain, explain, flag_is_active, flag_is_active_for_user
from django_zkflags.api import RequestFlags
from django_zkflags.cache import store
from django_zkflags.evaluation import ANONYMOUS_SALT, REASONS, Explanation
from django_zkflags.rules import BUCKETS, bucket
from django_zkflags.snapshot import EMPTY, Snapshot, compile_entries
from django_zkflags.testing import override_flag

COOKIE = "zkflags_uid"
NAMES = ("a", "b", "c", "d")
ENVIRONMENTS = ("production", "canary")


class Person:
    """A duck-typed user, its group ids known (no database)."""

    def __init__(self, pk: int, *, staff: bool = False, superuser: bool = False, groups=()):
        self.pk = pk
        self.is_authenticated = True
        self.is_staff = staff
        self.is_superuser = superuser
        self._zkflags_group_ids = frozenset(groups)

    def __repr__(self) -> str:
        return f"Person({self.pk}, staff={self.is_staff}, superuser={self.is_superuser}, groups={set(self._zkflags_group_ids)})"


def signed(value: str) -> str:
    return signing.get_cookie_signer(salt=COOKIE + ANONYMOUS_SALT).sign(value)


def serve(entries: dict[str, Any], chain: tuple[str, ...] = (), default: bool = False) -> Snapshot:
    """Compile ``entries`` as the watcher does and serve them."""
    flags, _errors = compile_entries(entries, chain=chain)
    snapshot = Snapshot(flags, source="test", environment=chain[-1] if chain else None, chain=chain)
    store.publish(snapshot)
    store.set_default_active(default)
    return snapshot


@pytest.fixture(autouse=True)
def empty_store():
    yield
    store.set_default_active(False)
    store.publish(EMPTY)


# -- the property: explain agrees with the checks ------------------------------------------

ids = st.lists(st.integers(1, 3), max_size=3)
percent = st.one_of(st.none(), st.sampled_from([0, 0.01, 10, 50, 99.99, 100]), st.floats(0, 100))
own_rules = st.fixed_dictionaries(
    {},
    optional={
        "everyone": st.one_of(st.none(), st.booleans()),
        "percent": percent,
        "superusers": st.booleans(),
        "staff": st.booleans(),
        "authenticated": st.booleans(),
        "users": ids,
        "groups": ids,
    },
)


@st.composite
def documents(draw: Any) -> dict[str, Any]:
    """Flags a..d (some left out), each maybe requiring others (cycles and missing ones
    included) and overridden per environment."""
    entries = {}
    for version, name in enumerate(NAMES):
        if draw(st.integers(0, 5)) == 0:
            continue
        doc = {"name": name, "version": version, **draw(own_rules)}
        requires = draw(st.lists(st.sampled_from(NAMES + ("zz",)), unique=True, max_size=2))
        requires = [other for other in requires if other != name]
        if requires:
            doc["requires"] = requires
        environments = {}
        for env in ENVIRONMENTS:
            override = draw(own_rules)
            if override:
                environments[env] = override
        if environments:
            doc["environments"] = environments
        entries[name] = doc
    return entries


persons = st.builds(
    Person, st.integers(1, 3), staff=st.booleans(), superuser=st.booleans(), groups=ids
)
people = st.one_of(st.sampled_from([None, AnonymousUser()]), persons, persons)
visitor_ids = st.one_of(st.none(), st.text("abcdef0123456789", min_size=1, max_size=8))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=documents(),
    chain=st.sampled_from([(), ("production",), ("production", "canary"), ("canary",)]),
    default=st.booleans(),
    user=people,
    visitor=visitor_ids,
    how=st.sampled_from(["user", "request", "request-flags", "request-flags-known"]),
    name=st.sampled_from(NAMES + ("missing",)),
)
def test_explain_agrees_with_the_checks(entries, chain, default, user, visitor, how, name):
    snapshot = serve(entries, chain, default)
    if how == "user":
        explained = explain(user, name)
        answer = flag_is_active_for_user(user, name)
    else:
        request = RequestFactory().get("/")
        request.user = user
        if visitor is not None and how != "request-flags-known":
            request.COOKIES[COOKIE] = signed(visitor)
        if how.startswith("request-flags"):
            request.flags = RequestFlags(request)
            request.flags.anonymous_id = visitor if how == "request-flags-known" else None
        explained = explain(request, name)
        answer = flag_is_active(request, name)
    assert explained.active is answer, explained

    assert explained.reason in REASONS
    assert explained.name == name
    if explained.reason in ("superusers", "staff", "authenticated", "users", "groups"):
        assert explained.active
    if explained.reason == "no-match":
        assert not explained.active
    if explained.reason in ("percent", "prerequisite") and explained.bucket is not None:
        assert explained.threshold is not None
        assert (explained.bucket < explained.threshold) is (
            explained.reason == "percent" and explained.active
        )
    if explained.reason == "percent" and explained.bucket is None:
        assert explained.active and explained.threshold == BUCKETS
    if explained.environment is not None:
        assert explained.environment in chain
    if explained.reason == "prerequisite":
        assert not explained.active and explained.prerequisite is not None
    if explained.reason == "missing":
        assert name not in snapshot.flags and explained.active is default


one_flag = st.fixed_dictionaries(
    {
        "everyone": st.sampled_from([None, None, None, True, False]),
        "percent": percent,
        "superusers": st.booleans(),
        "staff": st.booleans(),
        "authenticated": st.sampled_from([False, False, False, True]),
        "users": ids,
        "groups": ids,
    }
)


@settings(max_examples=300, deadline=None)
@given(rule=one_flag, user=people, visitor=visitor_ids)
def test_explain_agrees_on_one_flag_rule_by_rule(rule, user, visitor):
    """The same property on one flag with every field drawn (the reasons of its own rules,
    each reached often), for a user object and for a request with a visitor's cookie."""
    serve({"f": {"name": "f", "version": 7, **rule}})
    explained = explain(user, "f")
    assert explained.active is flag_is_active_for_user(user, "f"), explained
    request = RequestFactory().get("/")
    request.user = user
    if visitor is not None:
        request.COOKIES[COOKIE] = signed(visitor)
    explained = explain(request, "f")
    assert explained.active is flag_is_active(request, "f"), explained
    if explained.bucket is not None:
        identity = user.pk if isinstance(user, Person) else visitor
        assert explained.bucket == bucket("f", identity)


# -- each reason -----------------------------------------------------------------------------


def test_the_explanation_is_frozen():
    explained = explain(None, "nothing")
    assert isinstance(explained, Explanation)
    with pytest.raises(FrozenInstanceError):
        explained.active = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("rule", "user", "reason", "active"),
    [
        ({"everyone": True}, None, "everyone", True),
        ({"everyone": False, "staff": True}, Person(1, staff=True), "everyone", False),
        ({"superusers": True}, Person(1, superuser=True), "superusers", True),
        ({"staff": True}, Person(1, staff=True), "staff", True),
        ({"authenticated": True}, Person(1), "authenticated", True),
        ({"users": [1]}, Person(1), "users", True),
        ({"groups": [3]}, Person(1, groups=[3]), "groups", True),
        ({"groups": [3], "staff": True}, Person(1, groups=[4]), "no-match", False),
        ({"staff": True}, AnonymousUser(), "no-match", False),
        ({"percent": 100}, None, "percent", True),
        ({"percent": 50}, None, "no-match", False),  # an anonymous visitor without an id
    ],
)
def test_each_rule_says_what_matched(rule, user, reason, active):
    serve({"f": {"name": "f", "version": 4, **rule}})
    explained = explain(user, "f")
    assert (explained.reason, explained.active) == (reason, active)
    assert explained.version == 4 and explained.environment is None
    assert explained.detail


def test_a_percentage_gives_the_bucket_and_the_threshold():
    serve({"f": {"name": "f", "version": 1, "percent": 25}})
    inside = next(pk for pk in range(1, 1000) if bucket("f", pk) < 2500)
    outside = next(pk for pk in range(1, 1000) if bucket("f", pk) >= 2500)
    on = explain(Person(inside), "f")
    assert (on.active, on.reason, on.bucket, on.threshold) == (
        True,
        "percent",
        bucket("f", inside),
        2500,
    )
    assert f"bucket {on.bucket} is under 2500" in on.detail
    off = explain(Person(outside), "f")
    assert (off.active, off.reason, off.bucket, off.threshold) == (
        False,
        "percent",
        bucket("f", outside),
        2500,
    )
    assert "not in the 25%" in off.detail


def test_an_anonymous_visitor_is_bucketed_by_its_cookie_or_the_id_given(rf):
    serve({"f": {"name": "f", "version": 1, "percent": 50}})
    request = rf.get("/")
    request.user = AnonymousUser()
    request.COOKIES[COOKIE] = signed("visitor-1")
    explained = explain(request, "f")
    assert explained.bucket == bucket("f", "visitor-1")
    assert explain(None, "f", anonymous_id="visitor-2").bucket == bucket("f", "visitor-2")
    # An id given is for anonymous visitors only: a user is bucketed by its pk.
    assert explain(Person(5), "f", anonymous_id="visitor-2").bucket == bucket("f", 5)


def test_with_the_middleware_it_identifies_the_visitor_only_where_the_check_would(rf):
    serve(
        {
            "bool": {"name": "bool", "version": 1, "everyone": True},
            "pct": {"name": "pct", "version": 2, "percent": 50},
        }
    )
    request = rf.get("/")
    request.user = AnonymousUser()
    request.flags = RequestFlags(request)
    assert explain(request, "bool").reason == "everyone"
    assert request.flags.anonymous_id is None  # no cookie minted for a boolean flag
    explained = explain(request, "pct")
    minted = request.flags.anonymous_id
    assert minted is not None and request.flags.new_anonymous_id
    assert explained.bucket == bucket("pct", minted)
    assert flag_is_active(request, "pct") is explained.active


def test_the_environment_whose_override_decided():
    entries = {
        "f": {
            "name": "f",
            "version": 1,
            "staff": True,
            "environments": {"production": {"percent": 100}, "canary": {"users": [9]}},
        }
    }
    serve(entries, ("production", "canary"))
    assert explain(Person(9), "f").environment == "canary"  # users: canary's override
    assert explain(Person(1, staff=True), "f").environment is None  # staff: the flag's own
    percent = explain(Person(2), "f")
    assert (percent.reason, percent.environment) == ("percent", "production")  # inherited
    assert "set for environment 'production'" in percent.detail
    serve(entries, ("staging",))
    assert explain(Person(2), "f").reason == "no-match"


def test_the_prerequisite_that_was_off_is_the_root_cause():
    serve(
        {
            "d": {"name": "d", "version": 1, "everyone": True, "requires": ["p"]},
            "p": {"name": "p", "version": 2, "everyone": True, "requires": ["q"]},
            "q": {"name": "q", "version": 3, "staff": True},
        }
    )
    off = explain(Person(1), "d")
    assert (off.active, off.reason, off.prerequisite, off.version) == (
        False,
        "prerequisite",
        "q",
        1,
    )
    assert "requires 'q', which is off for this user: no rule matches" == off.detail
    on = explain(Person(1, staff=True), "d")
    assert (on.active, on.reason, on.prerequisite) == (True, "everyone", None)


def test_a_missing_or_cyclic_prerequisite_is_named():
    serve(
        {
            "m": {"name": "m", "version": 1, "everyone": True, "requires": ["gone"]},
            "x": {"name": "x", "version": 2, "everyone": True, "requires": ["y"]},
            "y": {"name": "y", "version": 3, "everyone": True, "requires": ["x"]},
        }
    )
    missing = explain(None, "m")
    assert (missing.reason, missing.prerequisite, missing.detail) == (
        "prerequisite",
        "gone",
        "requires 'gone': no such flag",
    )
    assert explain(None, "x").detail == "requires 'y': in a cycle of prerequisites"


def test_override_flag_and_a_flag_that_requires_it():
    serve(
        {
            "base": {"name": "base", "version": 1, "everyone": True},
            "top": {"name": "top", "version": 2, "everyone": True, "requires": ["base"]},
        }
    )
    with override_flag("base", active=False):
        assert explain(None, "base").reason == "override"
        assert explain(None, "base").active is False
        top = explain(None, "top")
        assert (top.reason, top.prerequisite) == ("prerequisite", "base")
        assert "forced off by override_flag" in top.detail
    with override_flag("nowhere"):
        assert (explain(None, "nowhere").reason, explain(None, "nowhere").active) == (
            "override",
            True,
        )
    assert explain(None, "base").reason == "everyone"


def test_query_string_overrides(rf, settings):
    serve({"f": {"name": "f", "version": 1, "everyone": False}})
    with override_settings(DEBUG=True, ZKFLAGS={**settings.ZKFLAGS, "TESTING_OVERRIDES": True}):
        request = rf.get("/", {"zkflags": "f:on"})
        request.user = AnonymousUser()
        request.flags = RequestFlags(request)
        explained = explain(request, "f")
        assert (explained.active, explained.reason) == (True, "override")
        assert "?zkflags=" in explained.detail
        assert flag_is_active(request, "f") is True


def test_missing_and_declared_flags(settings):
    serve({})
    assert (explain(None, "nope").reason, explain(None, "nope").active) == ("missing", False)
    with override_settings(ZKFLAGS={**settings.ZKFLAGS, "UNKNOWN_FLAG_ACTIVE": True}):
        assert explain(None, "nope").active is True
    with override_settings(ZKFLAGS={**settings.ZKFLAGS, "FLAGS": {"declared-on": True}}):
        declared = explain(None, "declared-on")
        assert (declared.active, declared.reason, declared.declared) == (True, "missing", True)
        assert "declared in ZKFLAGS['FLAGS']" in declared.detail
        assert flag_is_active_for_user(None, "declared-on") is True
        # Once ZooKeeper holds it, its rules decide.
        serve({"declared-on": {"name": "declared-on", "version": 0, "everyone": False}})
        assert explain(None, "declared-on").reason == "everyone"
        assert explain(None, "declared-on").declared is False


# -- async -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_aexplain_fetches_group_ids_with_the_async_orm(django_user_model):
    member = django_user_model.objects.create_user("member")
    beta = Group.objects.create(name="beta")
    member.groups.add(beta)
    serve(
        {
            "grp": {"name": "grp", "version": 1, "groups": [beta.pk]},
            "top": {"name": "top", "version": 2, "everyone": True, "requires": ["grp"]},
        }
    )
    fresh = django_user_model.objects.get(pk=member.pk)  # its group ids not fetched yet

    async def check() -> tuple[Explanation, Explanation, Explanation]:
        lazy = SimpleLazyObject(lambda: django_user_model.objects.get(pk=member.pk))
        return (
            await aexplain(fresh, "grp"),
            await aexplain(fresh, "top"),
            await aexplain(lazy, "grp"),
        )

    grp, top, lazy = async_to_sync(check)()  # a sync query in there would raise
    assert (grp.active, grp.reason) == (True, "groups")
    assert (top.active, top.reason) == (True, "everyone")
    assert (lazy.active, lazy.reason) == (True, "groups")


def test_aexplain_on_a_request_keeps_the_user_for_later_checks(rf):
    serve({"f": {"name": "f", "version": 1, "users": [3]}})
    person = Person(3)
    request = rf.get("/")
    request.user = SimpleLazyObject(lambda: person)

    async def auser() -> Any:
        return person

    request.auser = auser
    request.flags = RequestFlags(request)
    explained = async_to_sync(aexplain)(request, "f")
    assert (explained.active, explained.reason) == (True, "users")
    assert request.flags.user is person
