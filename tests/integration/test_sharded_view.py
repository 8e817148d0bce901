"""The sharded view against a real ZooKeeper: a change costs a process the shards it moved,
a batch is applied whole, hand edits of a shard are contained, and the old one-znode format
is still served and converted by the next write (docs/design.md, "The sharded view")."""

from __future__ import annotations

from typing import Any

import pytest

from django_zkflags import runtime
from django_zkflags.cache import store
from django_zkflags.reader import read_view
from django_zkflags.rules import FlagRule
from django_zkflags.signals import flag_changed
from django_zkflags.snapshot import (
    EMPTY,
    SHARDS,
    decode_file_payload,
    decode_view,
    encode_entries,
    encode_head,
    encode_shard,
    shard_of,
)
from django_zkflags.writer import BatchItem

from ..conftest import wait_until


def head(direct: Any, root: str) -> Any:
    return decode_view(direct.get(f"{root}/snapshot")[0])


def write_shard_by_hand(direct: Any, root: str, k: int, data: bytes) -> None:
    """An operator's edit: ``data`` in shard ``k``, then the head moved by hand to name its
    new version, so that processes read it."""
    direct.set(f"{root}/shards/{k}", data)
    hv = head(direct, root)
    version = direct.exists(f"{root}/shards/{k}").version
    direct.set(
        f"{root}/snapshot",
        encode_head(hv.epoch, hv.shards, {**hv.versions, k: version}, hv.environments, 2),
    )


def names_in_distinct_shards(count: int, prefix: str = "f") -> list[str]:
    names, taken = [], set()
    for i in range(10_000):
        name = f"{prefix}{i}"
        if shard_of(name, SHARDS) not in taken:
            taken.add(shard_of(name, SHARDS))
            names.append(name)
        if len(names) == count:
            return names
    raise AssertionError("not enough names")


def test_a_change_reads_one_shard_whatever_the_number_of_flags(zkflags):
    items = [BatchItem(f"flag-{i:04d}", FlagRule(f"flag-{i:04d}"), None) for i in range(1500)]
    zkflags.writer.write_flags(items)
    zkflags.wait_version("flag-1499", 0)
    status = runtime.status()["apply"]
    read_before, applied_before = status["shards_read"], status["count"]
    assert status["shards"] > 200  # 1,500 names spread over most of the 256 shards

    zkflags.write("flag-0007", everyone=True)

    status = runtime.status()["apply"]
    assert status["count"] == applied_before + 1
    assert status["shards_read"] == read_before + 1  # the one shard the flag is in
    assert store.base.flags["flag-0007"].everyone is True
    assert len(store.base.flags) == 1500
    assert runtime.status()["flags"] == 1500


def test_a_batch_over_many_shards_is_published_whole(zkflags):
    names = names_in_distinct_shards(30)
    publications: list[frozenset[str]] = []

    def on_changed(sender: Any, names: frozenset[str], **kwargs: Any) -> None:
        publications.append(names)

    flag_changed.connect(on_changed)
    try:
        zkflags.writer.write_flags([BatchItem(n, FlagRule(n, everyone=True), None) for n in names])
        wait_until(lambda: all(n in store.base.flags for n in names), what="the batch")
    finally:
        flag_changed.disconnect(on_changed)
    # One publication carried all 30: no request saw part of the batch.
    assert [p for p in publications if p & set(names)] == [frozenset(names)]


def test_a_shard_that_loses_its_last_flag_stays_until_the_next_epoch(zkflags, direct):
    """Its version keeps growing within the epoch: a process that missed the heads in
    between never takes a new incarnation of the shard for the one it holds (a view
    written whole, in a new epoch, leaves the empty ones out)."""
    zkflags.write("lonely", everyone=True)
    k = shard_of("lonely", SHARDS)
    version = head(direct, zkflags.root).versions[k]
    zkflags.writer.delete_flag("lonely", zkflags.read("lonely")[1])
    zkflags.wait_version("lonely", None)
    assert head(direct, zkflags.root).versions[k] == version + 1
    assert read_view(direct, zkflags.root)["flags"] == {}
    zkflags.write("lonely", everyone=False)  # and it comes back, one version further
    assert head(direct, zkflags.root).versions[k] == version + 2
    assert store.base.flags["lonely"].everyone is False


def test_garbage_in_a_shard_keeps_its_flags_and_the_next_write_rebuilds(zkflags, direct):
    first, second = names_in_distinct_shards(2, prefix="g")
    zkflags.write(first, everyone=True)
    zkflags.write(second, everyone=True)
    k = shard_of(first, SHARDS)
    epoch = head(direct, zkflags.root).epoch
    write_shard_by_hand(direct, zkflags.root, k, b"ZKF1 not zlib")
    wait_until(lambda: f"(shard {k})" in runtime.status()["invalid_flags"], what="the error")
    assert store.base.flags[first].everyone is True  # kept its last good rule
    zkflags.write(second, everyone=False)  # another shard: served
    assert store.base.flags[second].everyone is False

    # A write of a flag in the broken shard reads the view, finds it unreadable and rebuilds
    # it from the flag znodes, in a new epoch: every process reads it whole.
    zkflags.write(first, everyone=False)
    assert head(direct, zkflags.root).epoch != epoch
    wait_until(lambda: not runtime.status()["invalid_flags"], what="the error cleared")
    assert store.base.flags[first].everyone is False
    assert sorted(read_view(direct, zkflags.root)["flags"]) == sorted([first, second])


def test_a_flag_filed_under_the_wrong_shard_is_refused(zkflags, direct):
    zkflags.write("right", everyone=True)
    k = shard_of("right", SHARDS)
    wrong = next(f"w{i}" for i in range(1000) if shard_of(f"w{i}", SHARDS) != k)
    entries = read_view(direct, zkflags.root)["flags"]
    data, _ = encode_shard(k, {**entries, wrong: {"name": wrong, "everyone": True, "version": 0}})
    write_shard_by_hand(direct, zkflags.root, k, data)
    wait_until(lambda: f"(shard {k})" in runtime.status()["invalid_flags"], what="the error")
    assert "other shards" in runtime.status()["invalid_flags"][f"(shard {k})"]
    assert wrong not in store.base.flags
    assert store.base.flags["right"].everyone is True


def test_a_one_znode_snapshot_is_served_and_converted_by_the_next_write(zkflags, direct):
    zkflags.write("old-a", everyone=True)
    entries = read_view(direct, zkflags.root)["flags"]
    entries["old-b"] = {"name": "old-b", "everyone": True, "version": 0}
    direct.create(f"{zkflags.root}/flags/old-b", b'{"name":"old-b","everyone":true}')
    direct.set(f"{zkflags.root}/snapshot", encode_entries(entries))  # format 1, by hand
    zkflags.wait_version("old-b", 0)
    assert store.base.flags["old-b"].everyone is True

    zkflags.write("old-a", everyone=False)
    view = head(direct, zkflags.root)
    assert view.shards == SHARDS and shard_of("old-b", SHARDS) in view.versions
    assert sorted(read_view(direct, zkflags.root)["flags"]) == ["old-a", "old-b"]
    assert store.base.flags["old-b"].everyone is True
    assert store.base.flags["old-a"].everyone is False


@pytest.mark.parametrize("count", [1, 40])
def test_a_fresh_runtime_serves_the_disk_copy_of_a_sharded_view(zkflags, settings, tmp_path, count):
    path = tmp_path / "flags.snapshot"
    runtime.stop()
    settings.ZKFLAGS = {**settings.ZKFLAGS, "SNAPSHOT_FILE": str(path)}
    runtime.start(wait=10.0)
    names = [f"disk-{i}" for i in range(count)]
    zkflags.writer.write_flags([BatchItem(n, FlagRule(n, everyone=True), None) for n in names])
    zkflags.wait_version(names[-1], 0)

    def on_disk() -> list[str]:
        if not path.exists():
            return []
        return sorted(decode_file_payload(path.read_bytes().partition(b"\n")[2])["flags"])

    wait_until(lambda: on_disk() == sorted(names), what="the disk copy")
    runtime.stop()
    store.publish(EMPTY)
    # ZooKeeper unreachable: the fresh runtime serves the disk copy.
    settings.ZKFLAGS_URL = "zk://127.0.0.1:1/nowhere"
    fresh = runtime.get_runtime()
    assert fresh.load_file()
    assert store.base.source == "file"
    assert sorted(store.base.flags) == sorted(names)
