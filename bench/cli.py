"""The benchmark's command line: ``python bench/run.py`` or ``python -m bench``
(``--smoke``, ``--out DIR``, ``--only SECTIONS``, ``--chart PATH``)."""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import bench as package

from .context import Bench
from .django_app import configure_django
from .harness import FULL, SECTIONS, SMOKE, Children, Plan, RedisServer, log
from .report import evaluate_targets, machine, plot, table
from .scenarios import SCENARIOS

HERE = Path(__file__).resolve().parent
#: The chart a full run leaves for the README.
DOC_CHART = HERE.parent / "docs" / "images" / "bench.png"


def run(
    plan: Plan, out_dir: Path, only: Iterable[str], chart: Path | None = None
) -> dict[str, Any]:
    """Run the scenarios (``only``: a subset), print the table, write results.json and
    results.png to ``out_dir``, and the chart to ``chart`` too when given."""
    from tests.support.zookeeper import ZooKeeperServer

    only = set(only)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="zkflags-bench-")
    try:
        import waffle  # noqa: F401

        have_waffle = True
    except ImportError:
        have_waffle = False
    try:
        import redis  # noqa: F401

        have_redis_py = True
    except ImportError:
        have_redis_py = False
    bench = Bench(plan=plan, tmp=tmp, have_waffle=have_waffle, have_redis=False)
    meta = {
        **machine(),
        "smoke": plan.smoke,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg(),
    }
    bench.results["meta"] = meta
    try:
        log("starting ZooKeeper")
        bench.zk = ZooKeeperServer(data_dir=os.path.join(tmp, "zk"))
        bench.zk.start()
        srvr = bench.zk.four_letter("srvr")
        match = re.search(r"Zookeeper version: ([^,\s]+)", srvr)
        meta["zookeeper"] = match.group(1) if match else None
        if have_waffle and have_redis_py:
            try:
                bench.redis = RedisServer(os.path.join(tmp, "redis"))
                os.makedirs(bench.redis.directory)
                bench.redis.start()
                bench.have_redis = True
                meta["redis_server"] = bench.redis.version
            except (RuntimeError, OSError) as exc:
                log(f"no Redis: {exc}")
                bench.redis = None
        bench.root = f"/zkflags-bench-{uuid.uuid4().hex[:8]}"
        bench.url = f"zk://{bench.zk.hosts}{bench.root}"
        configure_django(
            tmp, bench.url, bench.redis.port if bench.have_redis else None, have_waffle
        )
        from django_zkflags import runtime

        runtime.start(wait=15.0)
        bench.children = Children(tmp)  # each watcher's stderr goes to a file there
        bench.populate()
        gc.collect()
        for name, scenario in SCENARIOS.items():
            if not only or name in only:
                scenario(bench)
    finally:
        if bench.children is not None:
            bench.children.close_all()
        bench.close()
        try:
            from django_zkflags import runtime

            runtime.stop(timeout=2.0)
        except Exception:  # Django may not be configured yet
            pass
        if bench.redis is not None:
            bench.redis.stop()
        if bench.zk is not None:
            bench.zk.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results = bench.results
    results["targets"] = evaluate_targets(results, plan)
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    if plot(results, out_dir / "results.png"):
        print(f"\nwrote {out_dir / 'results.json'} and {out_dir / 'results.png'}")
        if chart is not None:
            chart.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out_dir / "results.png", chart)
            print(f"wrote {chart}")
    else:
        print(f"\nwrote {out_dir / 'results.json'} (matplotlib not installed: no plot)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=(package.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few repeats")
    parser.add_argument("--out", default=str(HERE / "results"), help="output directory")
    parser.add_argument(
        "--chart",
        default=None,
        help=f"where the chart goes too (default: {DOC_CHART.relative_to(HERE.parent)} after "
        "a full run of every section, nowhere otherwise; '' for nowhere)",
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of sections ({', '.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.chart is None:
        chart = DOC_CHART if not args.smoke and not only else None
    else:
        chart = Path(args.chart) if args.chart else None
    run(SMOKE if args.smoke else FULL, Path(args.out), only, chart)
    return 0
