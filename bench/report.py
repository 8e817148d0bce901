"""The benchmark's report: targets, the table printed at the end, the chart (matplotlib, when
installed) and what the machine is."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .harness import Plan, version_of


def evaluate_targets(results: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: Any, passed: bool | None, shown: str) -> None:
        targets.append({"target": name, "value": value, "pass": passed, "shown": shown})

    checks = results.get("flag_check")
    if checks:
        b = checks["boolean"]
        add(
            "boolean check <= 1 us (median)",
            b["zkflags_worst_ns"],
            b["zkflags_worst_ns"] <= 1000,
            f"{b['zkflags_worst_ns']:.0f} ns",
        )
        for key, need, label in (
            ("waffle_locmem_over_zkflags", 20, "waffle LocMem"),
            ("waffle_redis_over_zkflags", 100, "waffle Redis"),
        ):
            value = b.get(key)
            add(
                f"boolean check >= {need}x faster than {label}",
                value,
                None if value is None else value >= need,
                "n/a" if value is None else f"{value:.0f}x",
            )
        floor = b.get("zkflags_over_call")
        add(
            "boolean check <= 2x a call of def f(d, k): return d.get(k)",
            floor,
            None if floor is None else floor <= 2.0,
            "n/a"
            if floor is None
            else f"{floor:.1f}x ({b['zkflags_worst_ns']:.0f} vs "
            f"{b['variants']['call']['median_ns']:.0f} ns)",
        )
        p = checks["percent"]
        for ns_limit in (2000, 1000):
            add(
                f"percent check <= {ns_limit // 1000} us (median)",
                p["zkflags_worst_ns"],
                p["zkflags_worst_ns"] <= ns_limit,
                f"{p['zkflags_worst_ns']:.0f} ns",
            )
    prop = results.get("propagation")
    if prop is not None:
        for n, limit in (("1", 20.0), ("16", 60.0)):
            entry = prop.get(n)
            value = entry["p99_ms"] if entry else None
            ok = None
            if entry:
                ok = value is not None and value <= limit and entry["stale_watchers"] == 0
            add(
                f"propagation p99 <= {limit:.0f} ms with {n} watcher(s), 0 stale",
                value,
                ok,
                "n/a" if value is None else f"{value:.1f} ms",
            )
    scale = results.get("scale")
    changes = results.get("changes")
    if scale is not None or changes is not None:
        for size, cold_limit, mem_limit in ((10_000, 1000, 30), (100_000, 2000, 150)):
            if size not in plan.scale_sizes and size not in plan.apply_sizes:
                continue
            cold, mem = process_figures(results, size)
            add(
                f"{size:,} flags: cold start < {cold_limit / 1000:g} s",
                cold,
                None if cold is None else cold < cold_limit,
                "n/a" if cold is None else f"{cold:.0f} ms",
            )
            add(
                f"{size:,} flags: <= {mem_limit} MB RSS over an empty app",
                mem,
                None if mem is None else mem <= mem_limit,
                "n/a" if mem is None else f"{mem:.1f} MB",
            )
    if scale is not None:
        per_size = {
            size: entry["watches_per_process"]
            for size, entry in scale.items()
            if size != "0" and "watches_per_process" in entry
        }
        flat = {w for ws in per_size.values() for w in ws}
        add(
            "constant number of watches per process",
            per_size,
            len(flat) == 1 and 0 not in flat,
            ", ".join(f"{s}: {sorted(set(w))}" for s, w in per_size.items()),
        )
    if changes is not None:
        for key in ("10000", "100000"):
            entry = changes["apply"].get(key)
            if entry is None:
                continue
            apply = entry.get("apply")
            for stat, ms_limit in (("p50_ms", 2.0), ("max_ms", 10.0)):
                value = apply[stat] if apply else None
                add(
                    f"{int(key):,} flags: per-change apply {stat[:-3]} <= {ms_limit:g} ms",
                    value,
                    None if value is None else value <= ms_limit,
                    "n/a" if value is None else f"{value:.2f} ms",
                )
        for key, entry in changes["burst"].items():
            during = entry.get("during")
            value = during["latency"]["p99"] if during else None
            add(
                f"{int(key):,} flags: request p99 <= 10 ms during a change burst",
                value,
                None if value is None else value <= 10.0,
                "n/a"
                if value is None
                else f"{value:.1f} ms (max {during['latency']['max']:.1f} ms)",
            )
    request = results.get("request")
    if request is not None:
        overhead = request["overhead_ns"]
        add(
            "middleware + decorator add <= 10 us per request",
            overhead,
            overhead <= 10_000,
            f"{overhead / 1000:.1f} us",
        )
    admin = results.get("admin_list")
    if admin and "error" not in admin and any(int(size) >= 100 for size in admin):
        # The baseline: the smallest list whose pages are all full (100 rows), 1,000 flags
        # when there is one (the filtered page of 100 flags holds fewer rows).
        sizes = sorted((size for size in admin if int(size) >= 100), key=int)
        if "1000" in admin and len(sizes) > 2:
            sizes = [size for size in sizes if int(size) >= 1000]
        small, large = admin[sizes[0]], admin[sizes[-1]]
        same = all(large[page]["queries"] == small[page]["queries"] for page in small)
        worst = max(large[page]["ms"] / max(small[page]["ms"], 1.0) for page in small)
        add(
            f"admin list at {int(sizes[-1]):,} flags: same SQL queries and <= 2x the time "
            f"of {int(sizes[0]):,}",
            worst,
            same and worst <= 2.0,
            f"{'same' if same else 'more'} queries, {worst:.2f}x",
        )
    return targets


def process_figures(results: dict[str, Any], size: int) -> tuple[float | None, float | None]:
    """Cold start (ms) and RSS over an empty app (MB) of a watching process at ``size``
    flags: from "scale" (the median of its cold starts), else from "changes"."""
    entry = (results.get("scale") or {}).get(str(size)) or {}
    if "cold_start_ms" in entry:
        return entry["cold_start_ms"]["median"], entry.get("rss_over_empty_mb")
    entry = ((results.get("changes") or {}).get("processes") or {}).get(str(size)) or {}
    return entry.get("cold_start_ms"), entry.get("rss_over_empty_mb")


def fmt_ns(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100_000:
        return f"{value / 1000:,.0f} us"
    if value >= 10_000:
        return f"{value / 1000:.1f} us"
    return f"{value:,.0f} ns"


def fmt_x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}x"


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def fmt_ms2(value: float | None) -> str:
    """Milliseconds with two decimals under 10 ms (apply costs)."""
    if value is None:
        return "n/a"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} MB"


def sized_rows(
    add: Callable[[str], None], title: list[str], header: str, entries: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Print a section's title and header, then yield its entries by size; an entry that
    failed (``error``) is printed as such instead."""
    add("")
    for line in title:
        add(line)
    add(header)
    for size, entry in entries.items():
        if "error" in entry:
            add(f"  {int(size):>9,}  n/a: {entry['error'][:100]}")
        else:
            yield size, entry


def changes_table(changes: dict[str, Any], add: Callable[[str], None]) -> None:
    """The "changes" scenario's rows."""
    for size, e in sized_rows(
        add,
        [
            "Applying one change in a watching process (its watch thread: decode + compile +",
            "publish; reads: ZooKeeper), changes to flags picked at random, one at a time",
        ],
        "      flags  changes  apply p50  apply max   read p50  visible p50  visible max"
        "  write p50   cold start  RSS over empty",
        changes.get("apply") or {},
    ):
        apply, read = e.get("apply") or {}, e.get("read") or {}
        proc = changes.get("processes", {}).get(size, {})
        add(
            f"  {int(size):>9,}  {e['changes']:>7}  {fmt_ms2(apply.get('p50_ms')):>9}"
            f"  {fmt_ms2(apply.get('max_ms')):>9}  {fmt_ms2(read.get('p50_ms')):>9}"
            f"  {fmt_ms2(e['visible']['p50_ms']):>11}  {fmt_ms2(e['visible']['max_ms']):>11}"
            f"  {fmt_ms2(e['write']['p50_ms']):>9}  {fmt_ms(proc.get('cold_start_ms')):>11}"
            f"  {fmt_mb(proc.get('rss_over_empty_mb')):>14}"
        )
    for size, e in sized_rows(
        add,
        [
            "Requests served by a process (Django handler + FlagMiddleware, a fixed rate) while",
            "another process writes a burst of changes; ms from when each request was due",
            "(CPU wait: how long the requests' thread waited for a CPU, the machine's doing)",
        ],
        "      flags  changes  rate/s  burst     quiet p50  quiet p99  burst p50  burst p99"
        "  burst max  >10 ms  apply max  CPU wait",
        changes.get("burst") or {},
    ):
        q, d = e["quiet"]["latency"], e["during"]["latency"]
        apply = e.get("apply") or {}
        add(
            f"  {int(size):>9,}  {e['changes']:>7}  {e['rate']:>6}  {e['burst_seconds']:>5.2f} s"
            f"  {fmt_ms2(q['p50']):>9}  {fmt_ms2(q['p99']):>9}  {fmt_ms2(d['p50']):>9}"
            f"  {fmt_ms2(d['p99']):>9}  {fmt_ms2(d['max']):>9}  {d['over_10ms']:>6}"
            f"  {fmt_ms2(apply.get('max_ms')):>9}  {fmt_ms(e['during'].get('runqueue_wait_ms')):>8}"
        )


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    meta = results["meta"]
    add(
        f"django-zkflags benchmark ({'smoke' if meta['smoke'] else 'full'} run), "
        f"{meta['cpu']} x{meta['cpus']}, Python {meta['python']}, Django {meta['django']}, "
        f"kazoo {meta['kazoo']}, waffle {meta['waffle']}"
    )
    start_load = meta["loadavg_start"][0]
    end_load = meta.get("loadavg_end", [0.0])[0]
    add(f"load average (1 min) at start / end: {start_load:.1f} / {end_load:.1f}")
    # At the start only: by the end the benchmark's own watcher processes weigh in.
    if start_load > 0.5 * (meta["cpus"] or 1):
        add(
            "WARNING: the machine was busy with other work; wall-clock figures are inflated "
            "(CPU-time figures are in results.json)"
        )
    checks = results.get("flag_check")
    if checks:
        add("")
        add("One flag check, ns per check (median)      boolean      percent   user+group")
        rows = [
            ("plain dict lookup (floor)", "dict"),
            ("call of def f(d, k): return d.get(k)", "call"),
            ("zkflags, no request.flags", "zkflags"),
            ("zkflags, request.flags (memoised)", "zkflags_request_flags"),
            ("zkflags, RequestFlags() + first check", "zkflags_first_check"),
            ("zkflags explain(request, name)", "zkflags_explain"),
            ("zkflags async, no request.flags", "zkflags_async"),
            ("zkflags async, request.flags (memoised)", "zkflags_async_request_flags"),
            ("zkflags async, new RequestFlags + first", "zkflags_async_first_check"),
            ("waffle, LocMem cache", "waffle_locmem"),
            ("waffle, Redis cache", "waffle_redis"),
        ]
        for label, key in rows:
            cells = [
                fmt_ns(checks[rule]["variants"].get(key, {}).get("median_ns"))
                for rule in ("boolean", "percent", "user_group")
            ]
            add(f"  {label:<40}" + "".join(f"{c:>13}" for c in cells))
        for label, key in (
            ("waffle LocMem / zkflags (slower path)", "waffle_locmem_over_zkflags"),
            ("waffle Redis / zkflags (slower path)", "waffle_redis_over_zkflags"),
            ("zkflags / dict", "zkflags_over_dict"),
            ("zkflags (slower path) / call", "zkflags_over_call"),
        ):
            cells = [fmt_x(checks[rule].get(key)) for rule in ("boolean", "percent", "user_group")]
            add(f"  {label:<40}" + "".join(f"{c:>13}" for c in cells))
    tpl = results.get("template")
    if tpl:
        add("")
        add(f"Template with {tpl['blocks']} flag blocks, per render (median)")
        for label, key in (
            ("plain {% if %} on context booleans", "plain_if"),
            ("zkflags {% flag %}, no request.flags", "zkflags"),
            ("zkflags {% flag %}, new RequestFlags", "zkflags_request_flags"),
            ("waffle {% flag %}, LocMem", "waffle_locmem"),
            ("waffle {% flag %}, Redis", "waffle_redis"),
        ):
            value = tpl["variants"].get(key, {}).get("median_ns")
            add(f"  {label:<40}{fmt_ns(value):>13}")
        add(f"  {'zkflags / plain if':<40}{fmt_x(tpl['zkflags_over_plain_if']):>13}")
        for key in ("waffle_locmem", "waffle_redis"):
            if f"{key}_over_zkflags" in tpl:
                add(f"  {key + ' / zkflags':<40}{fmt_x(tpl[key + '_over_zkflags']):>13}")
    req = results.get("request")
    if req:
        add("")
        add("Full request (test client, anonymous user), per request (median)")
        v = req["variants"]
        add(f"  {'stack without flags, plain view':<40}{fmt_ns(v['plain_stack']['median_ns']):>13}")
        add(
            f"  {'stack + FlagMiddleware, @flag_required':<40}"
            f"{fmt_ns(v['flag_stack']['median_ns']):>13}"
        )
        add(f"  {'overhead':<40}{fmt_ns(req['overhead_ns']):>13}")
        add(f"  {'overhead, CPU time':<40}{fmt_ns(req['overhead_cpu_ns']):>13}")
        add(
            f"  {'overhead, middleware+decorator alone':<40}"
            f"{fmt_ns(req['overhead_isolated_ns']):>13}"
        )
    prop = results.get("propagation")
    if prop:
        add("")
        add("Propagation to N watching processes: write returned -> visible in each watcher")
        add(
            "  watchers  changes      p50       p99       max   p99 from write start"
            "   stale watchers  missed"
        )
        for n, e in prop.items():
            add(
                f"  {n:>8}  {e['changes']:>7}  {fmt_ms(e['p50_ms']):>8}  {fmt_ms(e['p99_ms']):>8}"
                f"  {fmt_ms(e['max_ms']):>8}  {fmt_ms(e['from_write_start']['p99_ms']):>21}"
                f"  {e['stale_watchers']:>15}  {e['missed_within_10s']:>6}"
            )
    scale = results.get("scale")
    if scale:
        add("")
        add(
            "Scale        snapshot  head + largest shard  cold start  RSS over empty"
            "  watches/process  change p50   change max"
        )
        for size, e in scale.items():
            if "error" in e:
                add(f"  {int(size):>7,}  n/a: {e['error'][:100]}")
                continue
            p = e["propagation"] or {}
            add(
                f"  {int(size):>7,}  {e['snapshot_bytes'] / 1024:>7.0f} KB"
                f"  {e.get('head_bytes', 0) / 1024:>7.1f} + {e.get('largest_shard_bytes', 0) / 1024:>5.1f} KB"
                f"  {fmt_ms(e['cold_start_ms']['median']):>10}"
                f"  {fmt_mb(e['rss_over_empty_mb']):>14}"
                f"  {str(sorted(set(e['watches_per_process']))):>15}"
                f"  {fmt_ms(p.get('p50_ms')):>10}  {fmt_ms(p.get('max_ms')):>11}"
            )
    admin = results.get("admin_list")
    if admin and "error" not in admin:
        add("")
        add("Admin list   " + "".join(f"{page:>24}" for page in next(iter(admin.values()))))
        for size, pages in admin.items():
            add(
                f"  {int(size):>7,}  "
                + "".join(f"{e['ms']:>13.0f} ms, {e['queries']:>2} SQL" for e in pages.values())
            )
    changes = results.get("changes")
    if changes:
        changes_table(changes, add)
    targets = results.get("targets")
    if targets:
        add("")
        add("Targets")
        for t in targets:
            status = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
            add(f"  [{status}] {t['target']:<64} {t['shown']}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 3, figsize=(18, 9))
    checks = results.get("flag_check")
    ax = axes[0][0]
    if checks:
        keys = [
            "dict",
            "call",
            "zkflags",
            "zkflags_request_flags",
            "zkflags_first_check",
            "waffle_locmem",
            "waffle_redis",
        ]
        rules = ["boolean", "percent", "user_group"]
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            values = [checks[r]["variants"].get(key, {}).get("median_ns") for r in rules]
            if all(v is None for v in values):
                continue
            xs = [j + i * width for j in range(len(rules))]
            ax.bar(xs, [v or 0 for v in values], width, label=key)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rules))], rules)
        ax.set_yscale("log")
        ax.set_ylabel("ns per check (log)")
        ax.set_title("One flag check")
        ax.legend(fontsize=7)
    tpl = results.get("template")
    ax = axes[0][1]
    if tpl:
        names = list(tpl["variants"])
        ax.bar(names, [tpl["variants"][n]["median_ns"] / 1000 for n in names])
        ax.set_ylabel("us per render")
        ax.set_yscale("log")
        ax.set_title(f"Template, {tpl['blocks']} flag blocks")
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    prop = results.get("propagation")
    ax = axes[1][0]
    if prop:
        ns = list(prop)
        for stat in ("p50_ms", "p99_ms", "max_ms"):
            ax.plot([int(n) for n in ns], [prop[n][stat] for n in ns], marker="o", label=stat)
        ax.set_xlabel("watching processes")
        ax.set_ylabel("ms, write returned -> visible")
        ax.set_title("Propagation")
        ax.legend()
    scale = results.get("scale")
    ax = axes[1][1]
    if scale:
        sizes = [s for s in scale if s != "0" and "error" not in scale[s]]
        ax.plot(
            [int(s) for s in sizes],
            [scale[s]["cold_start_ms"]["median"] for s in sizes],
            marker="o",
            label="cold start (ms)",
        )
        ax.plot(
            [int(s) for s in sizes],
            [scale[s]["rss_over_empty_mb"] for s in sizes],
            marker="s",
            label="RSS over empty (MB)",
        )
        ax.set_xscale("log")
        ax.set_xlabel("flags")
        ax.set_title("Scale")
        ax.legend()
    changes = results.get("changes")
    if changes:
        plot_changes(changes, axes[0][2], axes[1][2])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"Model name:\s*(.+)", text)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": version_of("django"),
        "kazoo": version_of("kazoo"),
        "waffle": version_of("django-waffle"),
        "redis_py": version_of("redis"),
        "matplotlib": version_of("matplotlib"),
    }


def plot_changes(changes: dict[str, Any], apply_ax: Any, burst_ax: Any) -> None:
    """Per-change apply cost against the number of flags; request latency during bursts."""
    apply = {s: e for s, e in changes.get("apply", {}).items() if e.get("apply")}
    if apply:
        xs = [int(s) for s in apply]
        for stat, marker in (("p50_ms", "o"), ("max_ms", "^")):
            apply_ax.plot(
                xs, [apply[s]["apply"][stat] for s in apply], marker=marker, label=f"apply {stat}"
            )
        read = [(int(s), e["read"]["p50_ms"]) for s, e in apply.items() if e.get("read")]
        if read:
            apply_ax.plot(*zip(*read, strict=True), marker="s", label="read p50_ms")
        apply_ax.axhline(2.0, color="grey", linestyle=":", linewidth=1)
        apply_ax.axhline(10.0, color="grey", linestyle="--", linewidth=1)
        apply_ax.set_xscale("log")
        apply_ax.set_yscale("log")
        apply_ax.set_xlabel("flags")
        apply_ax.set_ylabel("ms per applied change (log)")
        apply_ax.set_title("Applying one change (targets 2 ms p50, 10 ms max)")
        apply_ax.legend(fontsize=8)
    burst = {s: e for s, e in changes.get("burst", {}).items() if "during" in e}
    if burst:
        xs = [int(s) for s in burst]
        for label, part, stat in (
            ("quiet p99", "quiet", "p99"),
            ("burst p50", "during", "p50"),
            ("burst p99", "during", "p99"),
            ("burst max", "during", "max"),
        ):
            burst_ax.plot(
                xs, [burst[s][part]["latency"][stat] for s in burst], marker="o", label=label
            )
        burst_ax.axhline(10.0, color="grey", linestyle="--", linewidth=1)
        burst_ax.set_xscale("log")
        burst_ax.set_yscale("log")
        burst_ax.set_xlabel("flags")
        burst_ax.set_ylabel("ms from when the request was due (log)")
        burst_ax.set_title("Requests during a burst of changes (target p99 10 ms)")
        burst_ax.legend(fontsize=8)
