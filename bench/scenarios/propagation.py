"""Propagation: how fast a change reaches 1, 4, 16 watching processes."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from ..context import Bench
from ..harness import latency_summary, log, seen, spawn_watcher, wait_ready


def run(bench: Bench) -> None:
    from django_zkflags import runtime
    from django_zkflags.rules import FlagRule

    out: dict[str, Any] = {}
    assert bench.children is not None
    writer = runtime.get_runtime().writer()
    shared_file = os.path.join(bench.tmp, "watchers.snapshot")
    for n in bench.plan.watchers:
        log(f"propagation to {n} watching process(es), {bench.plan.changes} changes")
        kids = [spawn_watcher(bench.children, bench.url, "prop", shared_file) for _ in range(n)]
        try:
            for kid in kids:
                wait_ready(kid)
            version = writer.reader.flag("prop").version
            everyone = False
            from_return: list[float] = []
            from_start: list[float] = []
            write_ms: list[float] = []
            missing = 0
            for _i in range(bench.plan.changes):
                time.sleep(random.uniform(0.002, 0.012))
                everyone = not everyone
                marks = [kid.mark() for kid in kids]
                t_start = time.monotonic()
                version = writer.write_flag(FlagRule("prop", everyone=everyone), version).version
                t_ret = time.monotonic()
                write_ms.append((t_ret - t_start) * 1000)
                deadline = t_ret + 10.0
                for kid, mark in zip(kids, marks, strict=True):
                    event = kid.wait_or_none(
                        seen(version), max(0.0, deadline - time.monotonic()), after=mark
                    )
                    if event is None:
                        missing += 1
                        continue
                    from_return.append((event["t_mono"] - t_ret) * 1000)
                    from_start.append((event["t_mono"] - t_start) * 1000)
            # Every watcher must end on the final value.
            stale = 0
            for kid in kids:
                state = kid.ask("state")
                if state.get("version") != version or state.get("everyone") != everyone:
                    stale += 1
            entry = latency_summary(from_return)
            entry.update(
                {
                    "watchers": n,
                    "changes": bench.plan.changes,
                    "missed_within_10s": missing,
                    "stale_watchers": stale,
                    "from_write_start": latency_summary(from_start),
                    "write": latency_summary(write_ms),
                    "negative": sum(1 for x in from_return if x < 0),
                }
            )
            out[str(n)] = entry
        finally:
            for kid in kids:
                kid.close()
    bench.results["propagation"] = out
