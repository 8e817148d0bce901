"""Scale: what 0, 100, 1,000, 10,000 (and 100,000) flags cost a watching process: cold
start, RSS over an empty app, watches per process, and one change reaching it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..context import Bench
from ..harness import (
    count_watches,
    latency_summary,
    log,
    seen,
    spawn_watcher,
    summarize,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]


def run(bench: Bench) -> None:
    from django_zkflags.snapshot import compile_entries

    assert bench.children is not None
    out: dict[str, Any] = {}
    for size in (0, *bench.plan.scale_sizes):
        log(f"scale: {size:,} flags")
        try:
            tree = bench.tree(size)
        except RuntimeError as exc:
            log(f"scale: {exc}")
            out[str(size)] = {"flags": size, "error": str(exc)}
            continue
        probe = tree.names[0] if tree.names else None
        t0 = time.perf_counter()
        stored = tree.writer.reader.snapshot()
        t1 = time.perf_counter()
        compile_entries(stored.flags)
        t2 = time.perf_counter()
        cold: list[float] = []
        rss: list[int] = []
        watches: list[int] = []
        prop: list[float] = []
        write_ms: list[float] = []
        missed = stale = 0
        for r in range(bench.plan.scale_repeats):
            snap_file = os.path.join(bench.tmp, f"scale-{size}-{r}.snapshot")
            kid = spawn_watcher(bench.children, tree.url, probe or "absent", snap_file)
            try:
                ready = wait_ready(kid)
                if ready["flags"] != size:
                    raise RuntimeError(f"child loaded {ready['flags']} flags, not {size}")
                cold.append(ready["watcher_start_seconds"] * 1000)
                rss.append(ready["rss_kb"])
                watches.append(count_watches(bench.zk).get(ready["session_id"], 0))
                if r == 0 and probe is not None:
                    version = everyone = None
                    for _i in range(bench.plan.scale_changes):
                        time.sleep(0.01)
                        mark = kid.mark()
                        version, everyone, t_start, t_ret = tree.toggle(probe)
                        write_ms.append((t_ret - t_start) * 1000)
                        event = kid.wait_or_none(seen(version), 30.0, after=mark)
                        if event is not None:
                            prop.append((event["t_mono"] - t_ret) * 1000)
                        else:
                            missed += 1
                    state = kid.ask("state")
                    if state["version"] != version or state["everyone"] != everyone:
                        stale += 1
            finally:
                kid.close()
        out[str(size)] = {
            "flags": size,
            "snapshot_bytes": tree.snapshot_bytes,
            "head_bytes": tree.head_bytes,
            "largest_shard_bytes": tree.largest_shard_bytes,
            "read_decode_ms_in_parent": (t1 - t0) * 1000,
            "compile_ms_in_parent": (t2 - t1) * 1000,
            "decode_compile_ms_in_parent": (t2 - t0) * 1000,
            "populate_seconds": tree.populate_seconds,
            "rebuild_snapshot_seconds": tree.rebuild_seconds,
            "cold_start_ms": summarize(cold),
            "rss_kb": summarize(rss),
            "watches_per_process": watches,
            "propagation": latency_summary(prop) if prop else None,
            "propagation_missed_within_30s": missed,
            "stale_watchers": stale,
            "write": latency_summary(write_ms) if write_ms else None,
        }
    empty = out.get("0", {}).get("rss_kb")
    for entry in out.values():
        if "rss_kb" in entry:
            entry["rss_over_empty_mb"] = (
                (entry["rss_kb"]["median"] - empty["median"]) / 1024 if empty else None
            )
    bench.results["scale"] = out
    bench.results["admin_list"] = admin_list(bench)


def admin_list(bench: Bench) -> dict[str, Any]:
    """The admin's flag list at each size (bench/admin_list.py, a process of its own)."""
    # 100 flags: a full first page, the baseline the larger lists are held to.
    sizes = [str(size) for size in sorted({100, *bench.plan.scale_sizes})]
    log(f"admin list: {', '.join(sizes)} flags")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.admin_list", "--zk", f"{bench.url}-admin", *sizes],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        log(f"admin list failed: {proc.stderr[-2000:]}")
        return {"error": proc.stderr[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
