"""FlagWriter (django_zkflags/writer.py) against a real ZooKeeper: versions, conflicts,
concurrent writers. A write cut off by the network: tests/system/test_writer.py."""

from __future__ import annotations

import threading

import pytest

from django_zkflags import conf
from django_zkflags.client import make_client
from django_zkflags.exceptions import FlagConflict
from django_zkflags.rules import FlagRule

from ..conftest import flag_doc, served_version, wait_until, writer_for


def rule(name: str, **rules) -> FlagRule:
    return FlagRule(name, **rules)


def test_create_update_delete_versions(zkflags):
    writer = zkflags.writer
    assert writer.write_flag(rule("a", everyone=True), None).version == 0
    assert writer.write_flag(rule("a", everyone=False), 0).version == 1
    current, version = zkflags.read("a")
    assert (current["everyone"], version) == (False, 1)
    entries = zkflags.reader.snapshot().flags
    assert entries["a"]["version"] == 1 and entries["a"]["everyone"] is False
    result = writer.delete_flag("a", 1)
    assert result.before["everyone"] is False and result.after is None
    assert zkflags.read("a") == (None, None)
    assert "a" not in zkflags.reader.snapshot().flags


def test_a_write_that_changes_nothing_writes_no_version(zkflags):
    writer = zkflags.writer
    writer.write_flag(rule("same", percent=10.0), None)
    snapshot_version = zkflags.reader.snapshot().version
    result = writer.write_flag(rule("same", percent=10.0), 0)
    assert (result.changed, result.version) == (False, 0)
    assert zkflags.read("same")[1] == 0
    assert zkflags.reader.snapshot().version == snapshot_version
    assert writer.write_flag(rule("same", percent=20.0), 0).version == 1


def test_stale_version_is_a_conflict_and_changes_nothing(zkflags):
    writer = zkflags.writer
    writer.write_flag(rule("a", percent=10.0), None)
    writer.write_flag(rule("a", percent=20.0), 0)
    with pytest.raises(FlagConflict, match="changed by someone else") as info:
        writer.write_flag(rule("a", percent=99.0), 0)
    assert info.value.current_version == 1
    assert zkflags.read("a") == (flag_doc("a", percent=20.0), 1)
    with pytest.raises(FlagConflict, match="already exists"):
        writer.write_flag(rule("a"), None)
    with pytest.raises(FlagConflict):
        writer.delete_flag("a", 0)


def test_concurrent_writers_of_different_flags_all_land(zkflags, zk_server):
    """Writers serialise on the snapshot version; none loses another's flag."""
    url = conf.get_url()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        client = make_client(url, session_timeout=10, reconnect_max_delay=1)
        client.start(timeout=10)
        try:
            writer = writer_for(client, url, timeout=10)
            version = None
            for step in range(5):
                version = writer.write_flag(rule(f"w{i}", percent=float(step)), version).version
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
    entries = zkflags.reader.snapshot().flags
    assert {name: (e["percent"], e["version"]) for name, e in entries.items()} == {
        f"w{i}": (4.0, 4) for i in range(6)
    }
    wait_until(
        lambda: all(zkflags.runtime.watch and served_version(f"w{i}") is not None for i in range(6))
    )
