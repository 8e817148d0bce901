"""Percentage rollouts: shares, stability, monotonicity, independence, and the algorithm.

Pure: no ZooKeeper, no database. See docs/percentages.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest

from django_zkflags import rules
from django_zkflags.rules import BUCKETS, FlagRule, bucket

N = 10_000


@dataclass(frozen=True)
class User:
    pk: int
    is_authenticated: bool = True
    is_staff: bool = False
    is_superuser: bool = False


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


def test_same_answers_in_another_process_with_another_hash_seed():
    # Python's hash() is salted per process; the rollout must not be.
    sample = [("rollout", pk) for pk in range(1, 200)] + [
        ("rollout", a) for a in ANONYMOUS_IDS[:200]
    ]
    here = [bucket(name, identity) for name, identity in sample]
    code = (
        "import json, sys\n"
        "from django_zkflags.rules import bucket\n"
        "sample = json.load(sys.stdin)\n"
        "print(json.dumps([bucket(n, i) for n, i in sample]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == here


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
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "percentages.md")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
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
