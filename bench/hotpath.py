"""The check hot path against a function-call floor, in one process, without ZooKeeper.

    .venv/bin/python bench/hotpath.py                 # ~20 s
    .venv/bin/python bench/hotpath.py --repeat 5 --seconds 0.05   # quicker, noisier

The issue's targets for a flag check, measured in the same run:

* boolean check (``flag_is_active_for_user(user or None, "bool")``, a flag on for
  everyone) <= 2x the floor ``def f(d, k): return d.get(k)`` called on the snapshot's own
  dict of flags;
* percent check (``flag_is_active_for_user(user, "pct")``, a 50 % flag, an authenticated
  user) <= 1 us median.

Django is configured in code (no database is touched: the users are unsaved model
instances with a pk) and the flags are published into ``django_zkflags.cache.store`` as a
snapshot, as the watcher would. Every row is a loop of calls timed with
``time.perf_counter_ns`` (the gc off, as ``timeit`` does); the rows are sampled in turn,
the order rotating each round, so that a slow spell of the machine hits them all alike.
The figure is the median over the samples of ns per call, the loop included (the empty
loop's row says how much of each figure it is).

The percent row checks one user again and again, as bench/run.py does: from its second
check the bucket is remembered by (flag name, pk) (``rules._POSITIONS``, bounded), so the
row measures a remembered bucket, as a user's later requests get, not the hash. Rows
beside the targets, so that the figures are not read for more than they are:

* "percent, a new user object each check": the same check on a user object never checked
  before, a new pk each time (a user's first check, or a task going through its users):
  the hash, and remembering its bucket;
* "percent, anonymous visitor with an id": what ``request.flags`` (the middleware) runs for
  the first check of a percentage flag by an anonymous visitor whose cookie id is known:
  ``evaluate(snapshot, "pct", AnonymousUser(), request, flags)``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A checkout without the package installed: the package beside this directory.
sys.path.append(str(Path(__file__).resolve().parent.parent))

FLOOR_SOURCE = "def f(d, k):\n    return d.get(k)\n"
ANONYMOUS_ID = "Yq3xZ0d1l9Wm2K7pR4tS8A"
USER_PK = 42


def configure_django() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="zkflags-hotpath-bench",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_zkflags",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        ZKFLAGS_URL="zk://127.0.0.1:1/not-used",
        ZKFLAGS={"AUTOSTART": False, "SNAPSHOT_FILE": None},
    )
    django.setup()


@dataclass
class Row:
    key: str
    label: str
    stmt: str  # run once per element of the sample's iterable, bound to ``_x``
    env: dict[str, Any]
    expect: Any  # what the statement's expression must give, checked before timing
    sample_input: Callable[[int], Iterable[Any]] = lambda n: itertools.repeat(None, n)
    number: int = 0
    samples: list[float] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)
    fn: Any = None

    def compile(self) -> None:
        source = f"def _loop(_it):\n    for _x in _it:\n        {self.stmt}\n"
        namespace = dict(self.env)
        exec(compile(source, f"<hotpath {self.key}>", "exec"), namespace)
        self.fn = namespace["_loop"]
        if self.stmt == "pass":
            return
        probe = eval(self.stmt, dict(self.env, _x=next(iter(self.sample_input(1)))))
        if probe != self.expect:
            raise RuntimeError(f"{self.key}: {self.stmt} gave {probe!r}, not {self.expect!r}")

    def run(self, number: int) -> tuple[float, float]:
        """ns per iteration of one sample of ``number`` iterations: wall clock, and this
        thread's CPU time (which does not count waiting for a CPU on a busy machine)."""
        it = self.sample_input(number)
        enabled = gc.isenabled()
        gc.disable()
        try:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            self.fn(it)
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
        finally:
            if enabled:
                gc.enable()
        return (t1 - t0) / number, (c1 - c0) / number

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples)


def build_rows() -> list[Row]:
    from django.contrib.auth.models import AnonymousUser, User
    from django.test import RequestFactory

    from django_zkflags.api import flag_is_active_for_user
    from django_zkflags.cache import store
    from django_zkflags.evaluation import RequestFlags, evaluate
    from django_zkflags.rules import FlagRule, bucket
    from django_zkflags.snapshot import Snapshot

    rules = [FlagRule("bool", everyone=True), FlagRule("pct", percent=50)]
    # A few hundred other flags, so that the dict is the size of a real one.
    rules += [FlagRule(f"other-{i}", percent=float(i % 100)) for i in range(300)]
    store.publish(Snapshot({rule.name: rule for rule in rules}, source="bench"))
    snapshot = store.current
    flags_dict = snapshot.flags

    floor_ns: dict[str, Any] = {}
    exec(FLOOR_SOURCE, floor_ns)
    user = User(pk=USER_PK, username="bench")
    anonymous = AnonymousUser()
    request = RequestFactory().get("/")
    request.user = anonymous
    request_flags = RequestFlags(request)
    request_flags.anonymous_id = ANONYMOUS_ID  # as read from its cookie
    pct_user = bucket("pct", USER_PK) < 5000
    pct_anonymous = bucket("pct", ANONYMOUS_ID) < 5000

    def new_users(n: int) -> list[Any]:
        return [User(pk=pk, username="bench") for pk in range(USER_PK, USER_PK + n)]

    fia = flag_is_active_for_user
    return [
        Row("empty", "empty loop (context)", "pass", {}, None),
        Row(
            "floor",
            "floor: def f(d, k): return d.get(k)",
            "f(d, k)",
            {"f": floor_ns["f"], "d": flags_dict, "k": "bool"},
            flags_dict["bool"],
        ),
        Row("boolean_user", "boolean, user", "fia(u, 'bool')", {"fia": fia, "u": user}, True),
        Row("boolean_none", "boolean, None", "fia(None, 'bool')", {"fia": fia}, True),
        Row(
            "percent_user",
            "percent, authenticated user",
            "fia(u, 'pct')",
            {"fia": fia, "u": user},
            pct_user,
        ),
        Row(
            "percent_new_user",
            "percent, a new user object each check",
            "fia(_x, 'pct')",
            {"fia": fia},
            pct_user,  # the probe is the first of the list: pk USER_PK
            sample_input=new_users,
        ),
        Row(
            "percent_anonymous",
            "percent, anonymous visitor with an id",
            "ev(s, 'pct', a, r, rf)",
            {"ev": evaluate, "s": snapshot, "a": anonymous, "r": request, "rf": request_flags},
            pct_anonymous,
        ),
    ]


def calibrate(row: Row, seconds: float) -> int:
    number = 100
    while True:
        elapsed = row.run(number)[0] * number / 1e9
        if elapsed >= seconds / 5 or number >= 10**7:
            return max(100, int(number * seconds / max(elapsed, 1e-9)))
        number *= 10


def measure(rows: list[Row], repeat: int, seconds: float) -> None:
    for row in rows:
        row.compile()
        row.run(100)  # warm
        row.number = calibrate(row, seconds)
    for round_ in range(repeat):
        shift = round_ % len(rows)
        for row in rows[shift:] + rows[:shift]:
            wall, cpu = row.run(row.number)
            row.samples.append(wall)
            row.cpu_samples.append(cpu)


def report(rows: list[Row], load: float | None) -> str:
    by = {row.key: row for row in rows}
    floor = by["floor"].median
    empty = by["empty"].median
    cpus = os.cpu_count() or 1
    busy = load is not None and load > cpus / 2
    lines = [
        f"Python {sys.version.split()[0]}, {len(by['floor'].samples)} samples per row, "
        f"load average {'n/a' if load is None else f'{load:.2f}'} on {cpus} CPUs"
        + ("  (busy: the wall-clock figures are inflated, see the CPU column)" if busy else ""),
        "",
        f"{'':42} {'median ns':>10} {'min ns':>8} {'x floor':>8} {'CPU median':>11}",
    ]
    for row in rows:
        lines.append(
            f"{row.label:42} {row.median:10.0f} {min(row.samples):8.0f} "
            f"{row.median / floor:8.2f} {row.cpu_median:11.0f}"
        )
    lines.append("")
    worst_bool = max(by["boolean_user"].median, by["boolean_none"].median)
    ratio = worst_bool / floor
    cpu_ratio = max(by["boolean_user"].cpu_median, by["boolean_none"].cpu_median) / max(
        by["floor"].cpu_median, 1e-9
    )
    lines.append(
        f"{'boolean <= 2x floor:':42} {worst_bool:.0f} / {floor:.0f} ns = {ratio:.2f}x  "
        f"{'PASS' if ratio <= 2 else 'FAIL'}  (without the loop's {empty:.0f} ns: "
        f"{(worst_bool - empty) / max(floor - empty, 1e-9):.2f}x; CPU time: {cpu_ratio:.2f}x)"
    )
    for key in ("percent_user", "percent_anonymous"):
        value = by[key].median
        lines.append(
            f"{by[key].label + ' <= 1 us:':42} {value:.0f} ns  "
            f"{'PASS' if value <= 1000 else 'FAIL'}  (CPU time: {by[key].cpu_median:.0f} ns)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="samples per row (15)")
    parser.add_argument("--seconds", type=float, default=0.1, help="seconds per sample (0.1)")
    args = parser.parse_args(argv)
    configure_django()
    rows = build_rows()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    measure(rows, args.repeat, args.seconds)
    print(report(rows, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
