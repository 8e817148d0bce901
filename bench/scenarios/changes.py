"""Changes: what applying one change costs a watching process, and what a burst of changes
does to the requests another process serves meanwhile.

* Apply cost, at 100, 1,000, 10,000 and 100,000 flags: one watching child (the suite's
  flagwatcher); the benchmark's process changes a flag picked at random, waits until the
  child reports it (``changed``), and so on; then the child's own timings
  (``status()["apply"]["recent_ms"]``: decode + compile + publish, the time its watch thread
  holds the interpreter; ``recent_read_ms``: the ZooKeeper reads) for those changes.
* Requests during a burst, at 1,000, 10,000 and 100,000 flags: the child offers itself
  requests at a fixed rate (through Django's WSGI handler and FlagMiddleware, a view that
  checks a flag) while the benchmark's process writes a burst of changes back to back;
  latency is taken from when each request was due, so that one held up by the watch
  thread counts with every request queued behind it. The same load without changes, just
  before, is the baseline.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from ..context import Bench, Tree
from ..harness import (
    Child,
    changed_to,
    command,
    latency_summary,
    log,
    spawn_watcher,
    wait_ready,
)

#: How long the benchmark waits for a child to report one change.
SEEN_TIMEOUT = 60.0
#: What a child's ``load`` report gives, kept in results.json.
LOAD_FIELDS = (
    "seconds",
    "requests",
    "latency",
    "service",
    "process_cpu_seconds",
    "thread_cpu_seconds",
    "runqueue_wait_ms",
    "gc",
)


def run(bench: Bench) -> None:
    plan = bench.plan
    assert bench.children is not None
    rng = random.Random(13)
    out: dict[str, Any] = {"apply": {}, "burst": {}, "processes": {}}
    sizes = sorted({0, *plan.apply_sizes, *plan.burst_sizes})
    for size in sizes:
        log(f"changes: {size:,} flags")
        try:
            tree = bench.tree(size)
        except RuntimeError as exc:
            log(f"changes: {exc}")
            for key, wanted in (("apply", plan.apply_sizes), ("burst", plan.burst_sizes)):
                if size in wanted:
                    out[key][str(size)] = {"flags": size, "error": str(exc)}
            out["processes"][str(size)] = {"flags": size, "error": str(exc)}
            continue
        snap_file = os.path.join(bench.tmp, f"changes-{size}.snapshot")
        kid = spawn_watcher(
            bench.children, tree.url, tree.names[0] if size else "absent", snap_file
        )
        try:
            ready = wait_ready(kid)
            if ready["flags"] != size:
                raise RuntimeError(f"child loaded {ready['flags']} flags, not {size}")
            out["processes"][str(size)] = {
                "flags": size,
                "cold_start_ms": ready["watcher_start_seconds"] * 1000,
                "rss_kb": ready["rss_kb"],
            }
            command(kid, "changes on", "changes")
            if size in plan.apply_sizes:
                out["apply"][str(size)] = apply_cost(bench, tree, kid, rng)
            if size in plan.burst_sizes:
                out["burst"][str(size)] = burst(bench, tree, kid, rng)
        finally:
            kid.close(timeout=30.0)
    empty = out["processes"].get("0", {}).get("rss_kb")
    for entry in out["processes"].values():
        if "rss_kb" in entry and empty is not None:
            entry["rss_over_empty_mb"] = (entry["rss_kb"] - empty) / 1024
    bench.results["changes"] = out


def applied(kid: Child) -> dict[str, Any] | None:
    """The child's ``status()["apply"]`` (None until the runtime has it)."""
    return kid.ask("apply").get("apply")


def since(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """The apply timings of the changes applied between two ``apply`` answers."""
    if not before or not after or "recent_ms" not in after:
        return {"applied": None, "apply": None, "read": None}
    count = int(after["count"]) - int(before["count"])
    kept = min(count, len(after["recent_ms"]))
    apply_ms = after["recent_ms"][len(after["recent_ms"]) - kept :]
    read = after.get("recent_read_ms") or []
    read_ms = read[len(read) - kept :] if kept else []
    shards_read = int(after.get("shards_read", 0)) - int(before.get("shards_read", 0))
    return {
        "applied": count,
        # Shard znodes read per change applied: 1 for a one-flag change, whatever the size.
        "shards_read_per_change": round(shards_read / count, 2) if count else None,
        "dicts_copied": int(after.get("dicts_copied", 0)) - int(before.get("dicts_copied", 0)),
        "apply": latency_summary(apply_ms) if apply_ms else None,
        "read": latency_summary(read_ms) if read_ms else None,
        "apply_ms": apply_ms,
        "read_ms": read_ms,
    }


def apply_cost(bench: Bench, tree: Tree, kid: Child, rng: random.Random) -> dict[str, Any]:
    """One change at a time, each to a flag picked at random, each waited for."""
    changes = bench.plan.apply_changes
    log(f"changes: apply cost at {tree.size:,} flags, {changes} changes")
    before = applied(kid)
    write_ms: list[float] = []
    seen_ms: list[float] = []
    missed = 0
    for name in (rng.choice(tree.names) for _ in range(changes)):
        time.sleep(rng.uniform(0.005, 0.02))
        mark = kid.mark()
        version, _everyone, t_start, t_ret = tree.toggle(name)
        write_ms.append((t_ret - t_start) * 1000)
        event = kid.wait_or_none(changed_to(name, version), SEEN_TIMEOUT, after=mark)
        if event is None:
            missed += 1
        else:
            seen_ms.append((event["t_mono"] - t_ret) * 1000)
    return {
        "flags": tree.size,
        "changes": changes,
        "missed": missed,
        **since(before, applied(kid)),
        "visible": latency_summary(seen_ms),
        "write": latency_summary(write_ms),
    }


def load(kid: Child, seconds: float, rate: int, during: Any = None) -> dict[str, Any]:
    """The child's ``load`` report: requests at ``rate`` for ``seconds``, or, with
    ``during`` (a callable), for as long as that takes (then ``load-stop``)."""
    limit = seconds if during is None else 600.0
    started = command(kid, f"load {limit} {rate} request", "load-started")
    mark = kid.mark()
    if during is not None:
        during()
        kid.send("load-stop")
    report = kid.wait_for(
        lambda e: e.get("event") in ("load", "error"), limit + 60.0, mark, "the load report"
    )
    if report["event"] == "error":
        raise RuntimeError(f"load: {report.get('message')}\n{kid.describe()}")
    return {**report, "started_t_mono": started["t_mono"]}


def burst(bench: Bench, tree: Tree, kid: Child, rng: random.Random) -> dict[str, Any]:
    """Requests in the child while this process writes a burst of changes back to back."""
    plan = bench.plan
    log(
        f"changes: requests at {plan.burst_rate}/s during {plan.burst_changes} changes, "
        f"{tree.size:,} flags"
    )
    quiet = load(kid, plan.burst_quiet_seconds, plan.burst_rate)
    before = applied(kid)
    names = [rng.choice(tree.names[1:] or tree.names) for _ in range(plan.burst_changes)]
    write_ms: list[float] = []
    window: dict[str, float] = {}

    def make_changes() -> None:
        time.sleep(0.1)  # a few requests before the first change
        mark = kid.mark()
        window["start"] = time.monotonic()
        version = 0
        for name in names:
            version, _everyone, t_start, t_ret = tree.toggle(name)
            write_ms.append((t_ret - t_start) * 1000)
        window["written"] = time.monotonic()
        last = kid.wait_or_none(changed_to(names[-1], version), SEEN_TIMEOUT, after=mark)
        window["seen"] = last["t_mono"] if last else float("nan")
        time.sleep(0.1)  # and a few after the last one was applied

    during = load(kid, 0.0, plan.burst_rate, during=make_changes)
    return {
        "flags": tree.size,
        "changes": len(names),
        "rate": plan.burst_rate,
        "quiet": {k: quiet.get(k) for k in LOAD_FIELDS},
        "during": {k: during.get(k) for k in LOAD_FIELDS},
        "burst_seconds": window["written"] - window["start"],
        "last_change_visible_ms": (window["seen"] - window["written"]) * 1000,
        "write": latency_summary(write_ms),
        **since(before, applied(kid)),
    }
