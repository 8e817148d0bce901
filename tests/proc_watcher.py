"""A minimal Django process that watches one flag and reports every change on stdout.

Run as a separate OS process by the tests (and by the benchmark)::

    python tests/proc_watcher.py URL FLAG [--snapshot-file PATH] [--fork]
                                          [--startup-timeout S] [--session-timeout S]

It configures Django in code (``django_zkflags`` with ``AUTOSTART``, an in-memory SQLite
database), calls ``django.setup()`` -- so ``AppConfig.ready`` starts the watcher exactly as
in a real site -- and then writes one JSON object per line to stdout, flushed at once:

``{"event": "ready", ...}``
    once, after ``django.setup()`` returned; ``startup_seconds`` is how long it took.
``{"event": "value", ...}``
    each time the flag's observed state changes: ``active`` (the answer of
    ``flag_is_active_for_user(None, FLAG)``), ``version`` (the flag's znode version in the
    snapshot, None when absent) or ``source`` ("zookeeper", "file", "empty").
``{"event": "status", ...}``
    in answer to a ``status`` line on stdin: ``django_zkflags.status()`` plus the flag.
``{"event": "exit", ...}``
    just before exiting.

Every line carries ``pid``, ``role`` ("main", or "parent"/"child" with ``--fork``),
``t_wall`` (``time.time()``) and ``t_mono`` (``time.monotonic()``, comparable between
processes on one Linux machine), so a benchmark can measure write-to-visible latency.

It exits with status 0 on EOF on stdin or on SIGTERM; SIGUSR1 dumps every thread's stack
to stderr (to see where a process hangs). With ``--fork`` the process forks
once after start-up (like gunicorn ``--preload``); both halves report, and the parent ends
the child before exiting.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Reporter:
    """Emit the flag's state on stdout whenever it changes."""

    def __init__(self, flag: str, role: str) -> None:
        self.flag = flag
        self.role = role
        self.lock = threading.Lock()
        self.last: tuple[object, ...] | None = None

    def observe(self) -> dict[str, object]:
        from django_zkflags import flag_is_active_for_user
        from django_zkflags.cache import store

        snapshot = store.current
        rule = snapshot.flags.get(self.flag)
        return {
            "active": flag_is_active_for_user(None, self.flag),
            "version": rule.version if rule is not None else None,
            "source": snapshot.source,
            "zxid": snapshot.zxid,
        }

    def emit(self, event: str, **fields: object) -> None:
        record = {
            "event": event,
            "pid": os.getpid(),
            "role": self.role,
            "t_wall": time.time(),
            "t_mono": time.monotonic(),
            **fields,
        }
        line = json.dumps(record, default=str) + "\n"
        with self.lock:
            # One write per line, so that lines of a forked pair never interleave.
            sys.stdout.write(line)
            sys.stdout.flush()

    def check(self) -> None:
        state = self.observe()
        key = (state["active"], state["version"], state["source"])
        with self.lock:
            if key == self.last:
                return
            self.last = key
        self.emit("value", **state)

    def status(self) -> None:
        import django_zkflags
        from django_zkflags import runtime

        status = dict(django_zkflags.status())
        current = runtime._runtime
        if current is not None and current.client.client_id is not None:
            status["session_id"] = hex(current.client.client_id[0])
        self.emit("status", flag=self.observe(), status=status)


def configure(args: argparse.Namespace) -> None:
    from django.conf import settings

    zkflags = {"AUTOSTART": True, "SNAPSHOT_FILE": args.snapshot_file or None}
    if args.startup_timeout is not None:
        zkflags["STARTUP_TIMEOUT"] = args.startup_timeout
    if args.session_timeout is not None:
        zkflags["SESSION_TIMEOUT"] = args.session_timeout
    settings.configure(
        DEBUG=False,
        SECRET_KEY="proc-watcher",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_zkflags",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        ZKFLAGS_URL=args.url,
        ZKFLAGS=zkflags,
    )


def serve(reporter: Reporter, done: threading.Event, reasons: list[str]) -> None:
    """Report changes until ``done`` (stdin EOF or SIGTERM)."""
    from django_zkflags.signals import flag_changed

    def on_changed(sender: object, names: frozenset[str], **kwargs: object) -> None:
        if reporter.flag in names:
            reporter.check()  # on the watcher thread: reported as soon as published

    flag_changed.connect(on_changed, weak=False)

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "status":
                reporter.status()
        reasons.append("eof")
        done.set()

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    reporter.check()
    while not done.wait(0.05):
        reporter.check()  # also catches a change of source only (no flag_changed)


def wait_child(pid: int, timeout: float) -> int:
    """Wait for a forked child (SIGKILL after ``timeout``); its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ZKFLAGS_URL, zk://host:port/root")
    parser.add_argument("flag", help="the flag to report")
    parser.add_argument("--snapshot-file", default=None, help="ZKFLAGS SNAPSHOT_FILE")
    parser.add_argument("--startup-timeout", type=float, default=None)
    parser.add_argument("--session-timeout", type=float, default=None)
    parser.add_argument("--fork", action="store_true", help="fork once after start-up")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(process)d %(name)s: %(message)s"
    )
    done = threading.Event()
    reasons: list[str] = []

    def on_sigterm(signum: int, frame: object) -> None:
        reasons.append("sigterm")
        done.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks to stderr, to debug

    configure(args)
    started = time.monotonic()
    import django

    django.setup()  # AppConfig.ready starts the watcher (waits up to STARTUP_TIMEOUT)
    startup = time.monotonic() - started

    reporter = Reporter(args.flag, "parent" if args.fork else "main")
    reporter.emit("ready", startup_seconds=startup, **reporter.observe())

    child = 0
    if args.fork:
        child = os.fork()  # the package's at-fork hook gives the child a watcher of its own
        if child == 0:
            reporter = Reporter(args.flag, "child")
            reporter.emit("ready", startup_seconds=0.0, parent=os.getppid(), **reporter.observe())
        else:
            reporter.emit("forked", child=child)

    serve(reporter, done, reasons)

    fields: dict[str, object] = {"reason": reasons[0] if reasons else None}
    if child:
        os.kill(child, signal.SIGTERM)
        fields["child_exit"] = wait_child(child, timeout=10.0)
    reporter.emit("exit", **fields)
    return 0  # atexit closes the ZooKeeper client, with a bound


if __name__ == "__main__":
    sys.exit(main())
