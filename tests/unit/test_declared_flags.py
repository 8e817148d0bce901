"""Flags declared in code (``ZKFLAGS["FLAGS"]``): a declared flag ZooKeeper does not hold
answers its declared default; once ZooKeeper holds it, ZooKeeper wins."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks

from django_zkflags import flag_is_active_for_user, get_value
from django_zkflags.rules import FlagRule

DECLARED = {
    "new-checkout": False,
    "search-v2": {"default": True, "note": "the new search", "value": 3},
}


@pytest.fixture
def declared(settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "FLAGS": DECLARED}
    return settings


def test_a_declared_flag_answers_its_default_not_the_global_one(declared, publish):
    declared.ZKFLAGS = {**declared.ZKFLAGS, "UNKNOWN_FLAG_ACTIVE": True}
    publish()  # ZooKeeper holds nothing
    assert flag_is_active_for_user(None, "new-checkout") is False  # declared False wins
    assert flag_is_active_for_user(None, "search-v2") is True
    assert flag_is_active_for_user(None, "never-declared") is True  # the global default
    assert get_value("search-v2") == 3


def test_zookeeper_wins_over_the_declaration(declared, publish):
    publish(FlagRule("search-v2", everyone=False, value=9))
    assert flag_is_active_for_user(None, "search-v2") is False
    assert get_value("search-v2") == 9
    assert flag_is_active_for_user(None, "new-checkout") is False


def test_the_declaration_goes_with_the_setting(declared, publish, settings):
    publish()
    assert flag_is_active_for_user(None, "search-v2") is True
    settings.ZKFLAGS = {**settings.ZKFLAGS, "FLAGS": {}}
    assert flag_is_active_for_user(None, "search-v2") is False


def checks_with(settings, flags) -> list[str]:
    settings.ZKFLAGS = {**settings.ZKFLAGS, "FLAGS": flags}
    return [
        m.id
        for m in run_checks()
        if m.id.startswith("zkflags.W00") and m.id in ("zkflags.W006", "zkflags.W007")
    ]


def test_checks_report_bad_declarations(settings):
    assert checks_with(settings, DECLARED) == []
    assert checks_with(settings, {"x": "yes"}) == ["zkflags.W006"]
    assert checks_with(settings, {"x": {"default": 1}}) == ["zkflags.W006"]
    assert checks_with(settings, {"bad name": False}) == ["zkflags.W007"]
    assert checks_with(settings, {"x": {"default": True, "colour": "red"}}) == ["zkflags.W007"]


def test_bad_declarations_are_ignored_not_served(settings, publish):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "FLAGS": {"x": "yes", "bad name": True, "ok": True}}
    publish()
    assert flag_is_active_for_user(None, "x") is False
    assert flag_is_active_for_user(None, "ok") is True
