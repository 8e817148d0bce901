"""The watch recipe (NodeWatch) and the process runtime (FlagRuntime) against a real
ZooKeeper.

This process's client reaches the server through a TcpProxy (``proxied_site``); the writes
that must happen "meanwhile" go through a second client straight to the server. The proxy
cutting, blocking or stalling the network: tests/system/test_watcher.py.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import django_zkflags
from django_zkflags import flag_is_active_for_user
from django_zkflags.cache import store
from django_zkflags.diskcopy import HEADER
from django_zkflags.runtime import FlagRuntime
from django_zkflags.signals import flag_changed
from django_zkflags.snapshot import EMPTY, decode_file_payload, encode_entries
from django_zkflags.watcher import NodeWatch, ReadAgain

from ..conftest import BOUND, wait_until

# -- the recipe on its own ---------------------------------------------------------------


def test_nodewatch_follows_a_node_through_delete_create_and_a_failing_callback(
    zk_server, kazoo_clients, direct
):
    path = f"/nw-{uuid.uuid4().hex[:12]}"
    seen: list[bytes | None] = []

    def on_data(data: bytes | None, stat: Any) -> None:
        if data == b"boom":
            raise RuntimeError("handler failed")
        seen.append(data)

    client = kazoo_clients(zk_server.hosts)
    watch = NodeWatch(client, path, on_data)
    try:
        watch.start()
        wait_until(lambda: seen == [None], BOUND)  # absent node: on_data(None, None)
        direct.create(path, b"one")
        wait_until(lambda: seen[-1:] == [b"one"], BOUND)
        direct.set(path, b"boom")
        wait_until(lambda: watch.last_error and "handler failed" in watch.last_error, BOUND)
        direct.set(path, b"two")  # the watch carries on after a failing callback
        wait_until(lambda: seen[-1:] == [b"two"], BOUND)
        wait_until(lambda: watch.last_error is None, BOUND)  # cleared once on_data returns
        direct.delete(path)
        wait_until(lambda: seen[-1:] == [None], BOUND)
        direct.create(path, b"three")
        wait_until(lambda: seen[-1:] == [b"three"], BOUND)
        assert watch.alive
        assert b"boom" not in seen
    finally:
        watch.stop()
    assert not watch.alive


def test_nodewatch_reads_again_when_the_callback_asks_though_nothing_moved(
    zk_server, kazoo_clients, direct
):
    """``ReadAgain`` (the shards of a head could not be read): the same data comes back
    after a back-off, not at the next change, which may never come."""
    path = f"/nw-{uuid.uuid4().hex[:12]}"
    direct.create(path, b"head")
    calls: list[bytes | None] = []

    def on_data(data: bytes | None, stat: Any) -> None:
        calls.append(data)
        if len(calls) < 3:
            raise ReadAgain("the shards could not be read")

    client = kazoo_clients(zk_server.hosts)
    watch = NodeWatch(client, path, on_data)
    try:
        watch.start()
        wait_until(lambda: len(calls) >= 3, BOUND)
        assert calls[:3] == [b"head"] * 3
        assert watch.alive and watch.last_error is None
        direct.set(path, b"next")  # and the watch is still armed
        wait_until(lambda: calls[-1] == b"next", BOUND)
    finally:
        watch.stop()


def test_nodewatch_burst_ends_on_the_last_value(zk_server, kazoo_clients, direct):
    path = f"/nw-{uuid.uuid4().hex[:12]}"
    direct.create(path, b"0")
    seen: list[int] = []
    client = kazoo_clients(zk_server.hosts)
    watch = NodeWatch(client, path, lambda data, stat: seen.append(int(data)))
    try:
        watch.start()
        wait_until(lambda: seen == [0], BOUND)
        for i in range(1, 201):
            direct.set(path, str(i).encode())
        wait_until(lambda: seen[-1] == 200, BOUND)
        # Barrier: a later sentinel value arrives; nothing came between the last value
        # of the burst and it (no late, older read).
        direct.set(path, b"201")
        wait_until(lambda: seen[-1] == 201, BOUND)
        assert seen[seen.index(200) :] == [200, 201]
        assert seen == sorted(seen) and len(set(seen)) == len(seen)  # never goes back
        assert watch.alive
    finally:
        watch.stop()


# -- the process runtime -----------------------------------------------------------------


def test_burst_of_200_writes_ends_on_the_final_state(proxied_site):
    versions: list[int] = []

    def record(sender: Any, names: frozenset[str], snapshot: Any, **kwargs: Any) -> None:
        if "burst" in names and "burst" in snapshot.flags:
            versions.append(snapshot.flags["burst"].version)

    flag_changed.connect(record)
    try:
        for i in range(200):
            final = proxied_site.write("burst", everyone=i % 2 == 0, note=f"write {i}")
        proxied_site.wait_version("burst", final)
        # flag_changed goes out (on the watch thread) just after the snapshot is visible.
        wait_until(lambda: versions[-1:] == [final], BOUND)
    finally:
        flag_changed.disconnect(record)
    assert final == 199
    rule = store.base.flags["burst"]
    assert (rule.note, rule.everyone) == ("write 199", False)
    assert flag_is_active_for_user(None, "burst") is False
    # Intermediate versions may be skipped, the last one never; none is applied twice
    # or out of order.
    assert versions[-1] == 199
    assert versions == sorted(set(versions))
    proxied_site.assert_healthy()


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\xff not a snapshot", b"ZKF1 not zlib", b'{"format": 99, "flags": {}}', b"[]"],
    ids=["bytes", "bad-zlib", "bad-format", "no-flags"],
)
def test_garbage_snapshot_keeps_the_last_good_one(proxied_site, garbage):
    version = proxied_site.write_and_wait("kept", everyone=True)
    before = store.base
    proxied_site.direct.set(proxied_site.snapshot_path, garbage)

    wait_until(lambda: django_zkflags.status()["last_error"], BOUND)
    assert "snapshot" in django_zkflags.status()["last_error"]
    assert store.base is before  # nothing was published
    assert flag_is_active_for_user(None, "kept") is True

    # The next good write (the writer rebuilds a corrupt snapshot) is served again.
    newer = proxied_site.write("kept", everyone=False)
    assert newer == version + 1
    proxied_site.wait_version("kept", newer)
    assert flag_is_active_for_user(None, "kept") is False
    # Cleared by the watch thread just after it publishes the good snapshot.
    wait_until(lambda: django_zkflags.status()["last_error"] is None, BOUND)
    assert store.base.source == "zookeeper"
    proxied_site.assert_healthy()


def test_one_invalid_entry_keeps_its_last_good_rule(proxied_site):
    proxied_site.write_and_wait("good", everyone=True)
    proxied_site.write_and_wait("bad", everyone=True)
    bad_rule = store.base.flags["bad"]
    entries = proxied_site.writer.reader.snapshot().flags
    entries["good"] = {**entries["good"], "everyone": False, "version": 7}
    entries["bad"] = {**entries["bad"], "everyone": "yes", "version": 7}
    entries["fresh-bad"] = {"name": "fresh-bad", "percent": 500, "version": 0}
    proxied_site.direct.set(proxied_site.snapshot_path, encode_entries(entries))

    proxied_site.wait_version("good", 7)
    assert flag_is_active_for_user(None, "good") is False  # the others update
    assert store.base.flags["bad"] is bad_rule  # the bad one keeps its last good rule
    assert flag_is_active_for_user(None, "bad") is True
    assert "fresh-bad" not in store.base.flags  # no good rule to keep: unknown
    invalid = django_zkflags.status()["invalid_flags"]
    assert set(invalid) == {"bad", "fresh-bad"}
    assert "everyone" in invalid["bad"] and "ercent" in invalid["fresh-bad"]

    # Saving the flag again replaces its bad entry; a repair drops the entry without znode.
    proxied_site.write("bad", everyone=False)
    proxied_site.wait_version("bad", 1)
    assert set(django_zkflags.status()["invalid_flags"]) == {"fresh-bad"}
    assert proxied_site.writer.rebuild_snapshot() == {}
    wait_until(lambda: django_zkflags.status()["invalid_flags"] == {}, BOUND)
    assert flag_is_active_for_user(None, "bad") is False
    proxied_site.assert_healthy()


def test_snapshot_node_deleted_keeps_the_last_good_one_until_recreated(proxied_site):
    proxied_site.write_and_wait("one", everyone=True)
    proxied_site.write_and_wait("two", everyone=True)
    before = store.base
    proxied_site.direct.delete(proxied_site.snapshot_path)
    # A missing snapshot znode is not "no flags": the last good snapshot stays in use.
    wait_until(lambda: django_zkflags.status()["last_error"], BOUND)
    assert "missing" in django_zkflags.status()["last_error"]
    assert store.base is before  # nothing was published
    assert flag_is_active_for_user(None, "one") is True

    assert proxied_site.writer.rebuild_snapshot() == {}  # `manage.py zkflags repair`
    rebuilt = proxied_site.direct.exists(proxied_site.snapshot_path)
    wait_until(lambda: store.base.zxid == rebuilt.mzxid, BOUND)
    assert set(store.base.flags) == {"one", "two"}
    assert store.base.source == "zookeeper"
    assert flag_is_active_for_user(None, "one") is True
    # Cleared by the watch thread just after it publishes the recreated snapshot.
    wait_until(lambda: django_zkflags.status()["last_error"] is None, BOUND)
    proxied_site.assert_healthy()


def test_snapshot_file_is_written_atomically_and_served_by_a_fresh_runtime(
    proxied_site_factory, tmp_path
):
    path = tmp_path / "flags.snapshot"
    proxied_site = proxied_site_factory(SNAPSHOT_FILE=str(path))
    problems: list[str] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            reads += 1
            header, _, data = raw.partition(b"\n")
            try:
                assert header.startswith(HEADER), header[:40]
                int(header[len(HEADER) :])
                decode_file_payload(data)["flags"]
            except Exception as exc:  # a torn or partial file
                problems.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for i in range(60):
            proxied_site.write(f"file-{i % 12}", everyone=i % 2 == 0, note="x" * (i * 50))
        proxied_site.write_and_wait("last", everyone=True)
        wait_until(lambda: path.exists() and "last" in file_entries(path), BOUND)
    finally:
        done.set()
        thread.join(5)
    assert reads > 0
    assert problems == []
    assert [p for p in os.listdir(tmp_path) if p != path.name] == []  # no temp file left

    served = {name: rule.version for name, rule in store.base.flags.items()}
    zxid = store.base.zxid
    entries = file_entries(path)
    assert {name: entry["version"] for name, entry in entries.items()} == served

    store.publish(EMPTY)
    fresh = FlagRuntime()  # a new process's runtime, before ZooKeeper answers
    assert fresh.snapshot_file is not None and fresh.snapshot_file.path == str(path)
    assert fresh.load_file() is True
    assert store.base.source == "file"
    assert store.base.zxid == zxid
    assert {name: rule.version for name, rule in store.base.flags.items()} == served
    assert flag_is_active_for_user(None, "last") is True


def file_entries(path: Path) -> dict[str, Any]:
    """The flag entries of a snapshot file."""
    header, _, data = path.read_bytes().partition(b"\n")
    assert header.startswith(HEADER)
    return decode_file_payload(data)["flags"]
