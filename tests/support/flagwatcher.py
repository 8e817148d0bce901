"""A minimal Django process that watches one flag and reports on stdout, one JSON line each.

Run as a separate OS process by the tests and the benchmark (``tests/support/children.py``
starts it and reads it)::

    python -m tests.support.flagwatcher URL FLAG [--snapshot-file PATH] [--fork]
                                                 [--startup-timeout S] [--session-timeout S]

It configures Django in code (``django_zkflags`` with ``AUTOSTART``, an in-memory SQLite
database) and calls ``django.setup()``, so that ``AppConfig.ready`` starts the watcher as
in a real site. It uses only the package's public surface: ``flag_is_active_for_user``,
``django_zkflags.status()``, the ``flag_changed`` signal and ``cache.store``.

Events (``"event"`` is the first key):

``ready``
    once, after ``django.setup()`` returned: ``startup_seconds`` (how long ``django.setup()``
    took, the watcher's start and its wait for a first snapshot included),
    ``watcher_start_seconds`` (the part of it from the start of django_zkflags'
    ``AppConfig.ready``: the watcher's start and that wait, a "cold start"; kazoo is
    imported beforehand), ``rss_kb`` (after ``gc.collect()``), ``session_id`` (``0x...``
    as ZooKeeper's ``wchc`` prints it, None when not connected), ``flags`` (how many this
    process holds) and the flag's state (below).
``value``
    the flag's state: ``active`` (``flag_is_active_for_user(None, FLAG)``), ``version``
    (its znode version, None when absent), ``everyone``, ``source`` ("zookeeper", "file",
    "empty") and ``zxid``. ``via`` says who noticed: ``"signal"`` is sent from the
    ``flag_changed`` receiver each time the flag is among the changed names, with
    ``t_wall``/``t_mono`` taken first thing in the receiver (right after the new snapshot
    became ``store.current``); ``"poll"`` comes from a 50 ms loop that reports any other
    move of (active, version, source), such as a change of source only, which sends no
    signal.
``forked``
    with ``--fork``, from the parent: ``child`` (its pid).
``status``, ``state``, ``rss``, ``apply``, ``changes``, ``error``
    answers to the commands below.
``changed``
    after ``changes on``: every ``flag_changed`` (whatever the flags), from the receiver:
    ``count`` (how many names changed) and ``versions`` (name: znode version, None when
    deleted, for at most 20 of them), with ``t_mono`` taken first thing in the receiver.
``load-started``, ``load``
    the start and the end of a ``load`` (below): ``mode``, ``rate``, ``seconds``,
    ``requests``, ``latency`` (ms from when each was due: p50, p90, p99, p999, max, over
    10 ms, ``max_at`` its ``t_mono``), ``service`` (ms from when each started),
    ``process_cpu_seconds``, ``thread_cpu_seconds`` (the load's thread),
    ``runqueue_wait_ms`` (how long the load's thread waited for a CPU while runnable: the
    machine's doing, not the process's) and ``gc`` (the collections meanwhile: how many,
    total and longest pause in ms).
``exit``
    just before exiting: ``reason`` ("eof", "sigterm", "orphaned"), and with ``--fork``
    in the parent, ``child_exit`` (the child's exit status).

Every line carries ``pid``, ``role`` ("main", or "parent"/"child" with ``--fork``),
``t_wall`` (``time.time()``) and ``t_mono`` (``time.monotonic()``: CLOCK_MONOTONIC is
system-wide on Linux, so the times of different processes compare).

Commands on stdin, one per line: ``status`` (``django_zkflags.status()`` with the session
id, and the flag), ``state`` (the flag as served now, and the flag count), ``rss``,
``apply`` (``status()["apply"]``: what applying each change cost this process),
``changes on|off`` (``changed`` events), ``load SECONDS [RATE [MODE]]`` (for the
benchmark: a thread offers RATE requests a second, 1000 by default, on a fixed schedule
for SECONDS, and reports their latency from when each was due, so that a request held up
by the watch thread counts with all those queued behind it; MODE ``request`` (the default)
sends each through Django's WSGI handler with ``FlagMiddleware`` to a view that checks the
flag, ``check`` is one ``flag_is_active_for_user(None, FLAG)``) and ``load-stop`` (ends a
running load early; its ``load`` event follows).

It exits with status 0 at EOF on stdin or on SIGTERM; SIGUSR1 dumps every thread's stack
to stderr (to see where a process hangs). ``--fork`` forks once after start-up, like
gunicorn ``--preload``: both halves report; only the parent reads stdin, and it ends the
child (SIGTERM) before exiting; a child whose parent is gone exits too.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # when run by path rather than with -m from the repository
    sys.path.insert(0, str(ROOT))

#: How often the main loop looks for changes that send no signal (and for a lost parent).
POLL_INTERVAL = 0.05
#: An app listed just before django_zkflags: its ready() runs just before django_zkflags'.
MARK_APP = "flagwatcher_mark"
#: The URLconf of ``load``'s requests (made in memory when the first load starts).
LOAD_URLCONF = "flagwatcher_urls"
#: Versions a ``changed`` event lists at the most.
CHANGED_VERSIONS = 20
marks: dict[str, float] = {}


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of sorted values; None for none."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def latency(values_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(values_ms)
    return {
        "count": len(ordered),
        **{f"p{p:g}".replace(".", ""): percentile(ordered, p) for p in (50, 90, 99, 99.9)},
        "max": ordered[-1] if ordered else None,
        "over_10ms": sum(1 for v in ordered if v > 10.0),
    }


def runqueue_wait_ms() -> float | None:
    """How long this thread has waited for a CPU while runnable (Linux schedstat), ms:
    time the machine, not this process, kept it from running."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


class Load:
    """``load``: requests (or checks) offered at a fixed rate in a thread of their own."""

    def __init__(self, flag: str, seconds: float, rate: float, mode: str) -> None:
        if mode not in ("request", "check") or rate <= 0 or seconds <= 0:
            raise ValueError(f"load: bad arguments {seconds} {rate} {mode}")
        self.flag, self.seconds, self.rate, self.mode = flag, seconds, rate, mode
        self.stop = threading.Event()
        self.reported = threading.Event()
        self.thread = threading.Thread(target=self.run, name="load", daemon=True)

    def target(self) -> Any:
        """What one request is: a callable."""
        if self.mode == "check":
            from django_zkflags import flag_is_active_for_user

            flag = self.flag
            return lambda: flag_is_active_for_user(None, flag)
        import io

        from django.conf import settings
        from django.core.handlers.wsgi import WSGIHandler

        if LOAD_URLCONF not in sys.modules:
            install_load_urlconf(self.flag)
        settings.ROOT_URLCONF = LOAD_URLCONF
        settings.MIDDLEWARE = ["django_zkflags.middleware.FlagMiddleware"]
        settings.ALLOWED_HOSTS = ["*"]
        handler = WSGIHandler()
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "SERVER_NAME": "flagwatcher",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
        }

        def start_response(status: str, headers: list[Any]) -> None:
            if not status.startswith("200"):
                raise RuntimeError(f"load: the view answered {status}")

        def request() -> None:
            response = handler({**environ, "wsgi.input": io.BytesIO(b"")}, start_response)
            b"".join(response)
            response.close()

        return request

    def run(self) -> None:
        try:
            call = self.target()
            call()  # the first one loads the middleware, the URLconf, the view
        except Exception as exc:
            reporter.emit("error", message=f"load: {type(exc).__name__}: {exc}")
            return
        interval = 1.0 / self.rate
        due_ms: list[float] = []
        service_ms: list[float] = []
        worst = (0.0, 0.0)
        pauses: list[float] = []  # the gc's collections meanwhile (any thread's), ms
        began: list[float] = []

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                began.append(time.perf_counter())
            elif began:
                pauses.append((time.perf_counter() - began.pop()) * 1000)

        gc.callbacks.append(on_gc)
        reporter.emit("load-started", mode=self.mode, rate=self.rate)
        cpu0, thread0, wait0 = time.process_time(), time.thread_time(), runqueue_wait_ms()
        started = time.perf_counter()
        due, end = started, started + self.seconds
        while not self.stop.is_set():
            now = time.perf_counter()
            if now >= end:
                break
            if due > now:
                time.sleep(due - now)
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            late = (t1 - due) * 1000
            due_ms.append(late)
            service_ms.append((t1 - t0) * 1000)
            if late > worst[0]:
                worst = (late, time.monotonic())
            due += interval  # a fixed schedule: what falls behind queues up, as in a server
        elapsed = time.perf_counter() - started
        cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
        wait = runqueue_wait_ms()
        gc.callbacks.remove(on_gc)
        self.reported.set()
        reporter.emit(
            "load",
            mode=self.mode,
            rate=self.rate,
            seconds=elapsed,
            requests=len(due_ms),
            latency={**latency(due_ms), "max_at": worst[1]},
            service=latency(service_ms),
            # Where else the time went: the process's CPU (every thread), this thread's,
            # and the gc's pauses.
            process_cpu_seconds=cpu,
            thread_cpu_seconds=thread,
            runqueue_wait_ms=None if wait is None or wait0 is None else wait - wait0,
            gc={
                "collections": len(pauses),
                "total_ms": sum(pauses),
                "max_ms": max(pauses, default=0),
            },
        )


def install_load_urlconf(flag: str) -> None:
    """``/``: a view that checks the flag through ``request.flags``."""
    from django.http import HttpResponse
    from django.urls import path

    from django_zkflags import flag_is_active

    def view(request: Any) -> HttpResponse:
        return HttpResponse(b"on" if flag_is_active(request, flag) else b"off")

    module = types.ModuleType(LOAD_URLCONF)
    module.urlpatterns = [path("", view)]  # type: ignore[attr-defined]
    sys.modules[LOAD_URLCONF] = module


def session_id(status: dict[str, Any]) -> str | None:
    """This process's ZooKeeper session id, as ``wchc`` prints it (``0x...``)."""
    value = status.get("session_id")
    return str(value) if value else None


class Reporter:
    """Writes this process's events; one per process (a forked child makes its own)."""

    def __init__(self, flag: str, role: str) -> None:
        self.flag = flag
        self.role = role
        self.lock = threading.Lock()
        self.last: tuple[object, ...] | None = None
        self.all_changes = False  # ``changes on``
        self.load: Load | None = None

    def observe(self, snapshot: Any = None) -> dict[str, Any]:
        from django_zkflags import flag_is_active_for_user
        from django_zkflags.cache import store

        snapshot = store.current if snapshot is None else snapshot
        rule = snapshot.flags.get(self.flag)
        return {
            "active": flag_is_active_for_user(None, self.flag),
            "version": rule.version if rule is not None else None,
            "everyone": rule.everyone if rule is not None else None,
            "source": snapshot.source,
            "zxid": snapshot.zxid,
        }

    def emit(self, event: str, **fields: Any) -> None:
        record = {
            "event": event,
            "pid": os.getpid(),
            "role": self.role,
            "t_wall": time.time(),
            "t_mono": time.monotonic(),
            **fields,
        }
        data = (json.dumps(record, default=str) + "\n").encode()
        # One os.write per line (no buffer shared with a forked half): the lines of the two
        # halves never interleave while shorter than PIPE_BUF.
        while data:
            data = data[os.write(1, data) :]

    def report(self, via: str, snapshot: Any = None, **times: float) -> None:
        """A ``value`` event: always for a signal, on a change of state for a poll."""
        with self.lock:  # one observer at a time, so that events keep the order of states
            state = self.observe(snapshot)
            key = (state["active"], state["version"], state["source"])
            if via == "poll" and key == self.last:
                return
            self.last = key
            self.emit("value", via=via, **state, **times)

    def answer(self, command: str) -> None:
        import django_zkflags

        if command == "status":
            status = dict(django_zkflags.status())
            status["session_id"] = session_id(status)
            self.emit("status", flag=self.observe(), status=status)
        elif command == "state":
            self.emit("state", flags=django_zkflags.status()["flags"], **self.observe())
        elif command == "rss":
            gc.collect()
            self.emit("rss", rss_kb=rss_kb())
        elif command == "apply":
            self.emit("apply", apply=django_zkflags.status().get("apply"))
        elif command in ("changes on", "changes off"):
            self.all_changes = command == "changes on"
            self.emit("changes", on=self.all_changes)
        elif command.startswith("load "):
            self.start_load(command.split()[1:])
        elif command == "load-stop":
            if self.load is not None:
                self.load.stop.set()
        else:
            self.emit("error", message=f"unknown command {command!r}")

    def start_load(self, words: list[str]) -> None:
        if self.load is not None:
            if self.load.reported.is_set():  # its report is out: it is ending
                self.load.thread.join()
            elif self.load.thread.is_alive():
                self.emit("error", message="load: one is running")
                return
        try:
            seconds = float(words[0])
            rate = float(words[1]) if len(words) > 1 else 1000.0
            self.load = Load(self.flag, seconds, rate, words[2] if len(words) > 2 else "request")
        except (IndexError, ValueError) as exc:
            self.emit("error", message=f"load: {exc}")
            return
        self.load.thread.start()

    def changed(self, names: frozenset[str], snapshot: Any, t_mono: float) -> None:
        """A ``changed`` event (after ``changes on``)."""
        flags = snapshot.flags if snapshot is not None else {}
        versions = {}
        for name in sorted(names)[:CHANGED_VERSIONS]:
            rule = flags.get(name)
            versions[name] = rule.version if rule is not None else None
        self.emit("changed", count=len(names), versions=versions, t_mono=t_mono)

    def ready(self, **fields: Any) -> None:
        import django_zkflags

        gc.collect()
        status = django_zkflags.status()
        self.emit(
            "ready",
            rss_kb=rss_kb(),
            session_id=session_id(status),
            flags=status["flags"],
            **fields,
            **self.observe(),
        )


reporter: Reporter  # this process's; replaced in a forked child before its watcher runs


def on_flag_changed(sender: object, names: frozenset[str], **kwargs: Any) -> None:
    t_wall, t_mono = time.time(), time.monotonic()  # first: the moment it became visible
    current = reporter
    if current.flag in names:
        current.report("signal", kwargs.get("snapshot"), t_wall=t_wall, t_mono=t_mono)
    if current.all_changes:
        current.changed(names, kwargs.get("snapshot"), t_mono)


def install_mark_app() -> None:
    """Make ``MARK_APP``, whose ``ready()`` notes when django_zkflags' is about to run."""
    from django.apps import AppConfig

    class MarkConfig(AppConfig):
        name = label = MARK_APP
        path = str(ROOT)  # a module made in memory has no location of its own

        def ready(self) -> None:
            marks["zkflags_ready"] = time.monotonic()

    module = types.ModuleType(MARK_APP)
    module.MarkConfig = MarkConfig  # type: ignore[attr-defined]
    sys.modules[MARK_APP] = module


def configure(args: argparse.Namespace) -> None:
    from django.conf import settings

    zkflags: dict[str, Any] = {"AUTOSTART": True, "SNAPSHOT_FILE": args.snapshot_file or None}
    if args.startup_timeout is not None:
        zkflags["STARTUP_TIMEOUT"] = args.startup_timeout
    if args.session_timeout is not None:
        zkflags["SESSION_TIMEOUT"] = args.session_timeout
    settings.configure(
        DEBUG=False,
        SECRET_KEY="flagwatcher",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            f"{MARK_APP}.MarkConfig",
            "django_zkflags",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        ZKFLAGS_URL=args.url,
        ZKFLAGS=zkflags,
    )


def serve(done: threading.Event, reasons: list[str], parent: int | None) -> None:
    """Report until ``done`` (EOF, SIGTERM) or, in a forked child, until the parent is gone."""
    if parent is None:

        def read_stdin() -> None:
            for line in sys.stdin:
                if line.strip():
                    reporter.answer(line.strip())
            reasons.append("eof")
            done.set()

        threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    reporter.report("poll")
    while not done.wait(POLL_INTERVAL):
        reporter.report("poll")
        if parent is not None and os.getppid() != parent:
            reasons.append("orphaned")
            return


def wait_child(pid: int, timeout: float) -> int:
    """Wait for the forked child (SIGKILL after ``timeout``); its exit status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main(argv: list[str] | None = None) -> int:
    global reporter
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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

    reporter = Reporter(args.flag, "parent" if args.fork else "main")

    def after_fork_in_child() -> None:
        # Registered before django.setup(), so it runs before the package's own hook starts
        # the child's watcher: its receiver never meets the parent's (maybe held) lock.
        global reporter
        reporter = Reporter(args.flag, "child")

    os.register_at_fork(after_in_child=after_fork_in_child)
    install_mark_app()
    configure(args)
    import kazoo.client  # noqa: F401  (not counted in watcher_start_seconds)

    from django_zkflags.signals import flag_changed

    flag_changed.connect(on_flag_changed, weak=False)
    started = time.monotonic()
    import django

    django.setup()  # AppConfig.ready starts the watcher (waits up to STARTUP_TIMEOUT)
    ended = time.monotonic()
    reporter.ready(
        startup_seconds=ended - started,
        watcher_start_seconds=ended - marks.get("zkflags_ready", started),
    )

    child = 0
    parent: int | None = None
    if args.fork:
        parent = os.getpid()
        child = os.fork()  # the package's at-fork hook gives the child a watcher of its own
        if child == 0:
            reporter.ready(startup_seconds=0.0, watcher_start_seconds=0.0, parent=parent)
        else:
            parent = None
            reporter.emit("forked", child=child)

    serve(done, reasons, parent)

    fields: dict[str, Any] = {"reason": reasons[0] if reasons else None}
    if child:
        os.kill(child, signal.SIGTERM)
        fields["child_exit"] = wait_child(child, timeout=10.0)
    reporter.emit("exit", **fields)
    return 0  # the package's atexit hook closes the ZooKeeper client, with a bound


if __name__ == "__main__":
    sys.exit(main())
