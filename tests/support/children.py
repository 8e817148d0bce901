"""Start flag-watcher processes (``tests/support/flagwatcher.py``) and read what they say.

Shared by the tests and the benchmark::

    with Children(tmp_path) as children:      # kills whatever is left at the end
        child = children.spawn(url, "banner", snapshot_file=path, startup_timeout=1.0)
        child.wait_value(active=True, version=0, source="zookeeper")
        status = child.ask("status")
        seconds = child.close()                # EOF on stdin; raises if it hangs

A thread per child reads its JSON lines into ``child.events``. To show that something
did not happen, wait for a later sentinel first (``events_before``), never sleep. Every
wait has a generous bound that only catches hangs; when it runs out (or the process exits first) the
AssertionError says what was awaited, shows the last events and the tail of the child's
stderr (kept in a file), after asking a still running child for its threads' stacks.
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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["EXIT_TIMEOUT", "HANG_TIMEOUT", "Child", "Children", "is_value"]

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = "tests.support.flagwatcher"

#: Default bound of a wait for an event: only a hang takes this long.
HANG_TIMEOUT = 30.0
#: Default bound for a child to exit once told to.
EXIT_TIMEOUT = 10.0

Event = dict[str, Any]
Predicate = Callable[[Event], Any]


def is_value(event: Event) -> bool:
    """An event that carries the flag's state (``ready`` or ``value``)."""
    return event.get("event") in ("ready", "value")


class Child:
    """One flag-watcher process and every event it printed so far."""

    def __init__(
        self,
        url: str,
        flag: str,
        *,
        stderr_path: Path,
        snapshot_file: str | Path | None = None,
        startup_timeout: float | None = None,
        session_timeout: float | None = None,
        fork: bool = False,
    ) -> None:
        self.flag = flag
        args = [url, flag]
        if snapshot_file:
            args += ["--snapshot-file", str(snapshot_file)]
        if startup_timeout is not None:
            args += ["--startup-timeout", str(startup_timeout)]
        if session_timeout is not None:
            args += ["--session-timeout", str(session_timeout)]
        if fork:
            args.append("--fork")
        self.args = args
        self.stderr_path = Path(stderr_path)
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", PROGRAM, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env=env,
                text=True,
                bufsize=1,
                start_new_session=True,  # its own process group: a forked half is killed too
            )
        self.events: list[Event] = []
        self.eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"child-{self.pid}", daemon=True)
        self._reader.start()

    # -- reading ----------------------------------------------------------------------------

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

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def mark(self) -> int:
        """The index of the next event: pass it as ``after`` to wait only for newer ones."""
        with self._cond:
            return len(self.events)

    def find(self, predicate: Predicate, after: int = 0) -> Event | None:
        """The first event from index ``after`` on that satisfies ``predicate``, if any."""
        with self._cond:
            return next((e for e in self.events[after:] if predicate(e)), None)

    def wait_or_none(
        self, predicate: Predicate, timeout: float = HANG_TIMEOUT, after: int = 0
    ) -> Event | None:
        """Like :meth:`wait_for`, but None when not seen in time (or the output ended)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            checked = after
            while True:
                for event in self.events[checked:]:
                    if predicate(event):
                        return event
                checked = max(checked, len(self.events))
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def wait_for(
        self,
        predicate: Predicate,
        timeout: float = HANG_TIMEOUT,
        after: int = 0,
        what: str = "the expected event",
    ) -> Event:
        """The first event from index ``after`` on that satisfies ``predicate``; waits for it
        up to ``timeout`` seconds (a hang catcher), else AssertionError."""
        event = self.wait_or_none(predicate, timeout, after)
        if event is None:
            why = "the process's output ended" if self.eof else f"not seen within {timeout}s"
            raise AssertionError(f"{what}: {why}\n{self.describe()}")
        return event

    def wait_value(
        self,
        timeout: float = HANG_TIMEOUT,
        role: str | None = None,
        after: int = 0,
        **expected: Any,
    ) -> Event:
        """The first ``ready``/``value`` event (of ``role``) with every field as expected."""

        def matches(event: Event) -> bool:
            return (
                is_value(event)
                and (role is None or event.get("role") == role)
                and all(event.get(key) == value for key, value in expected.items())
            )

        what = f"a value {expected}" + (f" from the {role}" if role else "")
        return self.wait_for(matches, timeout, after, what)

    def events_before(
        self, sentinel: Predicate, after: int = 0, timeout: float = HANG_TIMEOUT
    ) -> list[Event]:
        """A barrier, to show that something did *not* happen: wait for the ``sentinel``
        event (the report of a later change the test made), then return the events from
        index ``after`` up to it. The child reports in order, so whatever it was going to
        report about anything earlier is in them."""
        event = self.wait_for(sentinel, timeout, after, "the sentinel event")
        with self._cond:
            end = next(i for i in range(after, len(self.events)) if self.events[i] is event)
            return self.events[after:end]

    def ready(self, timeout: float = HANG_TIMEOUT, role: str | None = None) -> Event:
        return self.wait_for(
            lambda e: e.get("event") == "ready" and (role is None or e.get("role") == role),
            timeout,
            what=f"ready{f' ({role})' if role else ''}",
        )

    # -- commands ---------------------------------------------------------------------------

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:  # exited, or stdin closed
            raise AssertionError(f"cannot send {line!r}: {exc}\n{self.describe()}") from None

    def ask(self, command: str, timeout: float = HANG_TIMEOUT) -> Event:
        """Send a command (``status``, ``state``, ``rss``) and wait for its answer."""
        after = self.mark()
        self.send(command)
        reply = self.wait_for(
            lambda e: e.get("event") in (command, "error"), timeout, after, f"answer to {command}"
        )
        assert reply["event"] == command, f"{reply}\n{self.describe()}"
        return reply

    def status(self, timeout: float = HANG_TIMEOUT) -> Event:
        return self.ask("status", timeout)

    # -- ending -----------------------------------------------------------------------------

    def close(self, timeout: float = EXIT_TIMEOUT) -> float:
        """End it with EOF on stdin; the seconds it took to exit. A child still running after
        ``timeout`` is killed, and AssertionError raised."""
        started = time.monotonic()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        return self._wait_exit(timeout, started)

    def terminate(self, timeout: float = EXIT_TIMEOUT) -> float:
        """End it with SIGTERM; like :meth:`close` otherwise."""
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        return self._wait_exit(timeout, started)

    def _wait_exit(self, timeout: float, started: float) -> float:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            message = f"the process did not exit within {timeout}s\n{self.describe()}"
            self.kill()
            raise AssertionError(message) from None
        elapsed = time.monotonic() - started
        self._reader.join(5)
        return elapsed

    def kill(self) -> None:
        """SIGKILL its whole process group (a forked half too) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._reader.join(5)

    # -- diagnosis --------------------------------------------------------------------------

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self, events: int = 20, stderr_chars: int = 3000) -> str:
        """The command, exit status, last events and stderr tail, for assertion messages.
        A child still running is asked for its threads' stacks first (SIGUSR1)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGUSR1)
            time.sleep(0.3)  # let faulthandler write them; diagnosis only
        with self._cond:
            tail = "\n".join(json.dumps(e) for e in self.events[-events:])
        return (
            f"flagwatcher {' '.join(self.args)} (pid {self.pid}) rc={self.proc.poll()}\n"
            f"last events:\n{tail}\nstderr ({self.stderr_path}):\n"
            f"{self.stderr_text()[-stderr_chars:]}"
        )

    def assert_clean_exit(self, reason: str) -> None:
        """Exited with status 0, saying ``reason`` last, without a traceback."""
        assert self.proc.returncode == 0, self.describe()
        exits = [e for e in self.events if e.get("event") == "exit"]
        assert exits and self.events[-1] is exits[-1], self.describe()
        assert exits[-1]["reason"] == reason, self.describe()
        assert "Traceback" not in self.stderr_text(), self.describe()


class Children:
    """The flag-watcher processes of one test (or benchmark): each child's stderr goes to a
    file in ``log_dir``; whatever still runs at the end is killed."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.started: list[Child] = []

    def spawn(self, url: str, flag: str, **options: Any) -> Child:
        """Start a child watching ``flag`` (options: see :class:`Child`)."""
        stderr_path = self.log_dir / f"flagwatcher-{len(self.started)}.stderr"
        child = Child(url, flag, stderr_path=stderr_path, **options)
        self.started.append(child)
        return child

    def close_all(self, timeout: float = EXIT_TIMEOUT) -> None:
        """EOF to every child still running; kill those not gone within ``timeout``."""
        live = [child for child in self.started if child.alive]
        for child in live:
            if child.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    child.proc.stdin.close()
        deadline = time.monotonic() + timeout
        for child in live:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            child.kill()

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_all()
