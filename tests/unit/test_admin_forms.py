"""The admin's JSON boxes (django_zkflags/admin/forms.py), as fields: every text gives a
value or a form error, never an exception; empty means "none" and is shown empty; what was
typed is shown back as typed. Through the admin, against ZooKeeper:
tests/integration/test_admin_forms.py."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from django_zkflags.admin.forms import BoundedJSONField, EnvironmentsForm, refusal_text
from django_zkflags.exceptions import FlagConflict, ZooKeeperUnavailable


@pytest.mark.parametrize(
    ("text", "value"),
    [("", None), ("  \n\t", None), ("null", None), ("[1, 2]", [1, 2]), ('"x"', "x"), ("-1", -1)],
)
def test_values(text, value):
    assert BoundedJSONField(required=False).clean(text) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "Not valid JSON"),
        ("9" * 5000, "digits"),
        ("[" + "9" * 5000 + "]", "digits"),
        ("1e400", "too large"),
        ("NaN", "not a JSON number"),
        ("-Infinity", "not a JSON number"),
        ("[" * 65 + "]" * 65, "Nested too deeply"),
        ("[" * 100_000 + "]" * 100_000, "Nested too deeply"),
        ("[" * 60 + "{" * 4 + "[" * 600, "Nested too deeply"),  # unbalanced, still refused
    ],
)
def test_form_errors(text, says):
    with pytest.raises(ValidationError) as raised:
        BoundedJSONField(required=False).clean(text)
    assert says in " ".join(raised.value.messages)


def test_empty_is_shown_empty_and_typed_text_is_shown_as_typed():
    field = BoundedJSONField(required=False)
    assert field.prepare_value(None) == ""
    assert field.prepare_value({"a": 1}) == '{"a": 1}'
    overrides = BoundedJSONField(required=False, empty_value={})
    assert overrides.clean("") == {}
    assert overrides.prepare_value({}) == ""
    typed = '{"a":   1,\n "b": [2]}'
    for text in (typed, "9" * 5000, "[" * 100_000, "{not json"):
        assert field.prepare_value(field.bound_data(text, None)) == text


def test_environments_form_empty_means_no_environments():
    form = EnvironmentsForm({"document": " ", "version_seen": ""})
    assert form.is_valid(), form.errors
    assert form.cleaned_data == {"document": {}, "version_seen": None}
    for version in ("-1", "abc", "9" * 5000, str(2**31)):
        assert not EnvironmentsForm({"document": "{}", "version_seen": version}).is_valid()


def test_refusal_texts_say_what_happened_and_that_the_input_is_kept():
    down = refusal_text(ZooKeeperUnavailable("ZooKeeper is unreachable (h:1, waited 3s)"))
    assert down == (
        "ZooKeeper is unreachable (h:1, waited 3s). Nothing was saved. What you typed is "
        "kept below: save again once ZooKeeper is back."
    )
    saved = refusal_text(ZooKeeperUnavailable("Could not save 'x'; nothing was saved."))
    assert saved.lower().count("nothing was saved") == 1
    conflict = FlagConflict("Moved.", current={"name": "x"}, current_version=4)
    assert "saving again replaces it" in refusal_text(conflict)
    assert "version 4" in refusal_text(conflict)
    gone = FlagConflict("Deleted.", current=None, current_version=None)
    assert "creates it anew" in refusal_text(gone)
