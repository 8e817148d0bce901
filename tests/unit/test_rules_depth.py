"""How deeply a flag's value and its overrides may nest (django_zkflags/rules.py,
MAX_VALUE_DEPTH = 64): deeper is an InvalidFlag with a clear, short message, whatever the
depth and whatever the field, never a RecursionError."""

from __future__ import annotations

import json

import pytest

from django_zkflags.rules import (
    MAX_VALUE_DEPTH,
    FlagRule,
    InvalidFlag,
    freeze_value,
    json_text_too_deep,
    thaw_value,
)
from django_zkflags.snapshot import compile_entries


def nested(levels: int, kind: str = "list") -> object:
    """``levels`` lists (or objects) inside each other, a 1 at the bottom."""
    value: object = 1
    for _ in range(levels):
        value = [value] if kind == "list" else {"k": value}
    return value


def test_the_limit_is_64():
    assert MAX_VALUE_DEPTH == 64


@pytest.mark.parametrize("kind", ["list", "object"])
def test_a_value_at_the_limit_is_kept_and_one_level_more_is_refused(kind):
    rule = FlagRule("f", value=nested(64, kind))
    assert thaw_value(rule.value) == nested(64, kind)
    with pytest.raises(InvalidFlag, match="'value' is nested too deeply: at most 64 levels"):
        FlagRule("f", value=nested(65, kind))


@pytest.mark.parametrize("levels", [65, 500, 900, 5_000, 100_000])
def test_any_depth_is_refused_cleanly(levels):
    with pytest.raises(InvalidFlag) as raised:
        FlagRule.from_document({"name": "f", "value": nested(levels)})
    assert "nested too deeply" in str(raised.value)
    with pytest.raises(InvalidFlag, match="nested too deeply"):
        freeze_value(nested(levels, "object"))


def test_an_override_value_has_the_same_limit():
    ok = FlagRule.from_document({"name": "f", "environments": {"staging": {"value": nested(64)}}})
    assert thaw_value(ok.environments["staging"]["value"]) == nested(64)
    with pytest.raises(InvalidFlag, match="Environment 'staging': 'value' is nested too deeply"):
        FlagRule.from_document({"name": "f", "environments": {"staging": {"value": nested(65)}}})


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "f", "users": nested(100_000)},
        {"name": "f", "groups": [1, nested(100_000)]},
        {"name": "f", "everyone": nested(100_000)},
        {"name": "f", "percent": nested(100_000)},
        {"name": "f", "superusers": nested(100_000)},
        {"name": nested(100_000)},
        {"name": "f", "environments": nested(100_000)},
        {"name": "f", "environments": {"staging": {"users": nested(100_000)}}},
        {"name": "f", "environments": {"staging": {"percent": nested(100_000)}}},
    ],
)
def test_deep_input_in_any_field_is_an_invalid_flag_with_a_short_message(doc):
    with pytest.raises(InvalidFlag) as raised:
        FlagRule.from_document(doc, name="f")
    assert len(str(raised.value)) < 400


def test_a_deep_entry_in_a_snapshot_is_invalid_for_that_flag_only():
    entries = {
        "deep": {"name": "deep", "version": 0, "value": nested(900)},
        "fine": {"name": "fine", "version": 0, "everyone": True},
    }
    flags, errors = compile_entries(entries)
    assert list(flags) == ["fine"]
    assert "nested too deeply" in errors["deep"]


@pytest.mark.parametrize(
    "text, deepest",
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('"[[[[[[[["', 0),  # brackets in a string do not count
        ('["\\"[[[[", []]', 2),  # nor after an escaped quote
        ('["\\\\", [[]]]', 3),  # an escaped backslash ends before the quote
        ('"unterminated [[[[', 0),
        ("[" * 65 + "]" * 65, 65),
        ("[" * 100_000, 100_000),  # not JSON at all: still measured, without recursion
    ],
)
def test_json_text_depth_is_measured_without_parsing(text, deepest):
    assert not json_text_too_deep(text, deepest)
    if deepest:
        assert json_text_too_deep(text, deepest - 1)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return
    assert json_text_too_deep(json.dumps(parsed), deepest - 1) == (deepest > 0)
