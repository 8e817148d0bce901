"""The check hot path (bench/hotpath.py measures it): what it precomputes and keeps must
not change a single answer.

* ``FlagRule.position`` (a hash state fed with the flag's part of the key, copied per
  check) gives :func:`~django_zkflags.rules.bucket`'s number;
* a Django model's pk is read through its primary key's attribute (``Model.pk`` does the
  same);
* ``FlagRule.constant`` (on or off for everyone, prerequisites included) answers without
  evaluating, exactly when the evaluation could not answer otherwise.

No ZooKeeper, no database: users are unsaved model instances or duck-typed objects.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.utils.functional import SimpleLazyObject
from hypothesis import given, settings
from hypothesis import strategies as st

from django_zkflags import flag_is_active, flag_is_active_for_user
from django_zkflags.evaluation import RequestFlags, evaluate
from django_zkflags.rules import (
    BUCKETS,
    FlagRule,
    _pk_attribute,
    bucket,
)
from django_zkflags.snapshot import Snapshot, compile_entries


class Person:
    """A duck-typed user that takes attributes."""

    def __init__(self, pk: Any) -> None:
        self.pk = pk
        self.is_authenticated = True
        self.is_staff = False
        self.is_superuser = False


class SlottedPerson:
    __slots__ = ("pk", "is_authenticated", "is_staff", "is_superuser")

    def __init__(self, pk: Any) -> None:
        self.pk = pk
        self.is_authenticated = True
        self.is_staff = False
        self.is_superuser = False


@dataclass(frozen=True)
class FrozenPerson:
    pk: Any
    is_authenticated: bool = True
    is_staff: bool = False
    is_superuser: bool = False


def expected(name: str, percent: float, identity: object) -> bool:
    threshold = round(percent * 100)
    return threshold >= BUCKETS or bucket(name, identity) < threshold


IDENTITIES = [1, 2, 42, 10000, 987654321, "42", "Yq3xZ0d1l9Wm2K7pR4tS8A", "é", "", 0, -1]


@pytest.mark.parametrize("name", ["new-checkout", "banner", "dark_mode.v2", "x"])
def test_position_is_the_bucket(name):
    rule = FlagRule(name, percent=10)
    for identity in IDENTITIES + [uuid.UUID(int=7), 1.5]:
        assert rule.position(identity) == bucket(name, identity), identity


def test_a_pk_set_again_on_the_same_user_object_is_bucketed_by_the_new_pk():
    rule = FlagRule("f", percent=50)
    ins = [pk for pk in range(1, 200) if expected("f", 50, pk)]
    outs = [pk for pk in range(1, 200) if not expected("f", 50, pk)]
    person = Person(ins[0])
    assert rule.is_active(person) is True
    person.pk = outs[0]
    assert rule.is_active(person) is False
    person.pk = ins[1]
    assert rule.is_active(person) is True
    person.pk = None  # no identity: outside any partial percentage
    assert rule.is_active(person) is False
    # A bucket depends on the name and the pk alone: any percentage decides by its own
    # threshold.
    person.pk = 7
    for percent in (0.01, 10, 33.3, 50, 99.99, 100):
        assert FlagRule("f", percent=percent).is_active(person) is expected("f", percent, 7)


@pytest.mark.parametrize("cls", [Person, SlottedPerson, FrozenPerson])
@pytest.mark.parametrize("pk", [uuid.UUID(int=3), 2.0, True, 10**30, "u-1"])
def test_any_user_object_and_pk_get_the_bucket(cls, pk):
    for percent in (10, 50, 90):
        person = cls(pk)
        assert FlagRule("f", percent=percent).is_active(person) is expected("f", percent, pk)


def test_a_django_user_is_read_by_its_primary_key_attribute(publish):
    assert _pk_attribute(User) == "id"
    for cls in (Person, SlottedPerson, AnonymousUser, SimpleLazyObject):
        assert _pk_attribute(cls) == "pk"

    class OwnPk:
        is_authenticated = True
        is_staff = is_superuser = False

        @property
        def pk(self) -> int:
            return 11

    assert _pk_attribute(OwnPk) == "pk"
    publish(FlagRule("f", percent=50), FlagRule("listed", users=[11, 12]))
    for pk in range(1, 80):
        user = User(pk=pk, username=f"u{pk}")
        assert flag_is_active_for_user(user, "f") is expected("f", 50, pk)
        assert flag_is_active_for_user(user, "f") is expected("f", 50, pk)
        assert flag_is_active_for_user(user, "listed") is (pk in (11, 12))
    assert flag_is_active_for_user(OwnPk(), "listed") is True
    user = User(pk=12, username="u")
    lazy = SimpleLazyObject(lambda: user)
    assert flag_is_active_for_user(lazy, "f") is expected("f", 50, 12)
    assert flag_is_active_for_user(lazy, "f") is expected("f", 50, 12)


def test_anonymous_visitors_are_bucketed_by_their_id(publish, rf):
    publish(FlagRule("f", percent=50))
    visitors = [f"visitor-{i}" for i in range(200)]
    for visitor in visitors:
        request = rf.get("/")
        request.user = AnonymousUser()
        request.flags = RequestFlags(request)
        request.flags.anonymous_id = visitor
        assert flag_is_active(request, "f") is expected("f", 50, visitor)
    request = rf.get("/")
    request.user = AnonymousUser()
    flags = RequestFlags(request)  # no cookie: a new id, minted once
    answer = flags.is_active("f")
    assert flags.new_anonymous_id and answer is expected("f", 50, flags.anonymous_id)


# -- constant: on or off for everyone --------------------------------------------------------


def test_constant_is_everyone_for_a_plain_rule():
    assert FlagRule("f", everyone=True).constant is True
    assert FlagRule("f", everyone=False, percent=50).constant is False
    assert FlagRule("f", percent=100).constant is None
    assert FlagRule("f").constant is None
    base = FlagRule("f", percent=10, environments={"prod": {"everyone": True}})
    assert base.constant is None and base.for_environment(("prod",)).constant is True


def linked(entries: dict[str, dict[str, Any]]) -> dict[str, FlagRule]:
    docs = {name: {"name": name, "version": 1, **doc} for name, doc in entries.items()}
    flags, _errors = compile_entries(docs)
    return flags


def test_constant_of_a_flag_with_prerequisites():
    flags = linked(
        {
            "on": {"everyone": True},
            "off": {"everyone": False},
            "pct": {"percent": 50},
            "on-on": {"everyone": True, "requires": ["on"]},
            "on-pct": {"everyone": True, "requires": ["pct"]},
            "on-off": {"everyone": True, "requires": ["off"]},
            "off-on": {"everyone": False, "requires": ["on"]},
            "pct-on": {"percent": 50, "requires": ["on"]},
            "on-on-on": {"everyone": True, "requires": ["on-on"]},
            "on-missing": {"everyone": True, "requires": ["nope"]},
        }
    )
    assert flags["on-on"].constant is True
    assert flags["on-on-on"].constant is True
    assert flags["off-on"].constant is False
    # Evaluated, as before: the prerequisites in order.
    for name in ("on-pct", "on-off", "pct-on", "on-missing"):
        assert flags[name].constant is None, name
    snapshot = Snapshot(flags)
    for name, rule in flags.items():
        for user in (None, AnonymousUser(), Person(1), Person(2), Person(3)):
            answer = evaluate(snapshot, name, user)
            if rule.constant is not None:
                assert answer is rule.constant
            assert answer is rule.is_active(user, None, lambda user: ()), (name, user)


# -- against the rules as documented: random rules, users and visitors -----------------------

ids = st.lists(st.integers(1, 4), max_size=3)
rules = st.fixed_dictionaries(
    {
        "everyone": st.sampled_from([None, None, None, True, False]),
        "percent": st.one_of(st.none(), st.sampled_from([0, 0.01, 50, 99.99, 100])),
        "superusers": st.booleans(),
        "staff": st.booleans(),
        "authenticated": st.sampled_from([False, False, True]),
        "users": ids,
        "groups": ids,
    }
)


def by_the_book(doc: dict[str, Any], user: Any, anonymous_id: str | None, groups: set[int]):
    """FlagRule.is_active as docs/percentages.md and the README state it."""
    if doc["everyone"] is not None:
        return doc["everyone"]
    authenticated = user is not None and user.is_authenticated
    identity = user.pk if authenticated else anonymous_id
    threshold = round(doc["percent"] * 100) if doc["percent"] else 0
    return bool(
        (authenticated and doc["authenticated"])
        or (authenticated and doc["superusers"] and user.is_superuser)
        or (authenticated and doc["staff"] and user.is_staff)
        or (authenticated and identity in doc["users"])
        or threshold >= BUCKETS
        or (threshold and identity is not None and bucket("f", identity) < threshold)
        or (authenticated and set(doc["groups"]) & groups)
    )


@settings(max_examples=400, deadline=None)
@given(
    docs=st.lists(rules, min_size=1, max_size=4),
    pks=st.lists(st.one_of(st.integers(1, 4), st.none()), min_size=1, max_size=4),
    staff=st.booleans(),
    superuser=st.booleans(),
    groups=st.sets(st.integers(1, 4), max_size=2),
    anonymous_id=st.one_of(st.none(), st.text("abc123", max_size=6)),
)
def test_the_same_user_object_through_changes(docs, pks, staff, superuser, groups, anonymous_id):
    """One user object checked again and again while its pk and the rules change (the
    buckets kept on it must follow), and an anonymous visitor, agree with the rules as
    documented."""
    person = Person(pks[0])
    person.is_staff, person.is_superuser = staff, superuser
    for pk in pks:
        person.pk = pk
        for doc in docs:
            rule = FlagRule.from_document({"name": "f", **doc})
            want = by_the_book(doc, person, None, groups)
            assert rule.is_active(person, None, lambda user: groups) is want
            assert rule.is_active(person, anonymous_id, lambda user: groups) is want
            anonymous = by_the_book(doc, None, anonymous_id, groups)
            assert rule.is_active(None, anonymous_id) is anonymous
            assert rule.is_active(AnonymousUser(), anonymous_id) is anonymous


def test_many_users_many_flags_against_the_bucket():
    rng = random.Random(13)
    rules_ = [FlagRule(f"flag-{i}", percent=rng.choice([1, 10, 50, 90])) for i in range(40)]
    people = [Person(rng.randrange(1, 10**6)) for _ in range(60)]
    for _ in range(3):
        for person in people:
            for rule in rules_:
                assert rule.is_active(person) is expected(rule.name, rule.percent, person.pk)


def test_remembered_buckets_never_mix_equal_keys_of_other_types():
    from django_zkflags import rules

    rules._POSITIONS.clear()
    rule = FlagRule("mix", percent=50)
    for identity in (1, True, 1.0, "1", 0, False, 0.0, "0"):
        person = Person(identity)
        assert rule.position(identity) == bucket("mix", identity)
        assert rule.is_active(person) is expected("mix", 50, identity), identity
        assert rule.is_active(person) is expected("mix", 50, identity), identity
    assert set(rules._POSITIONS) <= {("mix", 1), ("mix", "1"), ("mix", 0), ("mix", "0")}


def test_remembered_buckets_are_bounded(monkeypatch):
    from django_zkflags import rules

    monkeypatch.setattr(rules, "POSITIONS_KEPT", 100)
    rules._POSITIONS.clear()
    rule = FlagRule("bounded", percent=50)
    for pk in range(1, 1000):
        assert rule.is_active(Person(pk)) is expected("bounded", 50, pk)
        assert len(rules._POSITIONS) <= 100


def test_a_lazy_request_user_gets_the_answers_of_the_user_behind_it(publish, rf):
    publish(
        FlagRule("pct", percent=50),
        FlagRule("staff", staff=True),
        FlagRule("listed", users=[3]),
        FlagRule("bool", everyone=True),
    )
    loads = []
    for pk in range(1, 40):
        user = User(pk=pk, username=f"u{pk}", is_staff=pk % 3 == 0)

        def load(user: Any = user) -> Any:
            loads.append(user.pk)
            return user

        request = rf.get("/")
        request.user = SimpleLazyObject(load)
        assert flag_is_active(request, "bool") is True  # never loads the user
        assert loads == [] or loads[-1] != pk
        assert flag_is_active(request, "pct") is expected("pct", 50, pk)
        assert flag_is_active(request, "staff") is (pk % 3 == 0)
        assert flag_is_active(request, "listed") is (pk == 3)
        assert loads.count(pk) == 1  # loaded once, as a first attribute read would


def test_is_authenticated_is_read_as_a_constant_only_for_djangos_own_property():
    from django.contrib.auth.models import AnonymousUser

    from django_zkflags.rules import is_authenticated

    class Deactivated(User):
        class Meta:
            proxy = True
            app_label = "auth"

        @property
        def is_authenticated(self) -> bool:  # type: ignore[override]
            return False

    rule = FlagRule("f", authenticated=True)
    for _ in range(2):  # learnt on the first, constant or not, on the second
        assert is_authenticated(User(pk=1)) is True and rule.is_active(User(pk=1)) is True
        assert is_authenticated(AnonymousUser()) is False
        assert rule.is_active(AnonymousUser()) is False
        assert is_authenticated(None) is False and rule.is_active(None) is False
        assert is_authenticated(Deactivated(pk=2)) is False
        assert rule.is_active(Deactivated(pk=2)) is False
        assert is_authenticated(Person(3)) is True  # a plain attribute, read every time
