"""Several operating-system processes around one real ZooKeeper.

The test process writes flags; other processes (``tests/proc_watcher.py``, a minimal Django
process whose ``AppConfig.ready`` starts the watcher) report what they serve, line by line.
Outages are real: the session's ZooKeeper server is stopped and started again. Every bound
below is a hang catcher, not a benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_zkflags.runtime import FILE_HEADER
from django_zkflags.snapshot import decode_entries
from tests.support.zookeeper import ZooKeeperServer

from .conftest import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "proc_watcher.py"

#: How long a change may take to reach another process before we call it a hang.
CHANGE_BOUND = 10.0
#: How long a process may take to exit after EOF/SIGTERM, ZooKeeper up or down.
EXIT_BOUND = 5.0
#: proc_watcher.py's STARTUP_TIMEOUT while ZooKeeper is down (the package default).
STARTUP_TIMEOUT = 1.0


class WatcherProcess:
    """One ``proc_watcher.py`` process and the JSON lines it printed so far."""

    def __init__(self, args: list[str], stderr_path: Path) -> None:
        self.args = args
        self.stderr_path = stderr_path
        self.started_at = time.monotonic()
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                text=True,
            )
        self.events: list[dict[str, Any]] = []
        self.eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "garbage", "line": line}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def describe(self) -> str:
        if self.proc.poll() is None:
            # Ask every live process of the group for its thread stacks (proc_watcher's
            # SIGUSR1 handler), to show where it hangs.
            for pid in {e["pid"] for e in self.events if "pid" in e} | {self.proc.pid}:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGUSR1)
            time.sleep(0.3)
        stderr = self.stderr_path.read_text(errors="replace")[-3000:]
        events = "\n".join(json.dumps(e) for e in self.events[-20:])
        return f"process {self.args} rc={self.proc.poll()}\nevents:\n{events}\nstderr:\n{stderr}"

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, after: int = 0
    ) -> dict[str, Any]:
        """The first event from index ``after`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    why = "exited" if self.eof else f"not seen within {timeout}s"
                    raise AssertionError(f"expected event {why}\n{self.describe()}")
                self._cond.wait(remaining)

    def wait_value(
        self, timeout: float = CHANGE_BOUND, role: str | None = None, **expected: Any
    ) -> dict[str, Any]:
        def matches(event: dict[str, Any]) -> bool:
            if event["event"] not in ("value", "ready"):
                return False
            if role is not None and event["role"] != role:
                return False
            return all(event.get(key) == value for key, value in expected.items())

        return self.wait_for(matches, timeout)

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        with self._cond:
            after = len(self.events)
        self.send("status")
        return self.wait_for(lambda e: e["event"] == "status", timeout, after)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _wait_exit(self, timeout: float, started: float) -> float:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"process did not exit within {timeout}s\n{self.describe()}"
            ) from None
        self._reader.join(5)
        return time.monotonic() - started

    def close(self, timeout: float = EXIT_BOUND) -> float:
        """End it with EOF on stdin; how long it took to exit."""
        started = time.monotonic()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self._wait_exit(timeout, started)

    def terminate(self, timeout: float = EXIT_BOUND) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return self._wait_exit(timeout, started)

    def assert_clean_exit(self, reason: str) -> None:
        assert self.proc.returncode == 0, self.describe()
        assert self.events[-1]["event"] == "exit", self.describe()
        assert self.events[-1]["reason"] == reason, self.describe()
        assert "Traceback" not in self.stderr_path.read_text(errors="replace"), self.describe()


@pytest.fixture
def watchers(tmp_path: Path) -> Iterator[Callable[..., WatcherProcess]]:
    """Start ``proc_watcher.py`` processes; any still running at the end is killed."""
    started: list[WatcherProcess] = []

    def start(
        url: str, flag: str, *, snapshot_file: Path | None = None, fork: bool = False
    ) -> WatcherProcess:
        args = [url, flag, "--startup-timeout", str(STARTUP_TIMEOUT)]
        if snapshot_file is not None:
            args += ["--snapshot-file", str(snapshot_file)]
        if fork:
            args.append("--fork")
        process = WatcherProcess(args, tmp_path / f"watcher-{len(started)}.stderr")
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


@pytest.fixture
def restore_server(zk_server: ZooKeeperServer) -> Iterator[ZooKeeperServer]:
    """Whatever a test does to the session's server, it is serving again afterwards."""
    try:
        yield zk_server
    finally:
        zk_server.start()


def wait_connected(zkflags: Any) -> None:
    """This process's own client is back (writes need it)."""
    wait_until(lambda: zkflags.runtime.client.connected, timeout=15.0)


def wait_disconnected(process: WatcherProcess) -> dict[str, Any]:
    return wait_until(
        lambda: (s := process.status())["status"]["connected"] is False and s,
        timeout=15.0,
        interval=0.1,
    )


def read_snapshot_file(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    header, _, data = raw.partition(b"\n")
    assert header.startswith(FILE_HEADER), raw[:80]
    return decode_entries(data)


@pytest.mark.django_db
def test_change_reaches_another_process_across_an_outage(zkflags, watchers, restore_server):
    from django_zkflags.models import Flag

    # The admin's path: a model save writes ZooKeeper (services.save_flag).
    flag = Flag.objects.create(name="banner", everyone=True)
    child = watchers(zkflags.url, "banner")
    child.wait_value(active=True, version=flag.zk_version, source="zookeeper")

    flag.everyone = False
    flag.save()
    assert flag.zk_version == 1
    seen = child.wait_value(active=False, version=1)
    assert seen["source"] == "zookeeper"

    zkflags.server.stop()
    try:
        status = wait_disconnected(child)
        # Still running, still serving the last value it had.
        assert child.proc.poll() is None
        assert (status["flag"]["active"], status["flag"]["version"]) == (False, 1)
        assert status["status"]["source"] == "zookeeper"
        assert status["status"]["watching"] is True
    finally:
        zkflags.server.start()

    wait_connected(zkflags)
    flag.everyone = True
    flag.save()
    assert flag.zk_version == 2
    child.wait_value(active=True, version=2, source="zookeeper")
    assert child.status()["status"]["connected"] is True

    assert child.close() < EXIT_BOUND
    child.assert_clean_exit("eof")


def test_process_started_while_zookeeper_is_down(zkflags, watchers, restore_server, tmp_path):
    snapshot_file = tmp_path / "flags.snapshot"
    version = zkflags.write("banner", everyone=True)

    # An earlier process leaves its disk copy behind.
    first = watchers(zkflags.url, "banner", snapshot_file=snapshot_file)
    first.wait_value(active=True, version=version, source="zookeeper")
    wait_until(lambda: (read_snapshot_file(snapshot_file) or {}).get("banner"))
    assert read_snapshot_file(snapshot_file)["banner"]["version"] == version
    first.close()
    first.assert_clean_exit("eof")

    zkflags.server.stop()
    try:
        # Two processes start with ZooKeeper away; both come up promptly on the disk copy.
        second = watchers(zkflags.url, "banner", snapshot_file=snapshot_file)
        third = watchers(zkflags.url, "banner", snapshot_file=snapshot_file)
        for process in (second, third):
            ready = process.wait_for(lambda e: e["event"] == "ready", timeout=20.0)
            assert ready["startup_seconds"] < STARTUP_TIMEOUT + 3.0, process.describe()
            assert ready["source"] == "file", process.describe()
            assert (ready["active"], ready["version"]) == (True, version)

        # Ended while ZooKeeper is down: exits promptly (no hang in kazoo's exit hook).
        assert third.terminate() < EXIT_BOUND
        third.assert_clean_exit("sigterm")

        zkflags.server.start()
        # ZooKeeper is back: the process catches up (same flag, now from ZooKeeper).
        second.wait_value(active=True, version=version, source="zookeeper", timeout=15.0)
        wait_connected(zkflags)
        newer = zkflags.write("banner", everyone=False)
        second.wait_value(active=False, version=newer, source="zookeeper")

        zkflags.server.stop()
        status = wait_disconnected(second)
        assert (status["flag"]["active"], status["flag"]["version"]) == (False, newer)
        assert second.close() < EXIT_BOUND
        second.assert_clean_exit("eof")
    finally:
        zkflags.server.start()
    # The disk copy followed the change the second process saw.
    assert read_snapshot_file(snapshot_file)["banner"]["version"] == newer


def test_forked_child_has_a_watcher_of_its_own(zkflags, watchers):
    version = zkflags.write("banner", everyone=True)
    process = watchers(zkflags.url, "banner", fork=True)
    parent = process.wait_for(lambda e: e["event"] == "ready" and e["role"] == "parent", 20.0)
    child = process.wait_for(lambda e: e["event"] == "ready" and e["role"] == "child", 20.0)
    assert child["pid"] != parent["pid"] and child["parent"] == parent["pid"]
    # The child serves the inherited snapshot at once.
    assert (child["active"], child["version"]) == (True, version)

    # Changes after the fork reach both halves: the child's watch thread is its own
    # (threads do not survive fork()), and the parent's still works.
    for everyone in (False, True):
        version = zkflags.write("banner", everyone=everyone)
        for role in ("parent", "child"):
            process.wait_value(role=role, active=everyone, version=version)

    assert process.close() < EXIT_BOUND + 2
    assert process.proc.returncode == 0, process.describe()
    exits = {e["role"]: e for e in process.events if e["event"] == "exit"}
    # EOF reaches both halves (they share stdin); the parent also SIGTERMs the child.
    assert exits["child"]["reason"] in ("eof", "sigterm"), process.describe()
    assert exits["parent"]["reason"] == "eof" and exits["parent"]["child_exit"] == 0
    assert "Traceback" not in process.stderr_path.read_text(), process.describe()
