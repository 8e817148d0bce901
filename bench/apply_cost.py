"""What applying one change costs a process, in-process and side by side: the pure part of
the watch thread's work (``view.AppliedView.apply`` + ``store.publish``: decode the moved
shard, compile it, the next flags dict, publish), at several sizes and shard counts, with
no ZooKeeper. The "changes" section of bench/run.py measures the same in a watching child
process, reads included; this script isolates the choice of the shard count::

    python bench/apply_cost.py [--sizes 1000,10000,100000] [--shards 256,1024] [--changes 100]

It prints, per size and shard count: the cold apply (every shard, GC paused as the runtime
does), the per-change p50 and max, how many changes reused the spare dict, and the size of
one shard.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def measure(size: int, shards: int, changes: int) -> dict[str, Any]:
    from bench.context import mixed_rule
    from django_zkflags.cache import store
    from django_zkflags.snapshot import (
        EMPTY,
        Snapshot,
        decode_view,
        encode_head,
        encode_shard,
        shard_of,
    )
    from django_zkflags.view import AppliedView

    by_shard: dict[int, dict[str, Any]] = {}
    for i in range(size):
        rule = mixed_rule(i)
        entry = {**rule.to_document(), "version": 0}
        by_shard.setdefault(shard_of(rule.name, shards), {})[rule.name] = entry
    names = sorted(name for entries in by_shard.values() for name in entries)
    versions = {k: 0 for k in by_shard}
    raw = {k: encode_shard(k, entries)[0] for k, entries in by_shard.items()}
    store.publish(EMPTY)
    view = AppliedView()
    head = decode_view(encode_head("bench", shards, versions, {}, size))
    gc.disable()
    started = time.perf_counter()
    flags, _errors, _changed = view.apply(head, {k: (raw[k], 0) for k in raw}, {}, (), 1 << 26)
    cold_ms = (time.perf_counter() - started) * 1000
    gc.enable()
    store.publish(Snapshot(flags, source="zookeeper"))
    del flags
    gc.collect()  # the young objects of the cold apply, once, as after a process's start
    times = []
    shard_bytes = 0
    for j in range(changes):
        name = names[(j * 7919) % len(names)]
        k = shard_of(name, shards)
        old = by_shard[k][name]
        by_shard[k][name] = {**old, "version": old["version"] + 1, "note": f"change {j}"}
        versions[k] += 1
        data, _inflated = encode_shard(k, by_shard[k])
        shard_bytes = max(shard_bytes, len(data))
        head = decode_view(encode_head("bench", shards, versions, {}, size))
        started = time.perf_counter()
        flags, _errors, changed = view.apply(
            head, {k: (data, versions[k])}, store.base.flags, (), 1 << 26
        )
        store.publish(Snapshot(flags, source="zookeeper"), changed)
        times.append((time.perf_counter() - started) * 1000)
        del flags
    store.publish(EMPTY)
    return {
        "cold_ms": cold_ms,
        "p50_ms": statistics.median(times),
        "max_ms": max(times),
        "reused": view.reused,
        "copied": view.copied,
        "shard_bytes": shard_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--shards", default="256,1024")
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args(argv)
    setup()
    print(f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"{'flags':>8} {'shards':>7} {'cold':>10} {'change p50':>11} {'change max':>11}"
        f" {'reused':>7} {'copied':>7} {'one shard':>10}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for shards in (int(s) for s in args.shards.split(",")):
            r = measure(size, shards, args.changes)
            print(
                f"{size:>8,} {shards:>7,} {r['cold_ms']:>7.0f} ms {r['p50_ms']:>8.3f} ms"
                f" {r['max_ms']:>8.2f} ms {r['reused']:>7} {r['copied']:>7}"
                f" {r['shard_bytes']:>8,} B"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
