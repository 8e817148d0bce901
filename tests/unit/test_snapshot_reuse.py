"""compile_entries reuses a compiled rule only when the entry still describes it: a version
number alone is not an identity (a flag deleted and created again, a tree restored after
ZooKeeper lost its data, starts at version 0 again)."""

from __future__ import annotations

import pytest

from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import compile_entries


def entry(name: str, version: int, **fields):
    return {**FlagRule(name, **fields).to_document(), "version": version}


def test_an_unchanged_entry_reuses_the_compiled_rule():
    first, _ = compile_entries({"a": entry("a", 3, percent=10.0, users=[1, 2])})
    again, _ = compile_entries({"a": entry("a", 3, percent=10.0, users=[2, 1])}, previous=first)
    assert again["a"] is first["a"]


@pytest.mark.parametrize(
    "changed",
    [
        {"everyone": False},
        {"percent": 11.0},
        {"staff": True},
        {"superusers": True},
        {"authenticated": True},
        {"note": "other"},
        {"users": [1, 3]},
        {"users": [1]},
        {"groups": [5]},
        {"value": {"k": 1}},
        {"environments": {"staging": {"everyone": True}}},
    ],
)
def test_the_same_version_with_other_content_is_compiled_again(changed):
    fields = {"everyone": True, "users": [1, 2], "note": "n"}
    first, _ = compile_entries({"a": entry("a", 0, **fields)})
    recreated = entry("a", 0, **{**fields, **changed})
    again, _ = compile_entries({"a": recreated}, previous=first)
    assert again["a"] is not first["a"]
    assert again["a"].to_document() == {k: v for k, v in recreated.items() if k != "version"}


def test_a_rule_compiled_for_an_environment_is_reused_from_its_stored_form():
    stored = entry("a", 2, percent=5.0, environments={"prod": {"everyone": True}})
    first, _ = compile_entries({"a": stored}, chain=("prod",))
    assert first["a"].everyone is True  # the override applied
    again, _ = compile_entries({"a": dict(stored)}, previous=first, chain=("prod",))
    assert again["a"] is first["a"]
