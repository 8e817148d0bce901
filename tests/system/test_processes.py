"""Several operating-system processes around one real ZooKeeper.

The test process writes flags; other processes (``tests/support/flagwatcher.py``, a minimal
Django process whose ``AppConfig.ready`` starts the watcher, run through
``tests/support/children.py``) report what they serve, line by line. Outages are real: the
session's ZooKeeper server is stopped and started again. Every bound below is a hang
catcher, not a benchmark, except the exit and start-up times the tests assert on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_zkflags.diskcopy import HEADER as FILE_HEADER
from django_zkflags.snapshot import decode_file_payload
from tests.support.children import Child, Children, is_value
from tests.support.zookeeper import ZooKeeperServer

from ..conftest import wait_until

pytestmark = pytest.mark.slow

#: How long a process may take to exit after EOF/SIGTERM, ZooKeeper up or down.
EXIT_BOUND = 5.0
#: The children's STARTUP_TIMEOUT while ZooKeeper is down (the package default).
STARTUP_TIMEOUT = 1.0


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start flag-watcher processes; any still running at the end is killed."""
    with Children(tmp_path) as children:

        def start(url: str, flag: str, **options: Any) -> Child:
            return children.spawn(url, flag, startup_timeout=STARTUP_TIMEOUT, **options)

        yield start


@pytest.fixture
def restore_server(zk_server: ZooKeeperServer) -> Iterator[ZooKeeperServer]:
    """Whatever a test does to the session's server, it is serving again afterwards."""
    try:
        yield zk_server
    finally:
        zk_server.start()


def wait_connected(zkflags: Any) -> None:
    """This process's own client is back (writes need it)."""
    wait_until(lambda: zkflags.runtime.client.connected, timeout=15.0)


def wait_disconnected(process: Child) -> dict[str, Any]:
    return wait_until(
        lambda: (s := process.status())["status"]["connected"] is False and s,
        timeout=15.0,
        interval=0.1,
    )


def read_snapshot_file(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    header, _, data = raw.partition(b"\n")
    assert header.startswith(FILE_HEADER), raw[:80]
    return decode_file_payload(data)["flags"]


@pytest.mark.django_db
def test_change_reaches_another_process_across_an_outage(zkflags, spawn, restore_server):
    from django_zkflags.models import Flag

    # The admin's path: a model save writes ZooKeeper (services.save_flag).
    flag = Flag.objects.create(name="banner", everyone=True)
    child = spawn(zkflags.url, "banner")
    child.wait_value(active=True, version=flag.zk_version, source="zookeeper")

    flag.everyone = False
    flag.save()
    assert flag.zk_version == 1
    seen = child.wait_value(active=False, version=1)
    assert seen["source"] == "zookeeper"

    outage = child.mark()
    zkflags.server.stop()
    try:
        status = wait_disconnected(child)
        # Still running, still serving the last value it had.
        assert child.alive, child.describe()
        assert (status["flag"]["active"], status["flag"]["version"]) == (False, 1)
        assert status["status"]["source"] == "zookeeper"
        assert status["status"]["watching"] is True
    finally:
        zkflags.server.start()

    wait_connected(zkflags)
    flag.everyone = True
    flag.save()
    assert flag.zk_version == 2
    # The change after the outage is the barrier: until it, the child served nothing else.
    before = child.events_before(
        lambda e: is_value(e) and e["version"] == 2 and e["source"] == "zookeeper", outage
    )
    served = {(e["active"], e["version"], e["source"]) for e in before if is_value(e)}
    assert served <= {(False, 1, "zookeeper")}, child.describe()
    assert child.status()["status"]["connected"] is True

    assert child.close(EXIT_BOUND) < EXIT_BOUND
    child.assert_clean_exit("eof")


def test_process_started_while_zookeeper_is_down(zkflags, spawn, restore_server, tmp_path):
    snapshot_file = tmp_path / "flags.snapshot"
    version = zkflags.write("banner", everyone=True)

    # An earlier process leaves its disk copy behind.
    first = spawn(zkflags.url, "banner", snapshot_file=snapshot_file)
    first.wait_value(active=True, version=version, source="zookeeper")
    wait_until(lambda: (read_snapshot_file(snapshot_file) or {}).get("banner"))
    assert read_snapshot_file(snapshot_file)["banner"]["version"] == version
    first.close(EXIT_BOUND)
    first.assert_clean_exit("eof")

    zkflags.server.stop()
    try:
        # Two processes start with ZooKeeper away; both come up promptly on the disk copy.
        second = spawn(zkflags.url, "banner", snapshot_file=snapshot_file)
        third = spawn(zkflags.url, "banner", snapshot_file=snapshot_file)
        for process in (second, third):
            ready = process.ready()
            assert ready["startup_seconds"] < STARTUP_TIMEOUT + 3.0, process.describe()
            assert ready["source"] == "file", process.describe()
            assert (ready["active"], ready["version"]) == (True, version)

        # Ended while ZooKeeper is down: exits promptly (no hang in kazoo's exit hook).
        assert third.terminate(EXIT_BOUND) < EXIT_BOUND
        third.assert_clean_exit("sigterm")

        zkflags.server.start()
        # ZooKeeper is back: the process catches up (same flag, now from ZooKeeper), and
        # until then it served the disk copy and nothing else.
        before = second.events_before(
            lambda e: is_value(e) and e["source"] == "zookeeper" and e["version"] == version
        )
        served = {(e["active"], e["version"], e["source"]) for e in before if is_value(e)}
        assert served == {(True, version, "file")}, second.describe()
        wait_connected(zkflags)
        newer = zkflags.write("banner", everyone=False)
        second.wait_value(active=False, version=newer, source="zookeeper")

        zkflags.server.stop()
        status = wait_disconnected(second)
        assert (status["flag"]["active"], status["flag"]["version"]) == (False, newer)
        assert second.close(EXIT_BOUND) < EXIT_BOUND
        second.assert_clean_exit("eof")
    finally:
        zkflags.server.start()
    # The disk copy followed the change the second process saw.
    assert read_snapshot_file(snapshot_file)["banner"]["version"] == newer


def test_forked_child_has_a_watcher_of_its_own(zkflags, spawn):
    version = zkflags.write("banner", everyone=True)
    process = spawn(zkflags.url, "banner", fork=True)
    parent = process.ready(role="parent")
    child = process.ready(role="child")
    assert child["pid"] != parent["pid"] and child["parent"] == parent["pid"]
    # The child serves the inherited snapshot at once.
    assert (child["active"], child["version"]) == (True, version)

    # Changes after the fork reach both halves: the child's watch thread is its own
    # (threads do not survive fork()), and the parent's still works.
    for everyone in (False, True):
        version = zkflags.write("banner", everyone=everyone)
        for role in ("parent", "child"):
            process.wait_value(role=role, active=everyone, version=version)

    assert process.close(EXIT_BOUND + 2) < EXIT_BOUND + 2
    assert process.proc.returncode == 0, process.describe()
    exits = {e["role"]: e for e in process.events if e["event"] == "exit"}
    # Only the parent reads stdin: EOF ends it, and it ends the child with SIGTERM.
    assert exits["child"]["reason"] == "sigterm", process.describe()
    assert exits["parent"]["reason"] == "eof" and exits["parent"]["child_exit"] == 0
    assert "Traceback" not in process.stderr_text(), process.describe()
