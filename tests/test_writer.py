"""FlagWriter against a real ZooKeeper: versions, concurrent writers, unknown outcomes."""

from __future__ import annotations

import threading

import pytest
from kazoo.client import KazooClient

from django_zkflags import conf
from django_zkflags.snapshot import decode_entries
from tests.support.tcpproxy import TcpProxy
from django_zkflags.zk import FlagConflict, FlagWriter, ZooKeeperUnavailable, make_client

from .conftest import wait_until


def doc(name: str, **rules):
    return {"name": name, "everyone": None, **rules}


def test_create_update_delete_versions(zkflags):
    writer = zkflags.writer
    assert writer.write(doc("a", everyone=True), None).version == 0
    assert writer.write(doc("a", everyone=False), 0).version == 1
    current, version = writer.read_flag("a")
    assert (current["everyone"], version) == (False, 1)
    entries, _ = writer.read_snapshot_entries()
    assert entries["a"]["version"] == 1 and entries["a"]["everyone"] is False
    result = writer.delete("a", 1)
    assert result.before["everyone"] is False and result.after is None
    assert writer.read_flag("a") == (None, None)
    assert "a" not in writer.read_snapshot_entries()[0]


def test_stale_version_is_a_conflict_and_changes_nothing(zkflags):
    writer = zkflags.writer
    writer.write(doc("a", percent=10.0), None)
    writer.write(doc("a", percent=20.0), 0)
    with pytest.raises(FlagConflict, match="changed by someone else") as info:
        writer.write(doc("a", percent=99.0), 0)
    assert info.value.current_version == 1
    assert writer.read_flag("a") == ({**doc("a", percent=20.0), **_defaults()}, 1)
    with pytest.raises(FlagConflict, match="already exists"):
        writer.write(doc("a"), None)
    with pytest.raises(FlagConflict):
        writer.delete("a", 0)


def _defaults():
    return {
        "superusers": False,
        "staff": False,
        "authenticated": False,
        "users": [],
        "groups": [],
        "note": "",
    }


def test_concurrent_writers_of_different_flags_all_land(zkflags, zk_server):
    """Writers serialise on the snapshot version; none loses another's flag."""
    url = conf.get_url()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        client = make_client(url, session_timeout=10, reconnect_max_delay=1)
        client.start(timeout=10)
        try:
            writer = FlagWriter(client, url, timeout=10)
            version = None
            for step in range(5):
                version = writer.write(doc(f"w{i}", percent=float(step)), version).version
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            client.stop()
            client.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    entries, _ = zkflags.writer.read_snapshot_entries()
    assert {name: (e["percent"], e["version"]) for name, e in entries.items()} == {
        f"w{i}": (4.0, 4) for i in range(6)
    }
    wait_until(lambda: all(zkflags.runtime.watch and f"w{i}" in _store_flags() for i in range(6)))


def _store_flags():
    from django_zkflags.cache import store

    return store.base.flags


def test_write_not_sent_while_disconnected_is_never_applied_later(zkflags, zk_server, monkeypatch):
    """kazoo queues requests while SUSPENDED and sends them on reconnect; a write reported
    as failed must not land later behind the editor's back."""
    url = conf.get_url()
    proxy = TcpProxy("127.0.0.1", zk_server.port).start()
    proxied = conf.parse_url(f"zk://{proxy.hosts}{url.root}")
    client = make_client(proxied, session_timeout=10, reconnect_max_delay=0.2)
    client.start(timeout=10)
    direct = KazooClient(hosts=zk_server.hosts)
    direct.start(timeout=10)
    try:
        writer = FlagWriter(client, proxied, timeout=1.0)
        writer.write(doc("q", everyone=False), None)
        # The reads happened just before the network went: only the commit is left to send.
        before = writer.read_flag("q")
        payload, snapshot_version = writer.read_snapshot_payload()
        monkeypatch.setattr(writer, "read_flag", lambda name: before)
        monkeypatch.setattr(
            writer,
            "_read_for_write",
            lambda: (dict(payload["flags"]), payload["environments"], snapshot_version),
        )
        monkeypatch.setattr(writer, "_wait_connected", lambda: None)
        proxy.block()
        wait_until(lambda: not client.connected, timeout=15)
        with pytest.raises(ZooKeeperUnavailable, match="nothing was saved"):
            writer.write(doc("q", everyone=True), 0)
        proxy.unblock()
        wait_until(lambda: client.connected, timeout=15)
        client.sync(f"{url.root}/flags/q")  # anything still queued has been sent by now
        direct.sync(f"{url.root}/flags/q")
        data, stat = direct.get(f"{url.root}/flags/q")
        assert stat.version == 0
        assert b'"everyone":false' in data
        assert decode_entries(direct.get(f"{url.root}/snapshot")[0])["q"]["everyone"] is False
    finally:
        direct.stop()
        direct.close()
        proxy.stop()
        client.stop()
        client.close()
