"""django_zkflags/openfeature.py without ZooKeeper: how an evaluation context becomes the
user (or visitor) the rules are evaluated for, how django-zkflags' reasons map to
OpenFeature's, and the flag metadata. Rules are published into the store in a snapshot
built here; the provider is called directly (its events and the SDK around it, against
ZooKeeper: tests/integration/test_openfeature.py).
"""

from __future__ import annotations

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from django_zkflags.evaluation import REASONS as ZKFLAGS_REASONS
from django_zkflags.openfeature import REASONS, ZKFlagsProvider
from django_zkflags.rules import FlagRule, bucket
from django_zkflags.testing import override_flag


@pytest.fixture
def provider() -> ZKFlagsProvider:
    return ZKFlagsProvider()  # not initialised: resolving needs no runtime


def context(key: str | None = None, **attributes) -> EvaluationContext:
    return EvaluationContext(targeting_key=key, attributes=attributes)


def test_every_reason_has_an_openfeature_reason():
    assert set(REASONS) == set(ZKFLAGS_REASONS)


def test_the_context_is_a_user(provider, publish):
    publish(
        FlagRule("staff", staff=True, version=3),
        FlagRule("super", superusers=True),
        FlagRule("signed-in", authenticated=True),
        FlagRule("listed", users=[42]),
        FlagRule("grp", groups=[7]),
    )
    resolve = provider.resolve_boolean_details
    assert resolve("staff", False, context("1", is_staff=True)).value is True
    assert resolve("staff", False, context("1")).value is False
    assert resolve("super", False, context("1", is_superuser=True)).value is True
    assert resolve("signed-in", False, context("1")).value is True  # a key: authenticated
    assert resolve("signed-in", False, context("1", authenticated=False)).value is False
    assert resolve("signed-in", False, context()).value is False
    assert resolve("listed", False, context("42")).value is True  # "42" is user 42
    assert resolve("grp", False, context("1", groups=[7, 8])).value is True
    assert resolve("grp", False, context("1", groups=["7"])).value is True
    assert resolve("grp", False, context("1")).value is False
    answer = resolve("staff", False, context("1", is_staff=True))
    assert answer.flag_metadata == {
        "reason": "staff",
        "detail": "on for staff",
        "version": 3,
    }


@pytest.mark.parametrize(
    "bad",
    [
        context("1", groups=["beta"]),  # names: the rules hold ids
        context("1", groups="7"),
        context("1", is_staff="yes"),
        context(None, authenticated=True),  # who?
    ],
)
def test_a_context_that_cannot_be_a_user_is_invalid(provider, publish, bad):
    publish(FlagRule("grp", groups=[7]))
    answer = provider.resolve_boolean_details("grp", True, bad)
    assert (answer.value, answer.reason, answer.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.INVALID_CONTEXT,
    )


def test_an_anonymous_context_gets_the_bucket_of_its_key(provider, publish):
    publish(FlagRule("pct", percent=50))
    for key in ("a", "b", "c", "d", "e"):
        answer = provider.resolve_boolean_details("pct", False, context(key, authenticated=False))
        assert answer.reason == Reason.SPLIT
        assert answer.flag_metadata["bucket"] == bucket("pct", key)
        assert answer.value is (bucket("pct", key) < 5000)
    # A user's bucket is its id's, as for flag_is_active_for_user.
    answer = provider.resolve_boolean_details("pct", False, context("42"))
    assert answer.flag_metadata["bucket"] == bucket("pct", 42)


def test_reasons(provider, publish):
    publish(
        FlagRule("on", everyone=True),
        FlagRule("off", everyone=False),
        FlagRule("nobody"),
        FlagRule("needs", everyone=True, requires=["off"]),
    )
    resolve = provider.resolve_boolean_details
    assert resolve("on", False).reason == Reason.STATIC
    assert resolve("off", True).reason == Reason.DISABLED
    assert resolve("nobody", True).reason == Reason.DEFAULT
    assert resolve("missing", True).error_code == ErrorCode.FLAG_NOT_FOUND
    with override_flag("off"):
        forced = resolve("off", False)
        assert (forced.value, forced.reason, forced.flag_metadata["reason"]) == (
            True,
            Reason.STATIC,
            "override",
        )


def test_values_are_the_same_for_every_context(provider, publish):
    publish(FlagRule("limit", value=5, staff=True), FlagRule("layout", value={"a": [1]}))
    assert provider.resolve_integer_details("limit", 0, context("1")).value == 5
    assert provider.resolve_integer_details("limit", 0, None).value == 5
    layout = provider.resolve_object_details("layout", {})
    assert layout.value == {"a": [1]} and isinstance(layout.value["a"], list)
    assert provider.resolve_float_details("limit", 0.5).value == 5.0
