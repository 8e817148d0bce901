"""FlagRule (django_zkflags/rules.py): validation of names, percents and documents, the
order of evaluation, and percentage rollouts (shares, stability, monotonicity,
independence, the algorithm; see docs/percentages.md).

Pure: no ZooKeeper, no database. Users are duck-typed objects.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import string
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_zkflags import rules
from django_zkflags.rules import (
    BUCKETS,
    NAME_MAX_LENGTH,
    FlagRule,
    InvalidFlag,
    bucket,
    validate_name,
    validate_percent,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME_ALPHABET = frozenset(string.ascii_letters + string.digits + "_.-")


@dataclass(frozen=True)
class User:
    pk: int | None = 1
    is_authenticated: bool = True
    is_staff: bool = False
    is_superuser: bool = False


ANONYMOUS = User(pk=None, is_authenticated=False)


class GroupIds:
    """A ``group_ids`` callable that records every call."""

    def __init__(self, ids=()):
        self.ids = frozenset(ids)
        self.calls = []

    def __call__(self, user):
        self.calls.append(user)
        return self.ids


def rule(**kwargs) -> FlagRule:
    return FlagRule.from_document({"name": "f", **kwargs})


# -- everyone decides alone ------------------------------------------------------------------


ALL_RULES = {
    "superusers": True,
    "staff": True,
    "authenticated": True,
    "users": [1, 2, 3],
    "groups": [7],
    "percent": 100,
}


@pytest.mark.parametrize(
    "user",
    [None, ANONYMOUS, User(), User(is_superuser=True, is_staff=True)],
    ids=["none", "anonymous", "user", "superuser"],
)
def test_everyone_false_wins_over_every_other_rule(user):
    groups = GroupIds({7})
    assert rule(everyone=False, **ALL_RULES).is_active(user, "anon-1", groups) is False
    assert groups.calls == []


@pytest.mark.parametrize("user", [None, ANONYMOUS, User()], ids=["none", "anonymous", "user"])
def test_everyone_true_wins_without_any_other_rule(user):
    groups = GroupIds()
    assert rule(everyone=True).is_active(user, None, groups) is True
    assert rule(everyone=True, percent=0).is_active(user, None, groups) is True
    assert groups.calls == []


def test_no_rule_means_off():
    r = rule()
    assert r.everyone is None
    for user in (None, ANONYMOUS, User(), User(is_superuser=True, is_staff=True)):
        assert r.is_active(user, "anon-1", GroupIds({1})) is False


# -- each rule on its own --------------------------------------------------------------------


def test_superusers_rule():
    r = rule(superusers=True)
    assert r.is_active(User(is_superuser=True)) is True
    assert r.is_active(User(is_staff=True)) is False
    assert r.is_active(User()) is False
    assert r.is_active(ANONYMOUS) is False
    # An anonymous user that claims superuser powers is still anonymous.
    assert r.is_active(User(pk=None, is_authenticated=False, is_superuser=True)) is False


def test_staff_rule():
    r = rule(staff=True)
    assert r.is_active(User(is_staff=True)) is True
    assert r.is_active(User(is_superuser=True)) is False
    assert r.is_active(User()) is False
    assert r.is_active(User(pk=None, is_authenticated=False, is_staff=True)) is False


def test_authenticated_rule():
    r = rule(authenticated=True)
    assert r.is_active(User(pk=123)) is True
    assert r.is_active(ANONYMOUS, "anon-1") is False
    assert r.is_active(None, "anon-1") is False


def test_listed_users_rule():
    r = rule(users=[5, 9])
    assert r.is_active(User(pk=5)) is True
    assert r.is_active(User(pk=9)) is True
    assert r.is_active(User(pk=6)) is False
    # The anonymous id is not a user id, even when it looks like one.
    assert r.is_active(ANONYMOUS, "5") is False
    assert r.is_active(ANONYMOUS, 5) is False


def test_group_rule_matches_through_the_callable():
    r = rule(groups=[3, 4])
    member = GroupIds({1, 4})
    user = User(pk=10)
    assert r.is_active(user, None, member) is True
    assert member.calls == [user]
    outsider = GroupIds({1, 2})
    assert r.is_active(user, None, outsider) is False
    assert outsider.calls == [user]
    # No callable: group rules cannot match (and nothing breaks).
    assert r.is_active(user, None, None) is False


def test_group_callable_not_called_without_group_rules():
    groups = GroupIds({1})
    for r in (rule(), rule(staff=True), rule(users=[2]), rule(percent=50), rule(everyone=None)):
        for user in (User(pk=1), User(pk=2, is_staff=True)):
            r.is_active(user, None, groups)
    assert groups.calls == []


@pytest.mark.parametrize(
    ("doc", "user"),
    [
        ({"superusers": True}, User(is_superuser=True)),
        ({"staff": True}, User(is_staff=True)),
        ({"authenticated": True}, User()),
        ({"users": [42]}, User(pk=42)),
        ({"percent": 100}, User(pk=42)),
    ],
    ids=["superusers", "staff", "authenticated", "users", "percent100"],
)
def test_group_callable_not_called_when_another_rule_matched(doc, user):
    groups = GroupIds({7})
    assert rule(groups=[7], **doc).is_active(user, None, groups) is True
    assert groups.calls == []


def test_group_callable_not_called_when_the_user_is_inside_the_percentage():
    r = rule(groups=[7], percent=50)
    inside = next(pk for pk in range(1, 1000) if rule(percent=50).is_active(User(pk=pk)))
    outside = next(pk for pk in range(1, 1000) if not rule(percent=50).is_active(User(pk=pk)))
    groups = GroupIds({7})
    assert r.is_active(User(pk=inside), None, groups) is True
    assert groups.calls == []
    # Outside the percentage, the group rule is asked, and matches.
    assert r.is_active(User(pk=outside), None, groups) is True
    assert len(groups.calls) == 1


@pytest.mark.parametrize("user", [None, ANONYMOUS], ids=["none", "anonymous"])
def test_group_callable_not_called_for_anonymous_visitors(user):
    groups = GroupIds({7})
    assert rule(groups=[7]).is_active(user, "anon-1", groups) is False
    assert rule(groups=[7], percent=10).is_active(user, "anon-1", groups) in (True, False)
    assert groups.calls == []


def test_any_matching_rule_turns_the_flag_on():
    r = rule(staff=True, users=[3], groups=[9])
    assert r.is_active(User(pk=1, is_staff=True), None, GroupIds()) is True
    assert r.is_active(User(pk=3), None, GroupIds()) is True
    assert r.is_active(User(pk=4), None, GroupIds({9})) is True
    assert r.is_active(User(pk=4), None, GroupIds({8})) is False


def test_percent_for_users_uses_the_pk_not_the_anonymous_id():
    r = rule(percent=50)
    # Find a pk inside and an anonymous id outside: a logged-in user is decided by its pk.
    inside = next(pk for pk in range(1, 1000) if r.is_active(User(pk=pk)))
    outside_id = next(f"a{i}" for i in range(1000) if not r.is_active(None, f"a{i}"))
    assert r.is_active(User(pk=inside), outside_id) is True


def test_percent_edges():
    assert rule(percent=0).is_active(User(pk=1)) is False
    assert rule(percent=100).is_active(None, None) is True
    assert rule(percent=100).is_active(ANONYMOUS, None) is True
    # A partial percentage needs an identity: an anonymous visitor without one is out.
    assert rule(percent=99.9).is_active(None, None) is False


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "new-checkout", "A_b.c-9", "x" * NAME_MAX_LENGTH, "..."])
def test_valid_names(name):
    assert validate_name(name) == name
    assert FlagRule(name).name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a b", "space"),
        ("a/b", "slash"),
        ("/a", "leading slash"),
        ("x" * (NAME_MAX_LENGTH + 1), "101 chars"),
        (None, "None"),
        (5, "int"),
        (b"abc", "bytes"),
        (["a"], "list"),
        (".", "dot"),
        ("..", "dotdot"),
        ("café", "unicode letter"),
        ("ünï", "unicode letters"),
        ("١٢٣", "arabic-indic digits"),
        ("a\n", "trailing newline"),
        ("a\x00b", "nul"),
        ("\u212a", "kelvin sign"),
    ],
)
def test_invalid_names(name, reason):
    with pytest.raises(InvalidFlag, match=r"Invalid flag name") as excinfo:
        validate_name(name)
    assert repr(name) in str(excinfo.value)
    with pytest.raises(InvalidFlag):
        FlagRule(name)
    with pytest.raises(InvalidFlag):
        FlagRule.from_document({"name": name})


def test_invalid_name_message_says_what_is_allowed():
    with pytest.raises(InvalidFlag) as excinfo:
        validate_name("a b")
    message = str(excinfo.value)
    assert str(NAME_MAX_LENGTH) in message
    assert "letters" in message and "digits" in message


def _spec_accepts(name: str) -> bool:
    """The documented rule, written independently of the module's regex."""
    return (
        1 <= len(name) <= NAME_MAX_LENGTH
        and all(c in NAME_ALPHABET for c in name)
        and name not in (".", "..")
    )


@given(st.text(alphabet=sorted(NAME_ALPHABET), min_size=1, max_size=NAME_MAX_LENGTH))
def test_any_name_from_the_alphabet_is_accepted(name):
    if name in (".", ".."):
        with pytest.raises(InvalidFlag):
            validate_name(name)
    else:
        assert validate_name(name) == name


@given(
    st.one_of(
        st.text(max_size=120),
        st.text(alphabet=sorted(NAME_ALPHABET) + [" ", "/", "é", "\n", "\x00"], max_size=110),
    )
)
def test_names_are_accepted_exactly_when_the_spec_says(name):
    if _spec_accepts(name):
        assert validate_name(name) == name
    else:
        with pytest.raises(InvalidFlag):
            validate_name(name)


# -- percents --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, 0.1, 1, 33.33, 50, 99.99, 100, 100.0])
def test_valid_percents(value):
    assert validate_percent(value) == float(value)
    assert isinstance(validate_percent(value), float)
    assert rule(percent=value).percent == float(value)


def test_percent_none_means_no_percentage_rule():
    assert validate_percent(None) is None
    assert rule().percent is None
    assert rule(percent=None).threshold == 0


@pytest.mark.parametrize(
    "value",
    [-0.1, -1, 100.1, 101, math.nan, math.inf, -math.inf, True, False, "10", "", [10], {}, 10**400],
    ids=lambda v: repr(v)[:12],
)
def test_invalid_percents(value):
    with pytest.raises(InvalidFlag, match=r"Percent must be"):
        validate_percent(value)
    with pytest.raises(InvalidFlag, match=r"Percent must be"):
        rule(percent=value)


def test_invalid_percent_message_shows_the_value():
    with pytest.raises(InvalidFlag) as excinfo:
        validate_percent(100.1)
    assert "100.1" in str(excinfo.value) and "0 to 100" in str(excinfo.value)


@given(st.one_of(st.floats(min_value=0, max_value=100), st.integers(min_value=0, max_value=100)))
def test_any_number_in_range_is_accepted(value):
    assert validate_percent(value) == value
    r = FlagRule("p", percent=value)
    assert 0 <= r.threshold <= 10_000
    assert r.threshold == round(value * 100)


@given(
    st.one_of(
        st.floats(allow_nan=True).filter(lambda v: not 0 <= v <= 100),
        st.integers().filter(lambda v: not 0 <= v <= 100),
    )
)
def test_any_number_out_of_range_is_refused(value):
    with pytest.raises(InvalidFlag):
        validate_percent(value)


# -- documents -------------------------------------------------------------------------------


def test_document_round_trip():
    doc = {
        "name": "checkout",
        "everyone": None,
        "percent": 12.5,
        "superusers": True,
        "staff": False,
        "authenticated": False,
        "users": [3, 1, 2],
        "groups": [9],
        "note": "new checkout",
    }
    r = FlagRule.from_document(doc)
    assert r.to_document() == {**doc, "users": [1, 2, 3]}
    assert FlagRule.from_document(json.loads(json.dumps(r.to_document()))) == r
    assert r.version is None
    assert FlagRule.from_document({**doc, "version": 4}).version == 4


def test_document_defaults_and_stored_name():
    r = FlagRule.from_document({}, name="from-path")
    assert r.name == "from-path"
    assert (r.everyone, r.percent, r.superusers, r.staff, r.authenticated) == (
        None,
        None,
        False,
        False,
        False,
    )
    assert r.users == frozenset() and r.groups == frozenset() and r.note == ""
    assert FlagRule.from_document({"users": None, "groups": None}, name="x").users == frozenset()


def test_document_without_any_name_is_refused():
    with pytest.raises(InvalidFlag, match="Invalid flag name None"):
        FlagRule.from_document({"everyone": True})


def test_document_stored_under_another_name_is_refused():
    with pytest.raises(InvalidFlag, match="'a' is stored as 'b'"):
        FlagRule.from_document({"name": "a"}, name="b")


@pytest.mark.parametrize(
    "doc", [None, [], ["name", "x"], "x", 5, 1.5, True, b"{}", {"x"}], ids=repr
)
def test_document_that_is_not_an_object_is_refused(doc):
    with pytest.raises(InvalidFlag, match="must be a JSON object"):
        FlagRule.from_document(doc, name="x")


WRONG_TYPES = [
    ("name", 5),
    ("name", None),
    ("name", ["x"]),
    ("everyone", "yes"),
    ("everyone", 1),
    ("everyone", 0),
    ("everyone", []),
    ("percent", "10"),
    ("percent", True),
    ("percent", [10]),
    ("superusers", "true"),
    ("superusers", 1),
    ("superusers", None),
    ("staff", "false"),
    ("staff", 0),
    ("authenticated", []),
    ("authenticated", "yes"),
    ("users", "1,2"),
    ("users", ["1"]),
    ("users", [1, "2"]),
    ("users", [True]),
    ("users", [1, False]),
    ("users", [1.0]),
    ("users", [None]),
    ("users", {"1": 1}),
    ("users", 5),
    ("users", 0),
    ("users", ""),
    ("users", False),
    ("users", {}),
    ("groups", ["admins"]),
    ("groups", [True]),
    ("groups", 7),
    ("groups", 0),
    ("groups", ""),
    ("note", 5),
    ("note", None),
    ("note", ["a"]),
    ("version", "1"),
    ("version", 1.0),
    ("version", True),
]


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES, ids=[f"{k}={v!r}" for k, v in WRONG_TYPES])
def test_document_with_a_wrong_type_is_refused(key, value):
    doc = {"name": "x", key: value}
    with pytest.raises(InvalidFlag) as excinfo:
        FlagRule.from_document(doc, name=None if key == "name" else "x")
    message = str(excinfo.value)
    assert key in message or "Percent" in message or "flag name" in message


def test_switching_everyone_in_the_document_keeps_the_other_rules():
    # How services.set_everyone switches a flag: the document with "everyone" replaced.
    r = rule(staff=True, percent=5, users=[1])
    on = FlagRule.from_document({**r.to_document(), "everyone": True})
    assert on.everyone is True and on.staff and on.percent == 5 and on.users == {1}
    assert FlagRule.from_document({**on.to_document(), "everyone": None}) == r


# -- environments ----------------------------------------------------------------------------


def test_compiled_rule_for_environment_keeps_version():
    rule = FlagRule.from_document(
        {"name": "f", "version": 4, "percent": 10, "environments": {"e": {"percent": 90}}}
    )
    resolved = rule.for_environment(("e",))
    assert (resolved.version, resolved.percent, rule.percent) == (4, 90.0, 10.0)
    assert rule.for_environment(("other",)) is rule


# -- percentage rollouts (docs/percentages.md) ----------------------------------------------

N = 10_000


USERS = [User(pk) for pk in range(1, N + 1)]
# Fixed seed: the anonymous ids look random but the test is reproducible.
_rng = random.Random(20240611)
ANONYMOUS_IDS = [str(uuid.UUID(int=_rng.getrandbits(128), version=4)) for _ in range(N)]


def percent_rule(percent: float, name: str = "rollout") -> FlagRule:
    return FlagRule.from_document({"name": name, "percent": percent})


def users_inside(r: FlagRule) -> set[int]:
    return {u.pk for u in USERS if r.is_active(u)}


def anonymous_inside(r: FlagRule) -> set[str]:
    return {a for a in ANONYMOUS_IDS if r.is_active(None, a)}


# -- the share matches the target ------------------------------------------------------------


@pytest.mark.parametrize("target", [1, 5, 10, 25, 50, 75, 99])
def test_share_of_users_is_close_to_target(target):
    share = 100 * len(users_inside(percent_rule(target))) / N
    assert abs(share - target) <= 1.5, share


@pytest.mark.parametrize("target", [1, 5, 10, 25, 50, 75, 99])
def test_share_of_anonymous_visitors_is_close_to_target(target):
    share = 100 * len(anonymous_inside(percent_rule(target))) / N
    assert abs(share - target) <= 1.5, share


@pytest.mark.parametrize("name", ["a", "new-checkout", "search.v2", "x" * 100])
def test_share_holds_for_any_flag_name(name):
    share = 100 * len(users_inside(percent_rule(20, name))) / N
    assert abs(share - 20) <= 1.5, share


def test_buckets_are_spread_evenly():
    # Ten deciles of the bucket range each get about a tenth of the users.
    counts = [0] * 10
    for u in USERS:
        counts[bucket("spread", u.pk) * 10 // BUCKETS] += 1
    assert all(abs(c - N / 10) <= 150 for c in counts), counts


# -- stable ----------------------------------------------------------------------------------


def test_same_user_same_answer_twice_and_from_a_fresh_rule():
    first = percent_rule(30)
    answers = [first.is_active(u) for u in USERS]
    assert [first.is_active(u) for u in USERS] == answers
    fresh = FlagRule.from_document(json.loads(json.dumps(first.to_document())))
    assert fresh is not first
    assert [fresh.is_active(u) for u in USERS] == answers
    anon = [first.is_active(None, a) for a in ANONYMOUS_IDS]
    assert [fresh.is_active(None, a) for a in ANONYMOUS_IDS] == anon


def test_answer_does_not_depend_on_other_rules_or_the_version():
    plain = percent_rule(30)
    other = FlagRule.from_document(
        {"name": "rollout", "percent": 30, "note": "edited", "users": [10**9], "version": 17}
    )
    assert users_inside(plain) == users_inside(other)


# -- monotonic -------------------------------------------------------------------------------


def test_everyone_inside_at_5_is_inside_at_10():
    at5, at10 = users_inside(percent_rule(5)), users_inside(percent_rule(10))
    assert at5 and at5 < at10
    a5, a10 = anonymous_inside(percent_rule(5)), anonymous_inside(percent_rule(10))
    assert a5 and a5 < a10


def test_raising_the_percentage_only_adds_visitors():
    chain = [0, 0.5, 1, 5, 10, 25, 50, 75, 90, 99, 100]
    user_sets = [users_inside(percent_rule(p)) for p in chain]
    anon_sets = [anonymous_inside(percent_rule(p)) for p in chain]
    for sets in (user_sets, anon_sets):
        for smaller, larger in zip(sets[:-1], sets[1:], strict=True):
            assert smaller <= larger
        assert len(sets[0]) == 0 and len(sets[-1]) == N
        # Each step adds visitors (the chain is strictly growing at this population size).
        assert len({len(s) for s in sets}) == len(chain)


def test_fractional_percent_has_two_decimals_of_resolution():
    r = percent_rule(12.34)
    assert r.threshold == 1234
    for u in USERS[:2000]:
        assert r.is_active(u) is (bucket("rollout", u.pk) < 1234)


# -- independent flags -----------------------------------------------------------------------


def test_two_flags_at_10_percent_pick_independent_users():
    a = users_inside(percent_rule(10, "flag-a"))
    b = users_inside(percent_rule(10, "flag-b"))
    overlap = 100 * len(a & b) / N
    assert 0.5 <= overlap <= 2.0, overlap  # independent: about 10% of 10%
    aa = anonymous_inside(percent_rule(10, "flag-a"))
    bb = anonymous_inside(percent_rule(10, "flag-b"))
    assert 0.5 <= 100 * len(aa & bb) / N <= 2.0


# -- the extremes ----------------------------------------------------------------------------


def test_zero_percent_is_nobody():
    r = percent_rule(0)
    assert not users_inside(r)
    assert not anonymous_inside(r)
    assert r.is_active(None, None) is False


def test_hundred_percent_is_everybody_even_without_an_identity():
    r = percent_rule(100)
    assert len(users_inside(r)) == N
    assert len(anonymous_inside(r)) == N
    assert r.is_active(None, None) is True
    assert r.is_active(User(pk=0, is_authenticated=False), None) is True


def test_tiny_percent_below_the_resolution_is_nobody():
    assert not users_inside(percent_rule(0.004))


# -- the algorithm, pinned -------------------------------------------------------------------

#: (flag name, identity, bucket). Also in docs/percentages.md. If these change, every
#: visitor of every running rollout moves: do not "fix" the numbers, fix the code.
TEST_VECTORS = [
    ("new-checkout", 1, 3322),
    ("new-checkout", 2, 7044),
    ("new-checkout", 10000, 292),
    ("banner", 42, 317),
    ("banner", "42", 317),
    ("dark_mode.v2", 7, 6894),
    ("search.v2", "Yq3xZ0d1l9Wm2K7pR4tS8A", 1695),
    ("pricing-2025", 987654321, 4098),
]


@pytest.mark.parametrize(("name", "identity", "expected"), TEST_VECTORS)
def test_vectors(name, identity, expected):
    assert bucket(name, identity) == expected
    # And is_active decides by the same bucket.
    r = FlagRule(name, percent=expected / 100)  # threshold == expected: bucket is not below
    above = FlagRule(name, percent=(expected + 1) / 100)  # threshold == expected + 1
    if isinstance(identity, int):
        assert r.is_active(User(identity)) is False
        assert above.is_active(User(identity)) is True
    else:
        assert r.is_active(None, identity) is False
        assert above.is_active(None, identity) is True


def test_vectors_are_in_the_docs():
    text = (DOCS / "percentages.md").read_text(encoding="utf-8")
    for name, identity, expected in TEST_VECTORS:
        row = f"| `{name}` | `{identity!r}` | {expected} |"
        assert row in text, row


def _by_hand(name: str, identity: object) -> int:
    """The algorithm as the docstring of django_zkflags.rules states it."""
    key = name.encode("utf-8") + b"\x00" + str(identity).encode("utf-8")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10000


def test_docstring_states_the_algorithm():
    doc = rules.__doc__ or ""
    assert "blake2b(key, digest_size=8)" in doc
    assert '"big") % 10000' in doc
    assert "bucket < round(percent * 100)" in doc


def test_bucket_matches_the_documented_algorithm():
    samples = [("rollout", u.pk) for u in USERS[:3000]]
    samples += [("rollout", a) for a in ANONYMOUS_IDS[:3000]]
    samples += [("ünïcode-in-id", "é"), ("n", ""), ("n", 0), ("n", -1)]
    for name, identity in samples:
        assert bucket(name, identity) == _by_hand(name, identity)


@pytest.mark.parametrize("percent", [0.5, 10, 33.3, 90])
def test_is_active_matches_the_documented_algorithm(percent):
    r = percent_rule(percent)
    threshold = round(percent * 100)
    for u in USERS[:3000]:
        assert r.is_active(u) is (_by_hand("rollout", u.pk) < threshold)
    for a in ANONYMOUS_IDS[:3000]:
        assert r.is_active(None, a) is (_by_hand("rollout", a) < threshold)
