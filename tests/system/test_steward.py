"""The steward with real processes and a real ZooKeeper: a site in its own processes (a
SQLite file, one root, 2 s sessions: tests/support/steward_site.py) runs
``manage.py zkflags steward`` in several processes.

* three stewards; the acting one is SIGKILLed just before a scheduled time: the change
  happens once (one audit row, one new version), late by about the session timeout;
* a steward killed between the ZooKeeper commit and the audit row: the change is not
  repeated and its audit row is written from the change record;
* a schedule set while no steward runs is run when one starts, and says how late;
* a flag znode edited with a separate kazoo client, and one with Debian's ``zkCli.sh``,
  reach a running web process within 5 s while a steward runs (which alone watches them);
* a stepped rollout walks its steps.

Each test prints its figures (``pytest -s``) for docs/steward.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kazoo.client import KazooClient

from django_zkflags.client import Requests, acl_for
from django_zkflags.conf import parse_url
from django_zkflags.schedules import Schedule, ScheduleStore, on_change
from django_zkflags.steward import contenders
from tests.support.children import Children
from tests.support.operator import zkcli, zkcli_path
from tests.support.steward_site import StewardSite

from ..conftest import require_zookeeper, wait_until

pytestmark = pytest.mark.slow

SESSION = 2.0  # the stewards' session timeout: a SIGKILLed one hands over after it
BOUND = 30.0  # waits that only a hang exceeds


@pytest.fixture(scope="module")
def site(zk_server: Any, tmp_path_factory: Any) -> Iterator[StewardSite]:
    the_site = StewardSite(
        zk_server.hosts, tmp_path_factory.mktemp("steward"), session_timeout=SESSION
    )
    the_site.django("migrate", "-v0")
    yield the_site
    the_site.stop_all()


@pytest.fixture
def fresh(site: StewardSite) -> Iterator[StewardSite]:
    """The module's site with no steward left running at the end of the test."""
    yield site
    site.stop_all()


@pytest.fixture
def direct(zk_server: Any, kazoo_clients: Any) -> KazooClient:
    return kazoo_clients(zk_server.hosts)


def flag_doc(name: str, **fields: Any) -> dict[str, Any]:
    doc = {
        "name": name,
        "everyone": None,
        "percent": None,
        "superusers": False,
        "staff": False,
        "authenticated": False,
        "users": [],
        "groups": [],
        "note": "",
    }
    doc.update(fields)
    return doc


def store_for(site: StewardSite, client: KazooClient) -> ScheduleStore:
    url = parse_url(site.url)
    return ScheduleStore(Requests(client, url, 5.0), url.root, acl_for(url))


def put_schedule(
    site: StewardSite, client: KazooClient, flag: str, at: datetime, change: dict[str, Any]
) -> Schedule:
    """A schedule written into ZooKeeper as the command would (from the version now)."""
    stat = client.exists(f"{site.root}/flags/{flag}")
    return store_for(site, client).add(
        Schedule(
            id="",
            flag=flag,
            at=at,
            change=change,
            expected_version=stat.version if stat else None,
            username="alice",
            source="command",
        )
    )


def flag_version(client: KazooClient, site: StewardSite, flag: str) -> int | None:
    stat = client.exists(f"{site.root}/flags/{flag}")
    return stat.version if stat is not None else None


def audited(client: KazooClient, site: StewardSite) -> None:
    """Every change live in ZooKeeper has its audit row (no change record left)."""
    path = f"{site.root}/changes"
    wait_until(
        lambda: not client.exists(path) or not client.get_children(path),
        BOUND,
        interval=0.05,
        what="every change audited",
    )


def acting(client: KazooClient, site: StewardSite) -> str:
    url = parse_url(site.url)
    names = contenders(Requests(client, url, 5.0), site.root)
    return names[0] if names else ""


def test_three_stewards_the_acting_one_sigkilled_just_before_the_time_change_happens_once(
    fresh, direct
):
    site = fresh
    site.django("zkflags", "set", "once", "--off")
    processes = [site.steward() for _ in range(3)]
    by_identifier = {p.identifier: p for p in processes}
    wait_until(lambda: len(contenders_of(direct, site)) == 3, BOUND, what="three contenders")
    first = by_identifier[acting(direct, site)]
    first.wait_acting()

    due = datetime.now(timezone.utc) + timedelta(seconds=2)
    scheduled = put_schedule(site, direct, "once", due, on_change(True))
    time.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds() - 0.3))
    first.kill()  # SIGKILL 0.3 s before the time: no goodbye to ZooKeeper
    killed_at = datetime.now(timezone.utc)
    assert flag_version(direct, site, "once") == 0  # it had not run it

    wait_until(lambda: flag_version(direct, site, "once") == 1, BOUND, what="the change")
    audited(direct, site)
    successor = by_identifier[acting(direct, site)]
    assert successor is not first
    assert store_for(site, direct).schedule(scheduled.id) is None

    # Barrier: a later schedule (of another flag) runs through the same steward; by then
    # anything it was going to do about the first one is done.
    put_schedule(site, direct, "sentinel-once", datetime.now(timezone.utc), on_change(True))
    wait_until(lambda: flag_version(direct, site, "sentinel-once") == 0, BOUND)
    audited(direct, site)

    rows = [r for r in site.audit("once") if r.source == "schedule"]
    assert len(rows) == 1, rows
    [row] = rows
    assert (row.action, row.username, row.version) == ("changed", "alice", 1)
    assert json.loads(row.after or "{}")["everyone"] is True
    assert row.scheduled_for == due
    assert flag_version(direct, site, "once") == 1  # one new version, no more
    late = row.late_seconds
    assert late is not None and 0 < late < BOUND
    print(
        f"\n[steward] acting steward SIGKILLed 0.3 s before the time; the change ran once, "
        f"{late:.2f} s late (session timeout {SESSION:g} s), "
        f"{(row.at - killed_at).total_seconds():.2f} s after the kill, by the next steward "
        f"({len(processes) - 1} left)"
    )


def contenders_of(client: KazooClient, site: StewardSite) -> list[str]:
    url = parse_url(site.url)
    return contenders(Requests(client, url, 5.0), site.root)


def test_a_steward_killed_between_zookeeper_and_the_audit_row_leaves_no_gap_and_no_repeat(
    fresh, direct
):
    site = fresh
    site.django("zkflags", "set", "midway", "--off")
    dying = site.steward("tests.support.dying_steward")
    wait_until(lambda: acting(direct, site) == dying.identifier, BOUND)
    scheduled = put_schedule(site, direct, "midway", datetime.now(timezone.utc), on_change(True))
    dying.wait_line(lambda line: line == "ZOOKEEPER-COMMITTED")
    dying.kill()
    # The change is live, its schedule gone with it (one multi()), its audit row missing.
    assert flag_version(direct, site, "midway") == 1
    assert store_for(site, direct).schedule(scheduled.id) is None
    assert direct.get_children(f"{site.root}/changes")

    started = time.monotonic()
    successor = site.steward()
    successor.wait_acting()
    audited(direct, site)  # the next process settled the record
    settled = time.monotonic() - started
    rows = [r for r in site.audit("midway") if r.source == "schedule"]
    assert [(r.action, r.username, r.version) for r in rows] == [("changed", "alice", 1)]
    assert rows[0].scheduled_for is not None
    assert flag_version(direct, site, "midway") == 1
    print(
        f"\n[steward] killed between the ZooKeeper commit and the audit row: the change stayed "
        f"once (v1), its audit row was written from the change record {settled:.1f} s after "
        "the next steward started"
    )


def test_a_schedule_set_while_no_steward_runs_executes_when_one_starts(fresh, direct):
    site = fresh
    assert contenders_of(direct, site) == []
    site.django("zkflags", "set", "waiting", "--off")
    out = site.django("zkflags", "schedule", "waiting", "--at", "+1s", "--percent", "30").stdout
    assert "none is running" in out
    due = datetime.now(timezone.utc) + timedelta(seconds=1)
    wait_until(lambda: datetime.now(timezone.utc) > due + timedelta(seconds=1), BOUND)
    assert flag_version(direct, site, "waiting") == 0  # nobody ran it

    steward = site.steward()
    steward.wait_acting()
    wait_until(lambda: flag_version(direct, site, "waiting") == 1, BOUND)
    audited(direct, site)
    [row] = [r for r in site.audit("waiting") if r.source == "schedule"]
    assert json.loads(row.after or "{}")["percent"] == 30.0
    assert row.late_seconds is not None and row.late_seconds > 1.0
    listing = site.django("zkflags", "schedule", "--list", "waiting").stdout
    assert "Recently run" in listing and "s late" in listing
    print(f"\n[steward] a schedule missed while no steward ran: ran {row.late_seconds:.1f} s late")


def test_hand_edits_reach_a_running_web_process_within_5_s(fresh, direct, zk_server, tmp_path):
    site = fresh
    if zkcli_path() is None:  # a failure under CI=true, a skip on a laptop
        require_zookeeper(FileNotFoundError("zkCli.sh (Debian's zookeeper package)"))
    site.django("zkflags", "set", "handmade", "--off")
    steward = site.steward()
    with Children(tmp_path) as children:
        web = children.spawn(site.url, "handmade", startup_timeout=5.0)
        web.wait_value(version=0, active=False)
        steward.wait_acting()
        path = f"{site.root}/flags/handmade"

        # A separate kazoo client.
        stat = direct.set(path, json.dumps(flag_doc("handmade", everyone=True)).encode())
        seen = web.wait_value(version=1, active=True, timeout=BOUND)
        kazoo_delay = seen["t_wall"] - stat.mtime / 1000

        # Debian's zkCli.sh.
        zkcli(zk_server.hosts, "set", path, json.dumps(flag_doc("handmade", everyone=False)))
        changed = direct.exists(path)
        seen = web.wait_value(version=2, active=False, timeout=BOUND)
        zkcli_delay = seen["t_wall"] - changed.mtime / 1000
        status = web.status()["status"]
        watches = watches_by_session(zk_server)
        audited(direct, site)

    assert kazoo_delay < 5.0 and zkcli_delay < 5.0, (kazoo_delay, zkcli_delay)
    rows = [r for r in site.audit("handmade") if r.source == "zookeeper"]
    assert [(r.action, r.version) for r in rows] == [("changed", 1), ("changed", 2)]
    # The web process watched the snapshot only (the steward alone watches the flags).
    assert status["reads"] >= 1
    assert [f"{site.root}/snapshot"] == watches.get(status["session_id"]), watches
    assert any(path in paths for paths in watches.values())  # the steward's
    print(
        f"\n[steward] hand edits served by a web process: kazoo client {kazoo_delay * 1000:.0f} ms, "
        f"zkCli.sh {zkcli_delay * 1000:.0f} ms after the znode changed (bound 5 s)"
    )


def watches_by_session(server: Any) -> dict[str, list[str]]:
    watches: dict[str, list[str]] = {}
    current = None
    for line in server.four_letter("wchc").splitlines():
        if line.startswith("\t") and current is not None:
            watches[current].append(line.strip())
        elif line.strip().startswith("0x"):
            current = line.strip()
            watches.setdefault(current, [])
    return watches


def test_a_stepped_rollout_walks_its_steps(fresh, direct):
    site = fresh
    site.django("zkflags", "set", "stepped", "--off")
    steward = site.steward()
    steward.wait_acting()
    out = site.django(
        "zkflags", "rollout", "stepped", "--steps", "10,50,100", "--every", "1s"
    ).stdout
    assert "Rollout: stepped: running" in out
    wait_until(lambda: flag_version(direct, site, "stepped") == 3, BOUND, what="three steps")
    audited(direct, site)
    rows = [r for r in site.audit("stepped") if r.source == "schedule"]
    assert [json.loads(r.after or "{}")["percent"] for r in rows] == [10.0, 50.0, 100.0]
    assert [r.version for r in rows] == [1, 2, 3]
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(rows, rows[1:], strict=False)]
    assert all(0.9 <= gap < BOUND for gap in gaps), gaps
    shown = site.django("zkflags", "rollout", "stepped").stdout
    assert "stepped: done; 3 of 3 step(s) done" in shown
    print(f"\n[steward] a rollout 10,50,100 every 1 s walked its steps; gaps {gaps}")
