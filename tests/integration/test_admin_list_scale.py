"""The flag list at 100 and at 10,000 flags: the same number of SQL queries per page
whatever the number of flags and of their users and groups, no ZooKeeper read for its rows
(the fleet header above it reads the fleet's znodes, cached: admin/fleet.py), and its
render time (printed: run with ``-s`` to see it).

The flags are put in place as a bulk import would leave them: the admin's rows (with
their many-to-many rows) created in bulk, and a snapshot of the same flags written to
ZooKeeper in one write by another client; this process receives it through its watch, as
it would from any writer. (Writing 10,000 flags one by one through the writer rewrites
the snapshot 10,000 times: minutes, for what this test does not look at.)
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import django
import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from kazoo.client import KazooClient

from django_zkflags.cache import store
from django_zkflags.models import Flag
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import encode_entries
from tests.support.admin_pages import ADMIN, editor_client

from ..conftest import wait_until

pytestmark = pytest.mark.django_db

#: Pages drawn at both sizes.
PAGES = {
    "first page": "",
    "filtered and searched": "everyone=rules&rule=staff&q=flag-00",
    "users filter": "rule=users",
}
if django.VERSION >= (5, 0):  # the admin's facet counts came with Django 5.0
    PAGES["filters with counts"] = "_facets=True"
#: Pages only 10,000 flags have.
LATER_PAGES = {"page 2": "p=2", "last page": "p=100"}


def rule_for(i: int, users: list[int], groups: list[int]) -> FlagRule:
    """Flag number ``i``: a mix of states, rules, members and overrides."""
    return FlagRule(
        f"flag-{i:05d}",
        everyone=(None, None, True, False)[i % 4],
        percent=(i % 10) * 10 or None,
        staff=i % 3 == 0,
        users=users[: i % 6],
        groups=groups[: i % 4],
        note=f"flag number {i}",
        environments={"staging": {"everyone": True}} if i % 5 == 0 else None,
    )


def populate(zkflags: Any, direct: KazooClient, count: int, *, members: bool) -> None:
    """``count`` flags in the rows and in this process's snapshot (see the docstring):
    the rows missing are created, and with ``members`` every flag gets its users and
    groups. No model signal is sent (bulk creates)."""
    users = list(User.objects.filter(username__startswith="member").values_list("pk", flat=True))
    groups = list(Group.objects.values_list("pk", flat=True))
    rules = [rule_for(i, users if members else [], groups if members else []) for i in range(count)]
    existing = set(Flag.objects.values_list("name", flat=True))
    Flag.objects.bulk_create(
        [
            Flag(name=rule.name, zk_version=0, **Flag.values_from_rule(rule))
            for rule in rules
            if rule.name not in existing
        ]
    )
    pks = dict(Flag.objects.values_list("name", "pk"))
    for field_name in ("users", "groups"):
        through = Flag._meta.get_field(field_name).remote_field.through  # type: ignore[union-attr]
        column = "user_id" if field_name == "users" else "group_id"
        through.objects.bulk_create(
            [
                through(flag_id=pks[rule.name], **{column: pk})
                for rule in rules
                for pk in getattr(rule, field_name)
            ],
            ignore_conflicts=True,
        )
    entries = {rule.name: {**rule.to_document(), "version": 0} for rule in rules}
    path = zkflags.runtime.paths.snapshot
    data = encode_entries(entries)
    if direct.exists(path):
        direct.set(path, data)
    else:
        direct.create(path, data, makepath=True)
    wait_until(
        lambda: (
            len(store.base.flags) == count
            and store.base.flags[rules[0].name].users == rules[0].users
        ),
        what=f"{count} flags served",
    )


def zookeeper_requests(monkeypatch: Any, zkflags: Any) -> list[Any]:
    """Every request this process's client sends from this thread (the one drawing the
    pages) from now on: a spy on kazoo's one request method, the requests still go to
    ZooKeeper. The watch's own checks run on other threads."""
    client = zkflags.runtime.client
    sent: list[Any] = []
    real_call: Callable[..., Any] = client._call
    drawing = threading.current_thread()

    def call(request: Any, async_object: Any) -> Any:
        if threading.current_thread() is drawing:
            sent.append(request)
        return real_call(request, async_object)

    monkeypatch.setattr(client, "_call", call)
    return sent


def draw(client: Client, query: str) -> tuple[int, float, str]:
    """Draw one list page: its SQL query count, its render time (s), its HTML."""
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(f"{ADMIN}?{query}" if query else ADMIN)
        html = response.content.decode()
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    return len(queries), elapsed, html


def test_the_list_costs_the_same_queries_at_100_and_10000_flags_and_reads_no_zookeeper(
    zkflags, direct, monkeypatch
):
    for i in range(6):
        User.objects.create_user(f"member{i}")
    for i in range(4):
        Group.objects.create(name=f"team{i}")
    client = editor_client()

    counts: dict[int, dict[str, int]] = {}
    timings: dict[str, float] = {}
    for count, members in ((100, False), (10_000, True)):
        populate(zkflags, direct, count, members=members)
        draw(client, "")  # warm: templates compiled, session read once
        sent = zookeeper_requests(monkeypatch, zkflags)
        counts[count] = {}
        pages = {**PAGES, **LATER_PAGES} if count == 10_000 else PAGES
        for label, query in pages.items():
            times = []
            for _ in range(5):
                queries, elapsed, html = draw(client, query)
                times.append(elapsed)
            counts[count][label] = queries
            timings[f"{label}, {count} flags"] = statistics.median(times)
            rows = html.count('<td class="action-checkbox">')
            assert rows <= 100 and html.count('<form id="zkflags-toggle-') == rows
        # The only requests are the fleet header's (admin/fleet.py: the fleet's znodes
        # and the snapshot's version, at most once per 2 s): no flag, no snapshot data.
        root = zkflags.root
        theirs = [
            r
            for r in sent
            if not r.path.startswith(f"{root}/fleet")
            and not (type(r).__name__ == "Exists" and r.path == f"{root}/snapshot")
        ]
        assert theirs == [], f"the list read ZooKeeper: {theirs}"
        monkeypatch.undo()

    # What the 10,000-flag list shows comes from the snapshot: members, overrides.
    _queries, _elapsed, html = draw(client, "")
    assert "flag-00005" in html and "5 user(s), 1 group(s)" in html
    assert "staging: on for everyone" in html
    assert "of 10000" in html or "10000 flags" in html

    print("\nSQL queries per list page (100 flags / 10,000 flags):")
    for label in {**PAGES, **LATER_PAGES}:
        print(f"  {label}: {counts[100].get(label, '-')} / {counts[10_000][label]}")
    print("List render time (median of 5, test client, SQLite in memory):")
    for label, seconds in timings.items():
        print(f"  {label}: {seconds * 1000:.0f} ms")
    for label in PAGES:
        assert counts[100][label] == counts[10_000][label], label
    for label in LATER_PAGES:
        assert counts[10_000][label] == counts[10_000]["first page"], label
    for seconds in timings.values():
        assert seconds < 10  # a hang catcher; the figures are printed above
