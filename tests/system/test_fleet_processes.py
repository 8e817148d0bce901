"""The fleet with real processes: flag-watcher children (``tests/support/flagwatcher.py``,
through ``tests/support/children.py``) register themselves, follow writes, keep one watch
each, vanish when SIGKILLed once ZooKeeper expires their session, register a forked child
as a process of its own, and show up as laggards when cut off. The admin's Fleet page and
``manage.py zkflags fleet`` list them. One process: tests/integration/test_fleet.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from django_zkflags.fleet import fleet_path
from tests.support.children import Child, Children
from tests.support.tcpproxy import TcpProxy

from ..conftest import wait_until, zkflags_command

pytestmark = pytest.mark.slow

FLEET_URL = "/admin/django_zkflags/flag/fleet/"
#: The SIGKILLed child's session timeout (ZooKeeper's floor is 2 ticks: 1 s here).
SHORT_SESSION = 2.0


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    with Children(tmp_path) as children:

        def start(url: str, flag: str = "banner", **options: Any) -> Child:
            return children.spawn(url, flag, startup_timeout=5.0, **options)

        yield start


def entries(client: KazooClient, root: str) -> dict[int, tuple[dict[str, Any], Any]]:
    """pid -> (fleet entry, znode stat), read straight from ZooKeeper."""
    directory = fleet_path(root)
    found = {}
    for name in client.get_children(directory) if client.exists(directory) else []:
        try:
            data, stat = client.get(f"{directory}/{name}")
        except Exception:  # gone meanwhile
            continue
        entry = json.loads(data)
        found[entry["pid"]] = (entry, stat)
    return found


def session_watches(server: Any) -> dict[str, list[str]]:
    """Session id (``0x...``) -> the paths it watches, from the server's ``wchc``."""
    watches: dict[str, list[str]] = {}
    current = None
    for line in server.four_letter("wchc").splitlines():
        if line.startswith("\t") and current is not None:
            watches[current].append(line.strip())
        elif line.strip().startswith("0x"):
            current = line.strip()
            watches.setdefault(current, [])
    return watches


def snapshot_mzxid(client: KazooClient, root: str) -> int:
    return client.exists(f"{root}/snapshot").mzxid


def wait_applied(client: KazooClient, root: str, pids: set[int], mzxid: int) -> None:
    wait_until(
        lambda: all(
            pid in (found := entries(client, root)) and found[pid][0]["zxid"] == mzxid
            for pid in pids
        ),
        timeout=30.0,
        interval=0.02,
        what=f"entries of {sorted(pids)} at zxid {mzxid:#x}",
    )


def test_two_processes_register_follow_writes_and_keep_one_watch_each(zkflags, direct, spawn):
    zkflags.write("banner", everyone=True)
    first, second = spawn(zkflags.url), spawn(zkflags.url)
    sessions = {child.pid: child.ready()["session_id"] for child in (first, second)}
    pids = {first.pid, second.pid}
    wait_applied(direct, zkflags.root, pids, snapshot_mzxid(direct, zkflags.root))

    found = entries(direct, zkflags.root)
    for child in (first, second):
        entry, stat = found[child.pid]
        assert f"{stat.ephemeralOwner:#x}" == sessions[child.pid]  # its own session
        assert entry["library"] and entry["python"] and entry["django"]
        assert entry["source"] == "zookeeper" and entry["flags"] == 1

    snapshot = f"{zkflags.root}/snapshot"
    for round_ in range(3):
        version = zkflags.write("banner", everyone=bool(round_ % 2))
        for child in (first, second):
            child.wait_value(version=version)
        stat = direct.exists(snapshot)
        wait_applied(direct, zkflags.root, pids, stat.mzxid)
        assert {entries(direct, zkflags.root)[pid][0]["version"] for pid in pids} == {stat.version}
        # Each process watches the snapshot and nothing else, the fleet included.
        watches = session_watches(zkflags.server)
        for pid in pids:
            assert watches.get(sessions[pid]) == [snapshot], (pid, watches)


@pytest.mark.django_db
def test_a_sigkilled_process_leaves_the_fleet_after_its_session_timeout(
    zkflags, direct, spawn, admin_client
):
    zkflags.write("banner", everyone=True)
    mzxid = snapshot_mzxid(direct, zkflags.root)
    survivor = spawn(zkflags.url)
    victim = spawn(zkflags.url, session_timeout=SHORT_SESSION)
    survivor.ready(), victim.ready()
    wait_applied(direct, zkflags.root, {survivor.pid, victim.pid}, mzxid)

    # The admin page and the command list both (this test process is a member too).
    page = admin_client.get(FLEET_URL)
    assert {survivor.pid, victim.pid} <= {row.member.pid for row in page.context["rows"]}
    listed = json.loads(zkflags_command("fleet", "--json"))
    assert {item["pid"] for item in listed} == {survivor.pid, victim.pid}

    killed_at = time.monotonic()
    victim.kill()  # SIGKILL: no goodbye to ZooKeeper
    wait_until(
        lambda: victim.pid not in entries(direct, zkflags.root),
        timeout=SHORT_SESSION + 15.0,
        interval=0.05,
        what="the killed process's entry to go",
    )
    gone_after = time.monotonic() - killed_at
    print(
        f"\n[fleet] SIGKILLed process left the fleet {gone_after:.2f} s after the kill "
        f"(session timeout {SHORT_SESSION:g} s)"
    )
    # ZooKeeper removed it when the session expired, not at the kill.
    assert gone_after > SHORT_SESSION / 2
    assert survivor.pid in entries(direct, zkflags.root)
    listed = json.loads(zkflags_command("fleet", "--json"))
    assert [item["pid"] for item in listed] == [survivor.pid]
    rows = admin_client.get(FLEET_URL).context["rows"]
    assert victim.pid not in {row.member.pid for row in rows}
    assert survivor.pid in {row.member.pid for row in rows}


def test_a_forked_child_registers_itself_not_its_parents_entry(zkflags, direct, spawn):
    zkflags.write("banner", everyone=True)
    process = spawn(zkflags.url, fork=True)
    parent = process.ready(role="parent")
    child = process.ready(role="child")
    pids = {parent["pid"], child["pid"]}
    wait_applied(direct, zkflags.root, pids, snapshot_mzxid(direct, zkflags.root))
    status = {role: process.status()["status"] for role in ("parent",)}
    found = entries(direct, zkflags.root)
    owners = {pid: found[pid][1].ephemeralOwner for pid in pids}
    assert owners[parent["pid"]] != owners[child["pid"]]  # a session each
    assert f"{owners[parent['pid']]:#x}" == status["parent"]["session_id"]
    assert found[parent["pid"]][0]["started_at"] <= found[child["pid"]][0]["started_at"]

    version = zkflags.write("banner", everyone=False)
    for role in ("parent", "child"):
        process.wait_value(role=role, version=version)
    wait_applied(direct, zkflags.root, pids, snapshot_mzxid(direct, zkflags.root))
    # Still one entry each (the child never rewrote or re-created its parent's).
    assert set(entries(direct, zkflags.root)) >= pids
    assert found[parent["pid"]][1].ctime == entries(direct, zkflags.root)[parent["pid"]][1].ctime


@pytest.mark.django_db
def test_a_process_cut_off_is_reported_as_a_laggard(zkflags, direct, spawn, admin_client):
    zkflags.write("banner", everyone=True)
    with TcpProxy(zkflags.server.host, zkflags.server.port) as proxy:
        cut_url = f"zk://{proxy.hosts}{zkflags.root}"
        laggard = spawn(cut_url, session_timeout=10.0)
        current = spawn(zkflags.url)
        laggard.ready(), current.ready()
        pids = {laggard.pid, current.pid}
        before = snapshot_mzxid(direct, zkflags.root)
        wait_applied(direct, zkflags.root, pids, before)

        proxy.pause()  # its session lives on (10 s); no event reaches it
        try:
            version = zkflags.write("banner", everyone=False)
            current.wait_value(version=version)  # barrier: the change was delivered
            after = snapshot_mzxid(direct, zkflags.root)
            wait_applied(direct, zkflags.root, {current.pid, os.getpid()}, after)
            assert entries(direct, zkflags.root)[laggard.pid][0]["zxid"] == before

            report = zkflags.runtime.read_fleet()
            assert [m.pid for m in report.laggards] == [laggard.pid]
            page = admin_client.get(FLEET_URL)
            assert [row.member.pid for row in page.context["laggards"]] == [laggard.pid]
            assert "1 process serves an older snapshot" in page.content.decode()
            listed = {i["pid"]: i for i in json.loads(zkflags_command("fleet", "--json"))}
            assert listed[laggard.pid]["state"] == "behind"
            assert listed[current.pid]["state"] == "current"
        finally:
            proxy.resume()
        # Back in time for its session: it catches up, and is a laggard no more.
        laggard.wait_value(version=version)
        wait_applied(direct, zkflags.root, pids | {os.getpid()}, after)
        assert zkflags.runtime.read_fleet().laggards == []
