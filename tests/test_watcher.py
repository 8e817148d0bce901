"""The watch recipe (NodeWatch) and the process runtime (FlagRuntime) against real ZooKeeper.

Faults are injected with a TcpProxy between this process's client and the server: the
writes that must happen "meanwhile" go through a second client straight to the server.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient, KazooState

import django_zkflags
from django_zkflags import flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.client import Paths, Requests, acl_for
from django_zkflags.conf import parse_url
from django_zkflags.diskcopy import HEADER
from django_zkflags.rules import FlagRule
from django_zkflags.runtime import FlagRuntime
from django_zkflags.signals import flag_changed
from django_zkflags.snapshot import EMPTY, decode_payload, encode_entries
from django_zkflags.watcher import NodeWatch
from django_zkflags.writer import FlagWriter
from tests.support.tcpproxy import TcpProxy
from tests.support.zookeeper import ZooKeeperServer

from .conftest import wait_until

BOUND = 10.0  # a hang catcher, not a benchmark


@pytest.fixture
def proxy(zk_server: ZooKeeperServer) -> Iterator[TcpProxy]:
    with TcpProxy(zk_server.host, zk_server.port) as proxy:
        yield proxy


@pytest.fixture
def direct(zk_server: ZooKeeperServer) -> Iterator[KazooClient]:
    """A second client, straight to the server: "another process" writing meanwhile."""
    client = KazooClient(hosts=zk_server.hosts, timeout=10.0)
    client.start(timeout=15)
    try:
        yield client
    finally:
        client.stop()
        client.close()


class Site:
    """This process's runtime, connected through ``proxy``; writes go around it."""

    def __init__(self, zk_server: ZooKeeperServer, proxy: TcpProxy, direct: KazooClient):
        self.proxy = proxy
        self.direct = direct
        self.root = f"/w-{uuid.uuid4().hex[:12]}"
        self.url = f"zk://{proxy.hosts}{self.root}"
        direct_url = parse_url(f"zk://{zk_server.hosts}{self.root}")
        self.writer = FlagWriter(
            Requests(direct, direct_url, timeout=5.0), Paths(self.root), acl_for(direct_url)
        )
        self.states: list[str] = []
        self.runtime: FlagRuntime | None = None

    @property
    def snapshot_path(self) -> str:
        return f"{self.root}/snapshot"

    def start(self) -> FlagRuntime:
        self.runtime = runtime.start(wait=BOUND)
        assert self.runtime.loaded.is_set(), "no first snapshot from ZooKeeper"
        self.runtime.client.add_listener(self.states.append)
        return self.runtime

    def write(self, name: str, **rules: Any) -> int:
        stored = self.writer.reader.flag(name)
        base = stored.document() or {"name": name, "everyone": None}
        result = self.writer.write_flag(FlagRule.from_document({**base, **rules}), stored.version)
        assert result.version is not None
        return result.version

    def wait_version(self, name: str, version: int | None, timeout: float = BOUND) -> None:
        def seen() -> bool:
            rule = store.base.flags.get(name)
            return (rule.version if rule else None) == version

        wait_until(seen, timeout)

    def write_and_wait(self, name: str, **rules: Any) -> int:
        version = self.write(name, **rules)
        self.wait_version(name, version)
        return version

    def wait_seen_around_the_proxy(self, name: str, version: int) -> None:
        """Barrier: a watcher connected straight to the server (not through the proxy) has
        received the snapshot holding ``name`` at ``version``. A process that could receive
        it would have had the same chance by now."""
        seen = threading.Event()

        def on_data(data: bytes | None, stat: Any) -> None:
            entry = decode_payload(data)["flags"].get(name)
            if entry is not None and entry.get("version") == version:
                seen.set()

        watch = NodeWatch(self.direct, self.snapshot_path, on_data, name="barrier-watch")
        watch.start()
        try:
            assert seen.wait(BOUND), f"{name} v{version} not seen around the proxy"
        finally:
            watch.stop()

    def wait_states(self, *expected: str, timeout: float = BOUND) -> None:
        """``expected`` appear in this order among the states seen since the last clear."""

        def seen() -> bool:
            position = 0
            for state in self.states:
                if position < len(expected) and state == expected[position]:
                    position += 1
            return position == len(expected)

        try:
            wait_until(seen, timeout, interval=0.02)
        except AssertionError:
            raise AssertionError(f"states {expected} not seen; saw {self.states}") from None

    def assert_healthy(self) -> None:
        assert self.runtime is not None
        assert self.runtime.watch is not None and self.runtime.watch.alive
        status = django_zkflags.status()
        assert status["watching"] is True
        assert status["connected"] is True


@pytest.fixture
def site_factory(
    zk_server: ZooKeeperServer, proxy: TcpProxy, direct: KazooClient, settings: Any
) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(**options: Any) -> Site:
        site = Site(zk_server, proxy, direct)
        settings.ZKFLAGS = {**settings.ZKFLAGS, "STARTUP_TIMEOUT": BOUND, **options}
        settings.ZKFLAGS_URL = site.url
        site.start()
        sites.append(site)
        return site

    try:
        yield make
    finally:
        runtime.stop()
        store.publish(EMPTY)


@pytest.fixture
def site(site_factory: Callable[..., Site]) -> Site:
    return site_factory()


# -- the recipe on its own ---------------------------------------------------------------


def test_nodewatch_follows_a_node_through_delete_create_and_a_failing_callback(zk_server, direct):
    path = f"/nw-{uuid.uuid4().hex[:12]}"
    seen: list[bytes | None] = []

    def on_data(data: bytes | None, stat: Any) -> None:
        if data == b"boom":
            raise RuntimeError("handler failed")
        seen.append(data)

    client = KazooClient(hosts=zk_server.hosts, timeout=10.0)
    client.start(timeout=15)
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
        client.stop()
        client.close()
    assert not watch.alive


def test_nodewatch_burst_ends_on_the_last_value(zk_server, direct):
    path = f"/nw-{uuid.uuid4().hex[:12]}"
    direct.create(path, b"0")
    seen: list[int] = []
    client = KazooClient(hosts=zk_server.hosts, timeout=10.0)
    client.start(timeout=15)
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
        client.stop()
        client.close()


# -- the process runtime -----------------------------------------------------------------


def test_burst_of_200_writes_ends_on_the_final_state(site):
    versions: list[int] = []

    def record(sender: Any, names: frozenset[str], snapshot: Any, **kwargs: Any) -> None:
        if "burst" in names and "burst" in snapshot.flags:
            versions.append(snapshot.flags["burst"].version)

    flag_changed.connect(record)
    try:
        for i in range(200):
            final = site.write("burst", everyone=i % 2 == 0, note=f"write {i}")
        site.wait_version("burst", final)
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
    site.assert_healthy()


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\xff not a snapshot", b"ZKF1 not zlib", b'{"format": 99, "flags": {}}', b"[]"],
    ids=["bytes", "bad-zlib", "bad-format", "no-flags"],
)
def test_garbage_snapshot_keeps_the_last_good_one(site, garbage):
    version = site.write_and_wait("kept", everyone=True)
    before = store.base
    site.direct.set(site.snapshot_path, garbage)

    wait_until(lambda: django_zkflags.status()["last_error"], BOUND)
    assert "snapshot" in django_zkflags.status()["last_error"]
    assert store.base is before  # nothing was published
    assert flag_is_active_for_user(None, "kept") is True

    # The next good write (the writer rebuilds a corrupt snapshot) is served again.
    newer = site.write("kept", everyone=False)
    assert newer == version + 1
    site.wait_version("kept", newer)
    assert flag_is_active_for_user(None, "kept") is False
    # Cleared by the watch thread just after it publishes the good snapshot.
    wait_until(lambda: django_zkflags.status()["last_error"] is None, BOUND)
    assert store.base.source == "zookeeper"
    site.assert_healthy()


def test_one_invalid_entry_keeps_its_last_good_rule(site):
    site.write_and_wait("good", everyone=True)
    site.write_and_wait("bad", everyone=True)
    bad_rule = store.base.flags["bad"]
    entries = site.writer.reader.snapshot().flags
    entries["good"] = {**entries["good"], "everyone": False, "version": 7}
    entries["bad"] = {**entries["bad"], "everyone": "yes", "version": 7}
    entries["fresh-bad"] = {"name": "fresh-bad", "percent": 500, "version": 0}
    site.direct.set(site.snapshot_path, encode_entries(entries))

    site.wait_version("good", 7)
    assert flag_is_active_for_user(None, "good") is False  # the others update
    assert store.base.flags["bad"] is bad_rule  # the bad one keeps its last good rule
    assert flag_is_active_for_user(None, "bad") is True
    assert "fresh-bad" not in store.base.flags  # no good rule to keep: unknown
    invalid = django_zkflags.status()["invalid_flags"]
    assert set(invalid) == {"bad", "fresh-bad"}
    assert "everyone" in invalid["bad"] and "ercent" in invalid["fresh-bad"]

    # Saving the flag again replaces its bad entry; a repair drops the entry without znode.
    site.write("bad", everyone=False)
    site.wait_version("bad", 1)
    assert set(django_zkflags.status()["invalid_flags"]) == {"fresh-bad"}
    assert site.writer.rebuild_snapshot() == {}
    wait_until(lambda: django_zkflags.status()["invalid_flags"] == {}, BOUND)
    assert flag_is_active_for_user(None, "bad") is False
    site.assert_healthy()


def test_connection_drop_and_a_change_made_while_disconnected(site):
    site.write_and_wait("drop", everyone=True)

    site.states.clear()
    assert site.proxy.drop_all() >= 1
    site.wait_states(KazooState.SUSPENDED, KazooState.CONNECTED)
    # The watch is armed again after the reconnection.
    version = site.write("drop", everyone=False)
    site.wait_version("drop", version)

    # Disconnected for a while: a change made meanwhile arrives after the reconnection.
    site.states.clear()
    site.proxy.block()
    site.wait_states(KazooState.SUSPENDED)
    version = site.write("drop", everyone=True)
    site.wait_seen_around_the_proxy("drop", version)  # delivered to connected watchers
    assert flag_is_active_for_user(None, "drop") is False  # still the last known value
    assert store.base.source == "zookeeper"
    site.proxy.unblock()
    site.wait_states(KazooState.SUSPENDED, KazooState.CONNECTED)
    site.wait_version("drop", version)
    assert flag_is_active_for_user(None, "drop") is True
    site.assert_healthy()


def test_session_expiry_rearms_the_watch(site_factory):
    site = site_factory(SESSION_TIMEOUT=2.0)
    client = site.runtime.client
    site.write_and_wait("expiry", everyone=True)
    old_session = client.client_id
    # An ephemeral node of this session tells us when the server expired it.
    probe = client.create(f"{site.root}/probe", ephemeral=True, makepath=True)

    site.states.clear()
    site.proxy.pause()
    try:
        wait_until(lambda: site.direct.exists(probe) is None, timeout=15.0, interval=0.05)
        during = site.write("expiry", everyone=False)  # made while the session is gone
        site.wait_seen_around_the_proxy("expiry", during)
        assert flag_is_active_for_user(None, "expiry") is True
    finally:
        site.proxy.resume()
    site.wait_states(KazooState.LOST, KazooState.CONNECTED, timeout=15.0)
    assert client.client_id != old_session
    site.wait_version("expiry", during)
    assert flag_is_active_for_user(None, "expiry") is False

    after = site.write("expiry", everyone=True)  # the watch is armed in the new session
    site.wait_version("expiry", after)
    assert flag_is_active_for_user(None, "expiry") is True
    site.assert_healthy()


def test_snapshot_node_deleted_keeps_the_last_good_one_until_recreated(site):
    site.write_and_wait("one", everyone=True)
    site.write_and_wait("two", everyone=True)
    before = store.base
    site.direct.delete(site.snapshot_path)
    # A missing snapshot znode is not "no flags": the last good snapshot stays in use.
    wait_until(lambda: django_zkflags.status()["last_error"], BOUND)
    assert "missing" in django_zkflags.status()["last_error"]
    assert store.base is before  # nothing was published
    assert flag_is_active_for_user(None, "one") is True

    assert site.writer.rebuild_snapshot() == {}  # `manage.py zkflags repair`
    rebuilt = site.direct.exists(site.snapshot_path)
    wait_until(lambda: store.base.zxid == rebuilt.mzxid, BOUND)
    assert set(store.base.flags) == {"one", "two"}
    assert store.base.source == "zookeeper"
    assert flag_is_active_for_user(None, "one") is True
    # Cleared by the watch thread just after it publishes the recreated snapshot.
    wait_until(lambda: django_zkflags.status()["last_error"] is None, BOUND)
    site.assert_healthy()


@pytest.mark.parametrize("fault", ["block", "pause"])
def test_stop_returns_promptly_when_zookeeper_is_unreachable(site, fault):
    site.write_and_wait("stop", everyone=True)
    watch = site.runtime.watch
    if fault == "block":
        site.proxy.block()  # refused: the client keeps reconnecting
        wait_until(lambda: not site.runtime.client.connected, BOUND)
    else:
        site.proxy.pause()  # stalled: nothing answers, not even the close request
    started = time.monotonic()
    runtime.stop()
    assert time.monotonic() - started < 5.0
    assert django_zkflags.status()["watching"] is False
    wait_until(lambda: not watch.alive, BOUND)
    assert flag_is_active_for_user(None, "stop") is True  # still served from memory
    site.proxy.resume()
    site.proxy.unblock()


def test_snapshot_file_is_written_atomically_and_served_by_a_fresh_runtime(site_factory, tmp_path):
    path = tmp_path / "flags.snapshot"
    site = site_factory(SNAPSHOT_FILE=str(path))
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
                decode_payload(data)["flags"]
            except Exception as exc:  # a torn or partial file
                problems.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for i in range(60):
            site.write(f"file-{i % 12}", everyone=i % 2 == 0, note="x" * (i * 50))
        site.write_and_wait("last", everyone=True)
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
    return decode_payload(data)["flags"]
