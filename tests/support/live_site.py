"""The example project served by real server processes against a real ZooKeeper, for the
browser tests: its own SQLite file and ZooKeeper root, any number of ``runserver
--noreload`` processes (each one watching ZooKeeper, as in production), stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .zookeeper import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "example_project"
ADMIN_USER, ADMIN_PASSWORD = "admin", "zkflags-demo"  # example/management/commands/demo_setup.py


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


class LiveSite:
    def __init__(self, zk_hosts: str, directory: Path, **settings: str) -> None:
        self.directory = directory
        self.root = f"/live-{uuid.uuid4().hex[:10]}"
        self.zk_url = f"zk://{zk_hosts}{self.root}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{directory / 'site.sqlite3'}",
            "ZKFLAGS_URL": self.zk_url,
            "ZKFLAGS_SNAPSHOT_FILE": str(directory / "flags.snapshot"),
            "DJANGO_SETTINGS_MODULE": "example.settings",
            "SECRET_KEY": "browser-tests-only",
            "DEBUG": "true",  # runserver serves the admin's static files
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            **settings,
        }
        self.servers: list[Server] = []

    def manage(self, *args: str, timeout: float = 120.0) -> str:
        proc = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def setup(self) -> LiveSite:
        self.manage("migrate", "--noinput", "-v0")
        self.manage("demo_setup")
        return self

    def serve(self, timeout: float = 60.0) -> Server:
        port = free_port()
        log = self.directory / f"server-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                cwd=EXAMPLE,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(proc, port, log)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/status/", timeout=2) as answer:
                    if answer.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer:\n{server.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def fetch_json(url: str) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())
