"""The example project end to end: migrate, demo set-up, serve, flip a flag, see it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.support.zookeeper import free_port

from ..conftest import wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.mark.slow
def test_example_project_serves_flag_flips(zk_server, tmp_path):
    env = {
        **os.environ,
        "ZKFLAGS_URL": f"zk://{zk_server.hosts}/example-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "example.settings",
        "ZKFLAGS_SNAPSHOT_FILE": str(tmp_path / "flags.snapshot"),
    }
    manage = [sys.executable, "manage.py"]

    def run(*args: str) -> str:
        done = subprocess.run(
            [*manage, *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("migrate", "--noinput", "-v0")
    assert "password: zkflags-demo" in run("demo_setup")
    log = tmp_path / "runserver.log"

    def start_server() -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
                cwd=EXAMPLE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return proc, port

    server, port = start_server()
    try:

        def page() -> str:
            try:
                return _get(f"http://127.0.0.1:{port}/")
            except OSError:
                return ""

        def first_page() -> str:
            nonlocal server, port
            # The port is picked before runserver binds it: if something took it meanwhile
            # (nothing to do with the app), start again on another one.
            if server.poll() is not None and "already in use" in log.read_text(errors="replace"):
                server, port = start_server()
            assert server.poll() is None, log.read_text(errors="replace")
            return page()

        assert 'id="banner"' in wait_until(first_page, timeout=30, interval=0.2)
        home = f"http://127.0.0.1:{port}/"
        run("zkflags", "set", "banner", "--off")
        wait_until(lambda: 'id="no-banner"' in page(), timeout=15, interval=0.05)
        run("zkflags", "set", "banner", "--on")
        wait_until(lambda: 'id="banner"' in page(), timeout=15, interval=0.05)
        # A live value: edit it, the page follows.
        assert "Hello from ZooKeeper." in page()
        run("zkflags", "set", "welcome-text", "--value", '"Changed live"')
        wait_until(lambda: "Changed live" in page(), timeout=15, interval=0.05)
        # /beta/ is behind @flag_required(redirect_to="home"): an anonymous visitor is sent home.
        with urllib.request.urlopen(f"{home}beta/", timeout=5) as response:
            assert response.geturl() == home
    finally:
        server.terminate()
        server.wait(10)
    start = time.monotonic()
    assert "Admin user" in run("demo_setup")  # idempotent on a second run
    assert time.monotonic() - start < 60
