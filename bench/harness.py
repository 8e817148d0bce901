"""The benchmark's harness: what a run is made of, timing loops (calibrate, measure),
percentiles and summaries, the servers (ZooKeeper, redis-server) and the watching child
processes (the test suite's ``tests/support/flagwatcher.py`` through
``tests/support/children.py``), and trees of many flags written fast."""

from __future__ import annotations

import gc
import itertools
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from tests.support.children import Child, Children

__all__ = [
    "FULL",
    "SECTIONS",
    "SMOKE",
    "WATCHER_STARTUP",
    "Child",
    "Children",
    "Loop",
    "Plan",
    "RedisServer",
    "Variant",
    "calibrate",
    "changed_to",
    "command",
    "count_watches",
    "free_port",
    "latency_summary",
    "log",
    "measure",
    "paired_difference",
    "percentile",
    "ratio",
    "seen",
    "spawn_watcher",
    "summarize",
    "version_of",
    "wait_ready",
]


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run."""

    smoke: bool
    repeat: int  # samples per micro-benchmark variant
    sample_seconds: float  # target duration of one micro sample
    request_repeat: int
    request_sample_seconds: float
    watchers: tuple[int, ...]
    changes: int  # propagation: changes per watcher count
    scale_sizes: tuple[int, ...]
    scale_repeats: int  # cold starts per size
    scale_changes: int  # propagation of one change at size, repeated
    apply_sizes: tuple[int, ...]  # changes: per-change apply cost at these sizes
    apply_changes: int  # changes applied (one at a time) per size
    burst_sizes: tuple[int, ...]  # changes: request latency during a burst at these sizes
    burst_changes: int  # changes in one burst
    burst_quiet_seconds: float  # the same load without changes, for comparison
    burst_rate: int  # requests per second offered to the serving process


FULL = Plan(
    smoke=False,
    repeat=15,
    sample_seconds=0.05,
    request_repeat=120,
    request_sample_seconds=0.02,
    watchers=(1, 4, 16),
    changes=300,
    scale_sizes=(100, 1_000, 10_000, 100_000),
    scale_repeats=3,
    scale_changes=20,
    apply_sizes=(100, 1_000, 10_000, 100_000),
    apply_changes=100,
    burst_sizes=(1_000, 10_000, 100_000),
    burst_changes=50,
    burst_quiet_seconds=2.0,
    burst_rate=1000,
)
SMOKE = Plan(
    smoke=True,
    repeat=3,
    sample_seconds=0.005,
    request_repeat=3,
    request_sample_seconds=0.01,
    watchers=(1, 4),
    changes=10,
    scale_sizes=(10, 100),
    scale_repeats=1,
    scale_changes=2,
    apply_sizes=(100, 1_000),
    apply_changes=5,
    burst_sizes=(1_000,),
    burst_changes=10,
    burst_quiet_seconds=0.5,
    burst_rate=1000,
)

SECTIONS = ("checks", "template", "request", "propagation", "scale", "changes")


# --------------------------------------------------------------------------------------
# small helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": len(samples),
    }


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    return {
        "count": len(values_ms),
        "p50_ms": percentile(values_ms, 50),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": max(values_ms) if values_ms else None,
        "min_ms": min(values_ms) if values_ms else None,
    }


def paired_difference(a: dict[str, Any], b: dict[str, Any], key: str = "samples_ns") -> float:
    """Median of the per-round differences of two variants measured in the same rounds."""
    return statistics.median(x - y for x, y in zip(a[key], b[key], strict=True))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ratio(slow: float | None, fast: float | None) -> float | None:
    if slow is None or fast is None or fast <= 0:
        return None
    return slow / fast


def version_of(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------
# micro-benchmark harness


@dataclass
class Variant:
    name: str
    stmt: str
    env: dict[str, Any]
    before: Callable[[], None] | None = None  # run (untimed) before each sample
    number: int = 0


class Loop:
    """A ``timeit``-style loop of ``stmt`` (names from ``env``, like ``timeit``'s globals),
    timed with the wall clock and with this thread's CPU clock at once.

    The wall clock is the figure reported; the CPU clock is kept beside it because it does
    not count time this process spent waiting for a CPU (other load on the machine). It
    also does not count waiting for I/O (Redis), so it is no measure of those variants.
    """

    def __init__(self, stmt: str, env: dict[str, Any]) -> None:
        source = f"def _loop(_it):\n    for _ in _it:\n        {stmt}\n"
        namespace = env  # the statement's names are globals, as with timeit(globals=...)
        exec(compile(source, f"<bench {stmt!r}>", "exec"), namespace)
        self.fn = namespace.pop("_loop")

    def run(self, number: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds) for ``number`` iterations, gc off as in timeit."""
        it = itertools.repeat(None, number)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            c0 = time.thread_time()
            w0 = time.perf_counter()
            self.fn(it)
            w1 = time.perf_counter()
            c1 = time.thread_time()
        finally:
            if gc_was_enabled:
                gc.enable()
        return w1 - w0, c1 - c0


def calibrate(loop: Loop, target: float) -> int:
    number = 1
    while True:
        elapsed = loop.run(number)[0]
        if elapsed >= target / 10 or number >= 10**8:
            break
        number *= 10
    return max(1, int(number * target / max(elapsed, 1e-9)))


def measure(variants: list[Variant], repeat: int, target: float) -> dict[str, dict[str, Any]]:
    """ns per iteration of each variant: median (and min/max) over ``repeat`` samples.

    The variants are sampled in turn (one sample each per round), the order rotating each
    round, so that a slow spell of the machine hits them all alike.
    """
    loops = {}
    for v in variants:
        if v.before:
            v.before()
        loop = Loop(v.stmt, dict(v.env))
        loop.run(1)  # warm: caches, lazy attributes, first-use imports
        v.number = calibrate(loop, target)
        loops[v.name] = loop
    wall: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {v.name: [] for v in variants}
    for round_ in range(repeat):
        shift = round_ % len(variants)
        for v in variants[shift:] + variants[:shift]:
            if v.before:
                v.before()
            w, c = loops[v.name].run(v.number)
            wall[v.name].append(w / v.number * 1e9)
            cpu[v.name].append(c / v.number * 1e9)
    out = {}
    for v in variants:
        summary = summarize(wall[v.name])
        out[v.name] = {
            "median_ns": summary["median"],
            "min_ns": summary["min"],
            "max_ns": summary["max"],
            "cpu_median_ns": statistics.median(cpu[v.name]),
            "samples": summary["samples"],
            "iterations_per_sample": v.number,
            "samples_ns": wall[v.name],
            "cpu_samples_ns": cpu[v.name],
        }
    return out


# --------------------------------------------------------------------------------------
# services: redis-server (ZooKeeper is tests.support.zookeeper.ZooKeeperServer)


class RedisServer:
    """Debian's ``redis-server`` on a free loopback port, no persistence (``make bench``
    installs it when missing: scripts/bootstrap.sh test,bench)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.version: str | None = None

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if exe is None:
            raise RuntimeError("redis-server is not installed (make bench installs it)")
        self.version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--logfile",
                os.path.join(self.directory, "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def count_watches(zk: Any) -> dict[str, int]:
    """Watches per session, from the server's ``wchc``."""
    reply = zk.four_letter("wchc", timeout=10.0)
    counts: dict[str, int] = {}
    session = None
    for line in reply.splitlines():
        if line.startswith("0x"):
            session = line.strip()
            counts.setdefault(session, 0)
        elif line.strip() and session is not None:
            counts[session] += 1
    return counts


# --------------------------------------------------------------------------------------
# watcher child processes: tests/support/flagwatcher.py, through tests.support.children

#: A watcher's STARTUP_TIMEOUT: how long its AppConfig.ready waits for the first snapshot.
WATCHER_STARTUP = 60.0


def spawn_watcher(children: Children, url: str, flag: str, snapshot_file: str) -> Child:
    """A minimal Django process watching ``flag`` (ready reported later: see wait_ready)."""
    return children.spawn(url, flag, snapshot_file=snapshot_file, startup_timeout=WATCHER_STARTUP)


def wait_ready(kid: Child) -> dict[str, Any]:
    """Its ``ready`` event, once it loaded a snapshot from ZooKeeper."""
    ready = kid.ready(timeout=WATCHER_STARTUP * 2)
    if ready["source"] != "zookeeper":
        raise RuntimeError(f"watcher child did not load a snapshot\n{kid.describe()}")
    return ready


def seen(version: int) -> Callable[[dict[str, Any]], bool]:
    """A watcher's report of ``version``, timed in its ``flag_changed`` receiver (CLOCK_MONOTONIC
    is system-wide on Linux: its ``t_mono`` compares with this process's time.monotonic())."""
    return lambda e: (
        e.get("event") == "value" and e.get("via") == "signal" and e.get("version") == version
    )


def changed_to(name: str, version: int) -> Callable[[dict[str, Any]], bool]:
    """A watcher's ``changed`` report (``--all-changes``) of flag ``name`` at ``version`` or
    later (a burst of changes may be applied together)."""

    def predicate(e: dict[str, Any]) -> bool:
        if e.get("event") != "changed":
            return False
        got = (e.get("versions") or {}).get(name, -2)
        return got is None or got >= version

    return predicate


def command(kid: Child, line: str, event: str, timeout: float = 60.0) -> dict[str, Any]:
    """Send a command with arguments (``Child.ask`` waits for an event named as the whole
    line) and wait for its ``event`` (an ``error`` event raises)."""
    after = kid.mark()
    kid.send(line)
    reply = kid.wait_for(
        lambda e: e.get("event") in (event, "error"), timeout, after, f"{event} after {line!r}"
    )
    if reply["event"] == "error":
        raise RuntimeError(f"{line!r}: {reply.get('message')}\n{kid.describe()}")
    return reply
