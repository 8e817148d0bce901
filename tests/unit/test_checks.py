"""The system checks (django_zkflags/checks.py)."""

from __future__ import annotations

import pytest
from django.core import checks as django_checks
from django.core.signals import setting_changed

from django_zkflags.checks import AUTH_MIDDLEWARE, MIDDLEWARE_PATH, check_settings


def ids(messages) -> list[str]:
    return sorted(m.id for m in messages)


def zk_messages() -> list:
    return [m for m in django_checks.run_checks() if (m.id or "").startswith("zkflags.")]


def test_no_messages_with_the_test_settings():
    assert check_settings() == []
    assert django_checks.run_checks() == []


@pytest.mark.parametrize(
    "url",
    ["http://h:2181/r", "zk://h:99999/r", "zk://h:2181/a/../b", "zk://u@h/r", 5],
    ids=repr,
)
def test_e001_malformed_url(settings, url):
    settings.ZKFLAGS_URL = url
    messages = zk_messages()
    assert ids(messages) == ["zkflags.E001"]
    assert messages[0].level == django_checks.ERROR
    assert "ZKFLAGS_URL is malformed" in messages[0].msg


def test_e001_from_the_environment(settings, monkeypatch):
    monkeypatch.setenv("ZKFLAGS_URL", "redis://nope")
    del settings.ZKFLAGS_URL
    # What override_settings sends; pytest-django's ``del settings.X`` sends nothing.
    setting_changed.send(sender=None, setting="ZKFLAGS_URL", value=None, enter=True)
    assert ids(check_settings()) == ["zkflags.E001"]
    # Leave nothing cached from the deleted setting (see tests/unit/test_conf.py).
    settings.ZKFLAGS_URL = "zk://127.0.0.1:1/after"


def test_e002_unknown_key(settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "STARTUP_TIMOUT": 3}
    messages = check_settings()
    assert ids(messages) == ["zkflags.E002"]
    assert "'STARTUP_TIMOUT'" in messages[0].msg
    assert "STARTUP_TIMEOUT" in messages[0].hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("STARTUP_TIMEOUT", "1"),
        ("STARTUP_TIMEOUT", -1),
        ("SESSION_TIMEOUT", None),
        ("RECONNECT_MAX_DELAY", True),
        ("MAX_WRITE_BYTES", "1MB"),
        ("AUTOSTART", "yes"),
        ("UNKNOWN_FLAG_ACTIVE", 1),
        ("TESTING_OVERRIDES", "false"),
    ],
)
def test_e002_wrong_type(settings, key, value):
    settings.ZKFLAGS = {key: value}
    messages = [m for m in check_settings() if m.id == "zkflags.E002"]
    assert len(messages) == 1
    assert repr(key) in messages[0].msg


def test_e002_not_a_dict(settings):
    settings.ZKFLAGS = [("AUTOSTART", False)]
    assert "zkflags.E002" in ids(check_settings())


@pytest.mark.parametrize(
    ("key", "value"),
    [("STARTUP_TIMEOUT", 0), ("STARTUP_TIMEOUT", 2), ("AUTOSTART", True), ("SNAPSHOT_FILE", "")],
)
def test_e002_good_values(settings, key, value):
    settings.ZKFLAGS = {key: value}
    assert check_settings() == []


def test_e003_testing_overrides_without_debug(settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "TESTING_OVERRIDES": True}
    settings.DEBUG = False
    messages = zk_messages()
    assert ids(messages) == ["zkflags.E003"]
    settings.DEBUG = True
    assert zk_messages() == []
    settings.ZKFLAGS = {**settings.ZKFLAGS, "TESTING_OVERRIDES": False}
    settings.DEBUG = False
    assert zk_messages() == []


def test_w001_middleware_missing(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
    messages = zk_messages()
    assert ids(messages) == ["zkflags.W001"]
    assert messages[0].level == django_checks.WARNING
    assert AUTH_MIDDLEWARE in messages[0].hint


def test_w002_middleware_before_authentication(settings):
    middleware = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
    middleware.insert(middleware.index(AUTH_MIDDLEWARE), MIDDLEWARE_PATH)
    settings.MIDDLEWARE = middleware
    messages = zk_messages()
    assert ids(messages) == ["zkflags.W002"]
    assert messages[0].level == django_checks.WARNING


def test_no_w002_without_authentication_middleware(settings):
    settings.MIDDLEWARE = [MIDDLEWARE_PATH]
    assert [m.id for m in check_settings() if m.id.startswith("zkflags.W")] == []


def test_several_problems_are_all_reported(settings):
    settings.ZKFLAGS_URL = "zk://h:2181/"
    settings.ZKFLAGS = {"BOGUS": 1, "TESTING_OVERRIDES": True}
    settings.MIDDLEWARE = []
    assert ids(check_settings()) == [
        "zkflags.E001",
        "zkflags.E002",
        "zkflags.E003",
        "zkflags.W001",
    ]
