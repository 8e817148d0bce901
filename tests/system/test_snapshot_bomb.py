"""A decompression bomb in the snapshot znode, handed to a whole Django process.

An operator (or an attacker with write access to the tree) writes a small snapshot that
inflates enormously: ``ZKF1`` + zlib of hundreds of megabytes of whitespace. Every process
of the fleet reads it at once. The process here is a separate OS process
(``tests/support/flagwatcher.py``) so that its memory can be read from
``/proc/<pid>/status`` without the test runner's own allocations in the way.

It must refuse the snapshot as corrupt without inflating it past
``ZKFLAGS["MAX_SNAPSHOT_BYTES"]`` (64 MiB by default), keep serving its last good snapshot,
say why in ``status()["last_error"]``, and follow the next good snapshot.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from django_zkflags import conf
from django_zkflags.snapshot import MAGIC
from tests.support.children import Child, Children

from ..conftest import wait_until

MIB = 1024 * 1024
#: What the peak memory (VmHWM) of a process may grow by when it is handed a bomb. The
#: bomb is measured a 1 MiB step at a time (each dropped), so not even the bound (64 MiB)
#: is ever held. Before the bound, a 200 MiB bomb grew it by about 400 MiB (the inflated
#: bytes, then their decoded copy), and a 1 MB one by about 2 GB.
PEAK_GROWTH_BOUND_KB = 32 * 1024


def bomb(inflated_mib: int) -> bytes:
    """``ZKF1`` + zlib of ``inflated_mib`` MiB of spaces (about 1 KB per MiB)."""
    compressor = zlib.compressobj(9)
    chunk = b" " * MIB
    parts = [compressor.compress(chunk) for _ in range(inflated_mib)]
    return MAGIC + b"".join(parts) + compressor.flush()


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak so far) of a process, in KB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(rest.split()[0])
    return found


@pytest.fixture
def operator(zkflags: Any) -> Iterator[KazooClient]:
    """A second client, writing into the app's znodes as an operator would."""
    client = KazooClient(hosts=zkflags.server.hosts, timeout=10.0)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def last_error(child: Child) -> str | None:
    error = child.status()["status"]["last_error"]
    return str(error) if error else None


def refused(child: Child) -> str | None:
    """The child's last error, once it is about something else than the empty node."""
    error = last_error(child)
    return error if error and "empty" not in error else None


def test_a_decompression_bomb_is_refused_without_inflating_it(
    zkflags: Any, operator: KazooClient, tmp_path: Path
) -> None:
    assert conf.get("MAX_SNAPSHOT_BYTES") == 64 * MIB  # the default, as in the children
    zkflags.write("banner", everyone=True)
    snapshot_path = f"{zkflags.root}/snapshot"
    with Children(tmp_path) as children:
        child = children.spawn(zkflags.url, "banner", startup_timeout=5.0)
        child.wait_value(active=True, version=0, source="zookeeper")
        child.ask("rss")
        start = memory_kb(child.pid)
        figures = []
        for inflated_mib in (200, 1000):  # 204 KB (the issue's), then 1 MB: the znode limit
            data = bomb(inflated_mib)
            assert len(data) < 1024 * 1024
            started = time.monotonic()
            operator.set(snapshot_path, data)
            error = wait_until(lambda: refused(child), timeout=60.0)
            seconds = time.monotonic() - started
            seen = memory_kb(child.pid)
            figures.append((inflated_mib, len(data), seen))
            print(
                f"bomb of {len(data) / 1024:.0f} KB ({inflated_mib} MiB inflated): "
                f"VmRSS {start['VmRSS'] // 1024} -> {seen['VmRSS'] // 1024} MB, "
                f"VmHWM {start['VmHWM'] // 1024} -> {seen['VmHWM'] // 1024} MB; refused within "
                f"{seconds:.2f} s: {error}"
            )
            assert "MAX_SNAPSHOT_BYTES" in error, error
            # Its last good snapshot is still served.
            state = child.ask("state")
            assert (state["active"], state["version"], state["flags"]) == (True, 0, 1)
            # The snapshot in the process's own runtime (the test runner) was refused too.
            wait_until(
                lambda: "MAX_SNAPSHOT_BYTES" in (zkflags.runtime.status()["last_error"] or "")
            )
            operator.set(snapshot_path, b"")  # back to an unreadable-but-small node
            wait_until(lambda: "empty" in (last_error(child) or ""), timeout=30.0)
        for _, _, seen in figures:
            assert seen["VmHWM"] - start["VmHWM"] < PEAK_GROWTH_BOUND_KB, figures
        # The next good snapshot (the app's next write rebuilds it) is followed again.
        zkflags.write("banner", everyone=False)
        child.wait_value(active=False, version=1, source="zookeeper", timeout=30.0)
        assert last_error(child) is None
