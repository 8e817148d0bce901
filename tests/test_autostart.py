"""Which processes start a watcher in AppConfig.ready, and which do not."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from django_zkflags.apps import should_autostart

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


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


@pytest.mark.slow
def test_migrate_does_not_connect_but_shell_does(zk_server, tmp_path):
    """Real processes: `migrate` never opens a ZooKeeper session, `shell` does."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example.settings",
        "ZKFLAGS_URL": f"zk://{zk_server.hosts}/autostart-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ZKFLAGS_SNAPSHOT_FILE": str(tmp_path / "flags.snapshot"),
    }
    code = "import django_zkflags; print('WATCHING', django_zkflags.status()['watching'])"

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("manage.py", "migrate", "--noinput", "-v0")
    # A watcher writes the disk copy as soon as it has read ZooKeeper: none was started.
    assert not (tmp_path / "flags.snapshot").exists()
    assert "WATCHING True" in run("manage.py", "shell", "-c", code)
    assert (tmp_path / "flags.snapshot").exists()
    check = run(
        "-c",
        "import sys, django; sys.argv=['manage.py','check']; django.setup();"
        "import django_zkflags; print('WATCHING', django_zkflags.status()['watching'])",
    )
    assert "WATCHING False" in check
