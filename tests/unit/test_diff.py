"""django_zkflags/diff.py: what changed between two flag documents, in words."""

from __future__ import annotations

import pytest

from django_zkflags.diff import MISSING, FieldChange, compact, diff_documents, member_ids

from ..conftest import flag_doc

NAMES = {"users": {1: "alice", 2: "bob"}, "groups": {7: "ops"}}


def lines(before, after, names=NAMES) -> list[str]:
    return [str(change) for change in diff_documents(before, after, names=names)]


def test_scalars_before_and_after_as_compact_json():
    before = flag_doc("f", percent=10.0, note="old", staff=False)
    after = flag_doc("f", percent=25.0, note="new", staff=True, everyone=True)
    assert lines(before, after) == [
        "everyone: null → true",
        "percent: 10 → 25",
        "staff: false → true",
        'note: "old" → "new"',
    ]


def test_fractional_percent_keeps_its_decimal():
    assert lines(flag_doc("f", percent=12.5), flag_doc("f", percent=0.5)) == ["percent: 12.5 → 0.5"]


def test_users_and_groups_by_name_added_and_removed():
    before = flag_doc("f", users=[2, 9], groups=[])
    after = flag_doc("f", users=[1, 9], groups=[7])
    assert lines(before, after) == ["users: +alice −bob", "groups: +ops"]


def test_ids_the_database_no_longer_has_are_marked_and_ids_without_names_plain():
    before, after = flag_doc("f", users=[]), flag_doc("f", users=[1, 42])
    assert lines(before, after) == ["users: +alice +#42 (deleted)"]
    assert lines(before, after, names=None) == ["users: +#1 +#42"]


def test_same_document_or_same_ids_in_another_order_is_no_change():
    assert lines(flag_doc("f", users=[1, 2]), flag_doc("f", users=[2, 1])) == []
    assert diff_documents(None, None) == []


def test_created_lists_what_the_new_flag_sets_beyond_the_defaults():
    after = flag_doc("f", everyone=True, users=[1], value={"b": 2, "a": [1, 2]})
    assert lines(None, after) == ["everyone: true", "users: +alice", 'value: {"a":[1,2],"b":2}']


def test_deleted_lists_what_the_flag_had():
    before = flag_doc("f", percent=5.0, groups=[7])
    assert lines(before, None) == ["percent: removed (was 5)", "groups: −ops"]


def test_missing_value_and_environments_read_as_their_defaults():
    # to_document() leaves value and environments out when unset.
    with_keys = {**flag_doc("f"), "value": None, "environments": {}}
    assert lines(flag_doc("f"), with_keys) == []
    assert lines(flag_doc("f"), {**flag_doc("f"), "value": 0}) == ["value: null → 0"]


def test_environment_overrides_field_by_field():
    before = flag_doc("f", environments={"staging": {"percent": 10}, "old": {"everyone": True}})
    after = flag_doc(
        "f",
        environments={"staging": {"percent": 25, "users": [2]}, "canary": {"everyone": False}},
    )
    assert lines(before, after) == [
        "environments.canary.everyone: false",
        "environments.old.everyone: removed (was true)",
        "environments.staging.percent: 10 → 25",
        "environments.staging.users: +bob",
    ]


def test_an_empty_override_added_is_shown_whole():
    after = flag_doc("f", environments={"dev": {}})
    assert lines(flag_doc("f"), after) == ["environments.dev: {}"]


def test_name_and_version_are_not_fields_and_unknown_fields_come_last():
    before = {**flag_doc("f"), "version": 3, "zeta": 1}
    after = {**flag_doc("f"), "version": 4, "zeta": 2, "note": "n"}
    assert lines(before, after) == ['note: "" → "n"', "zeta: 1 → 2"]


def test_long_values_are_cut():
    text = compact({"blob": "x" * 500})
    assert len(text) == 200 and text.endswith("…")
    assert compact(10.0) == "10" and compact(None) == "null" and compact("é") == '"é"'


def test_member_ids_collects_overrides_and_ignores_junk():
    docs = [
        flag_doc("f", users=[1], groups=[7], environments={"s": {"users": [3], "groups": [8]}}),
        None,
        {"users": "not a list", "environments": {"x": "not an override"}},
        flag_doc("g", users=[True, 2]),  # a bool is not an id
    ]
    assert member_ids(docs) == {"users": {1, 2, 3}, "groups": {7, 8}}


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (FieldChange("percent", 1, 2), "percent: 1 → 2"),
        (FieldChange("percent", MISSING, 2), "percent: 2"),
        (FieldChange("percent", 1, MISSING), "percent: removed (was 1)"),
        (FieldChange("users", [], [1], added=("a",)), "users: +a"),
    ],
)
def test_field_change_text(change, text):
    assert str(change) == text
