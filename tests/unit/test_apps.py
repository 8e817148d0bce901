"""Which processes start a watcher in AppConfig.ready (django_zkflags/apps.py), and which
do not. Real processes: tests/system/test_autostart.py."""

from __future__ import annotations

import pytest

from django_zkflags.apps import should_autostart


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["manage.py", "migrate"], {}, False),
        (["manage.py", "makemigrations"], {}, False),
        (["manage.py", "check"], {}, False),
        (["django-admin", "collectstatic"], {}, False),
        (["manage.py", "shell"], {}, True),
        (["manage.py", "zkflags", "status"], {}, True),
        (["manage.py", "runserver"], {}, False),  # the autoreloader's parent
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, True),  # its serving child
        (["manage.py", "runserver", "--noreload"], {}, True),
        (["gunicorn", "app.wsgi"], {}, True),
        ([], {}, True),
    ],
)
def test_should_autostart(argv, env, expected, settings, monkeypatch):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "AUTOSTART": True}
    monkeypatch.delenv("RUN_MAIN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert should_autostart(argv) is expected


def test_autostart_setting_off(settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "AUTOSTART": False}
    assert should_autostart(["manage.py", "shell"]) is False
