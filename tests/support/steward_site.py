"""A site in its own processes for the steward's system tests: a SQLite file shared by the
processes, one ZooKeeper root, short sessions (:mod:`tests.support.steward_settings`);
``manage.py zkflags ...`` runs, steward processes, and the site's audit log read straight
from its database file (the test process has a database of its own)::

    site = StewardSite(zk_server.hosts, tmp_path)
    site.django("migrate", "-v0")
    first = site.steward()                   # manage.py zkflags steward
    first.wait_acting()
    site.audit("banner")                     # [AuditRow(...), ...] oldest first
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: Bound on a wait that only a hang exceeds.
HANG_TIMEOUT = 30.0


@dataclass(frozen=True)
class AuditRow:
    flag: str
    action: str
    source: str
    username: str
    version: int | None
    at: datetime
    scheduled_for: datetime | None
    after: str | None

    @property
    def late_seconds(self) -> float | None:
        if self.scheduled_for is None:
            return None
        return (self.at - self.scheduled_for).total_seconds()


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class StewardProcess:
    """``manage.py zkflags steward`` (or another module), its stdout lines collected."""

    def __init__(self, site: StewardSite, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                env=site.env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<EOF>")
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def identifier(self) -> str:
        """``host:pid``, as it names itself in the election."""
        line = self.wait_line(lambda line: " contending for " in line or "CONTENDING" in line)
        return line.split()[1]

    def wait_line(self, predicate: Any, timeout: float = HANG_TIMEOUT, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if "<EOF>" in self.lines or remaining <= 0:
                    raise AssertionError(
                        f"line not seen in {timeout}s; stdout: {self.lines[-10:]}\n"
                        f"stderr: {self.stderr()[-3000:]}"
                    )
                self._cond.wait(remaining)

    def wait_acting(self, timeout: float = HANG_TIMEOUT) -> None:
        self.wait_line(lambda line: line.endswith(" acting"), timeout)

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(HANG_TIMEOUT)

    def terminate(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"did not exit on SIGTERM\n{self.stderr()[-3000:]}") from None


class StewardSite:
    """One site: a root, a database file, and the processes started for it."""

    def __init__(self, hosts: str, directory: Path, *, session_timeout: float = 2.0) -> None:
        self.hosts = hosts
        self.directory = Path(directory)
        self.root = f"/steward-{uuid.uuid4().hex[:10]}"
        self.url = f"zk://{hosts}{self.root}"
        self.database = self.directory / "site.sqlite3"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.support.steward_settings",
            "ZKFLAGS_URL": self.url,
            "ZKFLAGS_TEST_DB": str(self.database),
            "ZKFLAGS_TEST_SESSION_TIMEOUT": str(session_timeout),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "SITE_AUTOSTART": "1",
        }
        self.started: list[StewardProcess] = []

    def django(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def steward(self, module: str | None = None) -> StewardProcess:
        """``manage.py zkflags steward``, or ``python -m module``."""
        args = ["-m", module] if module else ["-m", "django", "zkflags", "steward"]
        log = self.directory / f"steward-{len(self.started)}.stderr"
        process = StewardProcess(self, args, log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.proc.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.started = []

    def audit(self, flag: str) -> list[AuditRow]:
        """The site's audit rows of ``flag``, oldest first, read from its database file."""
        with contextlib.closing(sqlite3.connect(self.database, timeout=20)) as db:
            rows = db.execute(
                "SELECT flag_name, action, source, username, zk_version, at, scheduled_for, "
                "after FROM django_zkflags_flagchange WHERE flag_name = ? ORDER BY id",
                (flag,),
            ).fetchall()
        return [
            AuditRow(r[0], r[1], r[2], r[3], r[4], _utc(r[5]), _utc(r[6]), r[7])  # type: ignore[arg-type]
            for r in rows
        ]
