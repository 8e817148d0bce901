"""``bench/run.py --smoke`` runs to the end and writes what it should, so the benchmark
cannot rot unnoticed. Timings are not judged here (the targets are the benchmark's own
report); what the run shows about behaviour is: every implementation gives the same
answers, a django-zkflags check does no I/O, every watcher ends on the last value, and a
process holds one ZooKeeper watch whatever the number of flags."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.zookeeper import ZooKeeperError, find_classpath, find_java

from ..conftest import require_zookeeper

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"
SECTIONS = {
    "meta",
    "flag_check",
    "template",
    "request",
    "propagation",
    "scale",
    "changes",
    "targets",
}
ZK_VARIANTS = ("zkflags", "zkflags_request_flags", "zkflags_first_check")

pytestmark = pytest.mark.slow

HAVE_WAFFLE = importlib.util.find_spec("waffle") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    try:
        find_java()
        find_classpath()
    except ZooKeeperError as exc:
        require_zookeeper(exc)
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, (
        f"bench/run.py --smoke exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
    assert "Targets" in proc.stdout  # the table was printed
    return out, json.loads((out / "results.json").read_text())


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_writes_results_with_every_section(smoke_run: tuple[Path, dict]) -> None:
    out, results = smoke_run
    assert SECTIONS <= results.keys()
    assert results["meta"]["smoke"] is True
    assert (out / "results.png").exists() == HAVE_MATPLOTLIB
    for target in results["targets"]:
        assert target["pass"] in (True, False, None)
        assert target["target"] and target["shown"]


def test_flag_checks_agree_and_do_no_io(smoke_run: tuple[Path, dict]) -> None:
    checks = smoke_run[1]["flag_check"]
    assert set(checks) == {"boolean", "percent", "user_group"}
    for label, entry in checks.items():
        variants = entry["variants"]
        for key in ("dict", *ZK_VARIANTS):
            assert positive(variants[key]["median_ns"]), (label, key)
        # Served from the in-memory snapshot: no SQL, no cache server.
        for key in ZK_VARIANTS:
            assert entry["io_per_check"][key] == {"sql_queries": 0, "redis_commands": 0}
        # The three ways of asking django-zkflags give one answer.
        assert len({entry["answers"][key] for key in ZK_VARIANTS}) == 1, (label, entry)
    assert all(checks["boolean"]["answers"].values())
    # Not listed as a user, but a member of a listed group: on, everywhere.
    assert all(checks["user_group"]["answers"].values())
    if HAVE_WAFFLE:
        for label in checks:
            assert positive(checks[label]["variants"]["waffle_locmem"]["median_ns"])
            assert positive(checks[label]["waffle_locmem_over_zkflags"])


def test_template_renders_the_same_html_everywhere(smoke_run: tuple[Path, dict]) -> None:
    template = smoke_run[1]["template"]
    assert template["blocks"] == 20
    assert template["same_output"] and all(template["same_output"].values())
    assert "zkflags" in template["same_output"]
    for key, io in template["io_per_render"].items():
        if key.startswith("zkflags") or key == "plain_if":
            assert io == {"sql_queries": 0, "redis_commands": 0}
    if HAVE_WAFFLE:
        assert "waffle_locmem" in template["same_output"]


def test_request_overhead_is_measured(smoke_run: tuple[Path, dict]) -> None:
    request = smoke_run[1]["request"]
    for key in ("plain_stack", "flag_stack"):
        assert positive(request["variants"][key]["median_ns"])
    for key in ("overhead_ns", "overhead_isolated_ns", "overhead_cpu_ns"):
        assert math.isfinite(request[key])


def test_every_watcher_ends_on_the_last_value(smoke_run: tuple[Path, dict]) -> None:
    propagation = smoke_run[1]["propagation"]
    assert propagation
    for n, entry in propagation.items():
        assert entry["stale_watchers"] == 0, entry
        assert entry["missed_within_10s"] == 0, entry
        assert entry["count"] == int(n) * entry["changes"]
        assert entry["p50_ms"] <= entry["p99_ms"] <= entry["max_ms"]


def test_one_watch_per_process_at_every_size(smoke_run: tuple[Path, dict]) -> None:
    scale = smoke_run[1]["scale"]
    assert "0" in scale and len(scale) >= 3
    for size, entry in scale.items():
        assert entry["flags"] == int(size)
        assert entry["watches_per_process"] and set(entry["watches_per_process"]) == {1}
        assert positive(entry["cold_start_ms"]["median"])
        assert entry["stale_watchers"] == 0
        if size != "0":
            assert entry["propagation"]["count"] >= 1
            assert entry["propagation_missed_within_30s"] == 0


def test_a_change_costs_a_watching_process_one_shard_at_every_size(
    smoke_run: tuple[Path, dict],
) -> None:
    changes = smoke_run[1]["changes"]
    assert changes["apply"]
    for size, entry in changes["apply"].items():
        assert entry["missed"] == 0, (size, entry)
        assert entry["applied"] >= entry["changes"] >= 1, (size, entry)
        assert entry["shards_read_per_change"] == 1.0, (size, entry)
        assert all(ms >= 0 for ms in entry["apply_ms"]), (size, entry)
    for size, entry in changes["burst"].items():
        assert entry["applied"] >= 1, (size, entry)
