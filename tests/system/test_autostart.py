"""Which processes start a watcher in AppConfig.ready: real ``manage.py`` processes of the
example project against the session's ZooKeeper."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"


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
