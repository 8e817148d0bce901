"""Pre-fork servers and gevent: every worker gets its own session and sees every change.

Real processes against the session's real ZooKeeper: gunicorn (sync and gevent workers,
with and without ``--preload``) serving the project in ``tests/prefork/``, a script that
forks workers by hand the way uWSGI does, and gunicorn shutting down while ZooKeeper is
unreachable. Flags are flipped in this process through the ``zkflags`` fixture (its
FlagWriter).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.tcpproxy import TcpProxy

from ..conftest import IN_CI, wait_until

if not IN_CI:  # both are in the `test` extra: CI must have them, so there it fails instead
    pytest.importorskip("gunicorn", reason="pip install -e .[test]")
    pytest.importorskip("gevent", reason="pip install -e .[test]")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFORK = REPO / "tests" / "prefork"
FLAG = "banner"
SEEN_WITHIN = 15.0  # generous: a change reaches a watcher in milliseconds here
THREADING, GEVENT = "SequentialThreadingHandler", "SequentialGeventHandler"


# -- helpers ---------------------------------------------------------------------------------


def child_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the project's own, not the test suite's
    env["ZKFLAGS_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def gunicorn_command() -> list[str]:
    script = Path(sys.executable).with_name("gunicorn")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]
    from gunicorn.config import KNOWN_SETTINGS

    # gunicorn >= 24 opens a control socket at one fixed path per user: not for tests.
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        command.append("--no-control-socket")
    return command


def kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def watchers_of(server: Any, path: str) -> set[str]:
    """Session ids that hold a watch on ``path``, from the server's ``wchp``."""
    sessions: set[str] = set()
    current = None
    for line in server.four_letter("wchp").splitlines():
        if line.startswith("\t"):
            if current == path:
                sessions.add(line.strip())
        else:
            current = line.strip()
    return sessions


def session_hex(runtime: Any) -> str:
    return f"0x{runtime.client.client_id[0]:x}"


class Gunicorn:
    """One gunicorn master (in its own process group) serving tests.prefork."""

    def __init__(self, args: list[str], url: str, log: Path) -> None:
        # Port 0: the kernel picks a free port at bind time (a port picked here and bound
        # later could be taken meanwhile); the master logs the one it got.
        self.port: int | None = None
        self.log = log
        command = [
            *gunicorn_command(),
            *args,
            "--bind",
            "127.0.0.1:0",
            "--graceful-timeout",
            "30",  # a worker hung at exit would hold the master this long
            "--timeout",
            "60",
            "--chdir",
            str(REPO),
            "tests.prefork.wsgi:application",
        ]
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env(url),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def listening_port(self) -> int | None:
        match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.output())
        return int(match.group(1)) if match else None

    def state(self, hold: float = 0.0) -> dict[str, Any]:
        assert self.port is not None, "not listening yet"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", f"/state/{FLAG}/?hold={hold}")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, body[:2000]
            return json.loads(body)
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.output()}")
            if self.port is None:
                self.port = self.listening_port()
                if self.port is None:
                    return False
            try:
                self.state()
            except OSError:
                return False
            return True

        wait_until(answers, timeout, interval=0.05)

    def workers(self, count: int, timeout: float = 30.0) -> dict[int, dict[str, Any]]:
        """Hit the server until ``count`` distinct workers answered; their states by pid."""
        seen: dict[int, dict[str, Any]] = {}

        def all_seen() -> bool:
            seen.update(self._round(count))
            assert len(seen) <= count, f"more workers than started: {sorted(seen)}"
            return len(seen) == count

        wait_until(all_seen, timeout, interval=0)
        return seen

    def wait_workers(
        self,
        pids: set[int],
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = SEEN_WITHIN,
    ) -> dict[int, dict[str, Any]]:
        """Poll until every worker in ``pids`` answered with a state that satisfies
        ``predicate``; a worker that was replaced (a pid not in ``pids``) is a failure."""
        latest: dict[int, dict[str, Any]] = {}

        def every_worker() -> bool:
            for pid, state in self._round(len(pids)).items():
                assert pid in pids, f"a worker was replaced: {pid} not in {sorted(pids)}"
                latest[pid] = state
            return set(latest) == pids and all(predicate(s) for s in latest.values())

        try:
            wait_until(every_worker, timeout, interval=0)
        except AssertionError:
            raise AssertionError(f"workers: {latest}\n{self.output()[-4000:]}") from None
        return latest

    def _round(self, workers: int) -> dict[int, dict[str, Any]]:
        # Each request holds its worker (the whole process, even under gevent) for a
        # moment, so concurrent requests have to be accepted by different workers.
        with ThreadPoolExecutor(2 * workers) as pool:
            states = list(pool.map(lambda _: self.state(hold=0.1), range(2 * workers)))
        return {s["pid"]: s for s in states}

    def terminate(self) -> float:
        """SIGTERM to the master; seconds until it exited (bounded by the caller's kill)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(25)
        except subprocess.TimeoutExpired:
            pass
        return time.monotonic() - started

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
        finally:
            kill_group(self.proc)
            self._log_file.close()


@contextlib.contextmanager
def gunicorn(args: list[str], url: str, log: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(args, url, log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def flag_is(active: bool, version: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["active"] is active and s["version"] == version


def own_session(s: dict[str, Any]) -> bool:
    return bool(s["connected"] and s["watching"] and s["session"] and s["reads"] >= 1)


# -- 1 and 3: gunicorn -----------------------------------------------------------------------

GUNICORN_SETUPS = {
    # name: (arguments, workers, handler, preload)
    "sync-preload": (["--preload", "--workers", "3"], 3, THREADING, True),
    # The gevent worker patches in the worker, after the fork: without --preload the app
    # (and its client) is loaded after patching.
    "gevent": (["--worker-class", "gevent", "--workers", "2"], 2, GEVENT, False),
    # With --preload the master must be patched before it loads the app (a config file
    # that calls monkey.patch_all()). Unpatched, the worker's client is started at fork,
    # before gunicorn patches: kazoo's threading handler in a gevent process. Not supported.
    "gevent-preload-patched-master": (
        [
            "--config",
            str(PREFORK / "gevent_conf.py"),
            "--worker-class",
            "gevent",
            "--preload",
            "--workers",
            "2",
        ],
        2,
        GEVENT,
        True,
    ),
}


@pytest.mark.parametrize("setup", list(GUNICORN_SETUPS))
def test_gunicorn_workers_each_follow_flags_with_their_own_session(
    zkflags: Any, tmp_path: Path, setup: str
) -> None:
    args, count, handler, preload = GUNICORN_SETUPS[setup]
    version = zkflags.write(FLAG, everyone=False)
    with gunicorn(args, zkflags.url, tmp_path / "gunicorn.log") as server:
        pids = set(server.workers(count))
        assert server.proc.pid not in pids

        states = server.wait_workers(pids, lambda s: own_session(s) and flag_is(False, version)(s))
        for pid, state in states.items():
            assert state["ppid"] == server.proc.pid
            assert state["runtime_pid"] == pid  # not the runtime inherited from the master
            assert state["handler"] == handler
            assert state["gevent_patched"] is (handler == GEVENT)
            assert state["source"] == "zookeeper"
            assert "zkflags-watch" in state["threads"]
        sessions = {s["session"] for s in states.values()}
        assert len(sessions) == count, states

        # Every worker's session holds the watch on the snapshot, and so do this process
        # and (after --preload) the master, which keeps its own session after forking.
        mine = session_hex(zkflags.runtime)
        assert mine not in sessions
        watching = watchers_of(zkflags.server, f"{zkflags.root}/snapshot")
        assert sessions | {mine} <= watching, (sessions, mine, watching)
        masters = watching - sessions - {mine}
        assert len(masters) == (1 if preload else 0), (watching, sessions, mine)

        for active in (True, False, True):
            version = zkflags.write(FLAG, everyone=active)
            states = server.wait_workers(pids, flag_is(active, version))
            assert {s["session"] for s in states.values()} == sessions  # no reconnects

        assert server.proc.poll() is None
    output = server.output()  # including the shutdown
    assert "Traceback" not in output, output


# -- 2 and 3: forking by hand (uWSGI without lazy-apps), and a gevent-patched script ---------


class FlagProcesses:
    """tests/prefork/flagproc.py and the JSON lines its processes write."""

    def __init__(self, url: str, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PREFORK / "flagproc.py"), FLAG, *args],
            cwd=REPO,
            env=child_env(url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.latest: dict[int, dict[str, Any]] = {}
        self.exits: dict[int, int] = {}
        self.stderr = b""
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            record = json.loads(line)
            with self._lock:
                if record["role"] == "exit":
                    self.exits[record["pid"]] = record["code"]
                else:
                    self.latest[record["pid"]] = record

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait(
        self, count: int, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[int, dict[str, Any]]:
        def ready() -> dict[int, dict[str, Any]] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.stderr.decode()}")
            with self._lock:
                latest = dict(self.latest)
            assert len(latest) <= count, latest
            if len(latest) == count and all(predicate(s) for s in latest.values()):
                return latest
            return None

        try:
            return wait_until(ready, SEEN_WITHIN, interval=0.01)
        except AssertionError:
            raise AssertionError(f"{self.latest}\n{self.stderr.decode()[-4000:]}") from None

    def finish(self, timeout: float = 15.0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # EOF: every process stops
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code


@pytest.mark.parametrize(
    ("args", "children", "handler"),
    [
        pytest.param(["--fork", "3"], 3, THREADING, id="fork"),
        pytest.param(["--gevent"], 0, GEVENT, id="gevent"),
        pytest.param(["--gevent", "--fork", "2"], 2, GEVENT, id="gevent-fork"),
    ],
)
def test_script_processes_follow_flags(
    zkflags: Any, args: list[str], children: int, handler: str
) -> None:
    version = zkflags.write(FLAG, everyone=False)
    procs = FlagProcesses(zkflags.url, args)
    try:
        states = procs.wait(children + 1, lambda s: own_session(s) and flag_is(False, version)(s))
        (parent,) = [s for s in states.values() if s["role"] == "parent"]
        kids = [s for s in states.values() if s["role"] == "child"]
        assert len(kids) == children
        for state in states.values():
            assert state["handler"] == handler
            assert state["gevent_patched"] is (handler == GEVENT)
            assert state["runtime_pid"] == state["pid"]
        for kid in kids:
            assert kid["ppid"] == parent["pid"]
        sessions = {s["session"] for s in states.values()}
        assert len(sessions) == children + 1, states
        parent_session = parent["session"]

        for active in (True, False):
            version = zkflags.write(FLAG, everyone=active)
            states = procs.wait(children + 1, flag_is(active, version))
            assert {s["session"] for s in states.values()} == sessions
        # The parent kept its session and serves on: forking did not close or share it.
        assert states[parent["pid"]]["session"] == parent_session
        assert states[parent["pid"]]["connected"] is True

        assert procs.finish() == 0
        assert sorted(procs.exits) == sorted(k["pid"] for k in kids)
        assert set(procs.exits.values()) <= {0}
        stderr = procs.stderr.decode(errors="replace")
        # e.g. a greenlet of the parent's client reading the shared socket in a child
        # shows up as "xids do not match" tracebacks; a hung close as a warning.
        assert "Traceback" not in stderr, stderr
        assert "did not close" not in stderr, stderr
    finally:
        kill_group(procs.proc)


# -- 4: shutting down while ZooKeeper is unreachable -----------------------------------------


@pytest.mark.parametrize(
    ("setup", "outage"),
    [
        ("sync-preload", "block"),
        ("sync-preload", "pause"),
        ("gevent", "pause"),
        ("gevent-preload-patched-master", "pause"),
    ],
)
def test_gunicorn_stops_promptly_while_zookeeper_is_unreachable(
    zkflags: Any, tmp_path: Path, setup: str, outage: str
) -> None:
    """``block``: connections are reset and refused; ``pause``: they stay open and silent
    (the worst case for a client that says goodbye to the server at exit: kazoo's own
    close then waits for its read timeout, in every worker and then in the master)."""
    args, count, _handler, _preload = GUNICORN_SETUPS[setup]
    version = zkflags.write(FLAG, everyone=True)
    proxy = TcpProxy("127.0.0.1", zkflags.server.port).start()
    url = f"zk://{proxy.hosts}{zkflags.root}"
    server = Gunicorn(args, url, tmp_path / "gunicorn.log")
    try:
        server.wait_ready()
        pids = set(server.workers(count))
        server.wait_workers(pids, lambda s: own_session(s) and flag_is(True, version)(s))

        if outage == "block":
            proxy.block()
            # Workers notice, and go on serving the last snapshot meanwhile.
            states = server.wait_workers(pids, lambda s: not s["connected"])
            assert all(s["active"] is True for s in states.values())
        else:
            proxy.pause()

        took = server.terminate()
        output = server.output()
        assert server.proc.returncode is not None, f"master still running after {took:.1f}s"
        # About 2-3 s here; an unbounded close at exit took 16 s (pause), so 10 s catches it.
        assert took < 10.0, f"shutdown took {took:.1f}s\n{output}"
        assert server.proc.returncode == 0, output
        for pid in pids:
            assert f"Worker exiting (pid: {pid})" in output, output
            wait_until(lambda pid=pid: process_gone(pid), 5.0, interval=0.05)
        assert "SIGKILL" not in output and "WORKER TIMEOUT" not in output, output
    finally:
        server.stop()
        proxy.stop()
