"""The sharded view without ZooKeeper: its wire format, and applying heads to what a
process holds (django_zkflags.view)."""

from __future__ import annotations

from typing import Any

import pytest

from django_zkflags.rules import FlagRule, LinkedRule
from django_zkflags.snapshot import (
    CorruptSnapshot,
    Head,
    decode_file_payload,
    decode_shard,
    decode_view,
    decode_view_file,
    encode_entries,
    encode_head,
    encode_shard,
    encode_view_file,
    shard_of,
)
from django_zkflags.view import AppliedView

SHARDS = 8
MAX = 1 << 20


def entry(name: str, version: int = 0, **rules: Any) -> dict[str, Any]:
    """A snapshot entry as writers write it: the rule's whole document and its version."""
    return {**FlagRule(name, **rules).to_document(), "version": version}


class Tree:
    """What writers would hold in ZooKeeper: shards of entries, with versions."""

    def __init__(self, epoch: str = "e1") -> None:
        self.epoch = epoch
        self.entries: dict[int, dict[str, Any]] = {}
        self.versions: dict[int, int] = {}

    def put(self, *entries: dict[str, Any]) -> set[int]:
        moved = set()
        for doc in entries:
            k = shard_of(doc["name"], SHARDS)
            self.entries.setdefault(k, {})[doc["name"]] = doc
            moved.add(k)
        for k in moved:
            self.versions[k] = self.versions.get(k, -1) + 1
        return moved

    def delete(self, name: str) -> None:
        k = shard_of(name, SHARDS)
        del self.entries[k][name]
        self.versions[k] += 1

    def head(self) -> Head:
        head = decode_view(encode_head(self.epoch, SHARDS, self.versions, {}, 0))
        assert isinstance(head, Head)
        return head

    def fetch(self, indices: list[int]) -> dict[int, tuple[bytes | None, int | None]]:
        return {k: (encode_shard(k, self.entries[k])[0], self.versions[k]) for k in indices}


def apply(view: AppliedView, tree: Tree, base: dict[str, Any]) -> tuple[dict, dict, Any]:
    head = tree.head()
    return view.apply(head, tree.fetch(view.needed(head, ())), base, (), MAX)


def test_head_and_shards_round_trip():
    data = encode_head("abc", 256, {3: 7, 200: 0}, {"parents": {"p": None}}, 12)
    head = decode_view(data)
    assert head == Head("abc", 256, {3: 7, 200: 0}, {"parents": {"p": None}}, 12)
    name = "checkout"
    k = shard_of(name, 256)
    shard, inflated = encode_shard(k, {name: entry(name)})
    assert decode_shard(shard, k, 256, MAX) == {name: entry(name)}
    assert inflated > 0
    # a format-1 snapshot still decodes, as a whole view
    assert decode_view(encode_entries({name: entry(name)}))["flags"] == {name: entry(name)}


def test_shard_of_is_stable():
    # The same in every process and release: these values must never change.
    assert [shard_of(n, 256) for n in ("a", "checkout", "flag-00001")] == [67, 78, 41]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"format": 2, "epoch": "e", "shards": 0, "versions": []}',
        b'{"format": 2, "epoch": "e", "shards": 4, "versions": [1, 1, 1, 1, 1]}',
        b'{"format": 2, "epoch": "e", "shards": 4, "versions": [1, -2, 1, 1]}',
        b'{"format": 2, "epoch": "e", "shards": 4, "versions": [1, "x", 1, 1]}',
        b'{"format": 2, "epoch": "e", "shards": 4, "versions": [1, true, 1, 1]}',
        b'{"format": 2, "epoch": "e", "shards": 4, "versions": {"1": 1}}',
        b'{"format": 2, "shards": 4, "versions": [-1, -1, -1, -1]}',
        b'{"format": 2, "epoch": "e", "shards": true, "versions": []}',
        b'{"format": 2, "epoch": "e", "shards": 1, "versions": [0], "environments": [1]}',
    ],
)
def test_bad_heads_are_corrupt(payload):
    with pytest.raises(CorruptSnapshot):
        decode_view(payload)


def test_bad_shards_are_corrupt():
    k = shard_of("a", SHARDS)
    with pytest.raises(CorruptSnapshot, match="missing"):
        decode_shard(None, k, SHARDS, MAX)
    with pytest.raises(CorruptSnapshot, match="does not hold"):
        decode_shard(encode_shard(k, {"a": entry("a")})[0], k + 1, SHARDS, MAX)
    stray = next(f"s{i}" for i in range(100) if shard_of(f"s{i}", SHARDS) != k)
    with pytest.raises(CorruptSnapshot, match="other shards"):
        decode_shard(encode_shard(k, {stray: entry(stray)})[0], k, SHARDS, MAX)
    with pytest.raises(CorruptSnapshot, match="larger than"):
        decode_shard(encode_shard(k, {"a": entry("a", note="x" * 5000)})[0], k, SHARDS, 1000)


def test_view_file_round_trip_and_truncation():
    head = encode_head("e", SHARDS, {1: 0}, {}, 1)
    shards = {1: b"one", 5: b"five" * 10}
    data = encode_view_file(head, shards)
    assert decode_view_file(data) == (head, shards)
    for cut in (3, 10, len(data) - 1):
        with pytest.raises(CorruptSnapshot):
            decode_view_file(data[:cut])


def test_file_payload_of_a_sharded_view():
    tree = Tree()
    tree.put(entry("a", everyone=True), entry("b"))
    raw = {k: data for k, (data, _v) in tree.fetch(sorted(tree.versions)).items()}
    data = encode_view_file(encode_head("e1", SHARDS, tree.versions, {}, 2), raw)
    assert sorted(decode_file_payload(data)["flags"]) == ["a", "b"]


def test_applying_reads_only_moved_shards_and_reuses_the_rest():
    tree, view = Tree(), AppliedView()
    tree.put(*(entry(f"f{i}") for i in range(40)))
    flags, errors, changed = apply(view, tree, {})
    assert changed is None and errors == {} and len(flags) == 40  # the first head: whole

    moved = tree.put(entry("f3", version=1, everyone=True))
    head = tree.head()
    assert view.needed(head, ()) == sorted(moved)
    new, errors, changed = view.apply(head, tree.fetch(sorted(moved)), flags, (), MAX)
    assert changed == {"f3"}
    assert new["f3"].everyone is True
    assert all(new[n] is flags[n] for n in flags if n != "f3")  # the same rule objects
    assert new is not flags and flags["f3"].everyone is None  # the old view is untouched


def test_a_name_deleted_from_its_shard_is_gone():
    tree, view = Tree(), AppliedView()
    tree.put(entry("keep"), entry("drop"))
    flags, _e, _c = apply(view, tree, {})
    tree.delete("drop")
    flags, _e, changed = apply(view, tree, flags)
    assert changed == {"drop"} and sorted(flags) == ["keep"]


def test_another_epoch_reads_everything_again():
    tree, view = Tree(), AppliedView()
    tree.put(entry("a"), entry("b"))
    flags, _e, _c = apply(view, tree, {})
    tree.epoch = "e2"
    assert view.needed(tree.head(), ()) == sorted(tree.versions)
    assert view.needed(tree.head(), ("production",)) == sorted(tree.versions)


def test_a_prerequisite_in_another_shard_relinks_its_dependent():
    names = ["dep", *(f"p{i}" for i in range(100))]
    req = next(n for n in names[1:] if shard_of(n, SHARDS) != shard_of("dep", SHARDS))
    tree, view = Tree(), AppliedView()
    tree.put(entry("dep", everyone=True, requires=[req]), entry(req, everyone=True))
    flags, errors, _c = apply(view, tree, {})
    assert errors == {} and isinstance(flags["dep"], LinkedRule)
    assert flags["dep"].is_active(None, None, lambda user: frozenset()) is True

    tree.put(entry(req, version=1, everyone=False))  # only the prerequisite's shard moves
    flags, errors, changed = apply(view, tree, flags)
    assert changed == {req, "dep"}
    assert flags["dep"].is_active(None, None, lambda user: frozenset()) is False

    tree.delete(req)
    flags, errors, changed = apply(view, tree, flags)
    assert "dep" in changed and "not in the snapshot" in errors["dep"]


def test_a_corrupt_shard_keeps_what_it_held():
    tree, view = Tree(), AppliedView()
    tree.put(entry("a", everyone=True), *(entry(f"x{i}") for i in range(20)))
    flags, _e, _c = apply(view, tree, {})
    k = shard_of("a", SHARDS)
    tree.versions[k] += 1
    head = tree.head()
    new, errors, changed = view.apply(head, {k: (b"garbage", tree.versions[k])}, flags, (), MAX)
    assert new["a"] is flags["a"] and changed == frozenset()
    assert f"(shard {k})" in errors
    assert view.needed(head, ()) == []  # not read again until the head moves it


def test_the_dict_of_the_change_before_last_is_reused_once_nobody_holds_it():
    tree, view = Tree(), AppliedView()
    tree.put(*(entry(f"f{i}") for i in range(50)))
    current, _e, _c = apply(view, tree, {})
    published = []
    for i in range(6):
        tree.put(entry(f"f{i}", version=i + 1, everyone=True))
        current, _e, _c = apply(view, tree, current)
        published.append(id(current))
    # Two dicts take turns: each change writes into the one published two changes ago.
    assert view.reused >= 4 and len(set(published)) == 2
    assert [current[f"f{i}"].everyone for i in range(6)] == [True] * 6


def test_a_dict_still_held_is_never_mutated():
    tree, view = Tree(), AppliedView()
    tree.put(*(entry(f"f{i}") for i in range(50)))
    first, _e, _c = apply(view, tree, {})
    tree.put(entry("f1", version=1, everyone=True))
    second, _e, _c = apply(view, tree, first)
    held = dict(first)  # what a request that started on ``first`` sees
    tree.put(entry("f2", version=1, everyone=True))
    third, _e, _c = apply(view, tree, second)  # ``first`` is still referenced here
    assert third is not first and first == held
    assert view.copied >= 1
    assert third["f1"].everyone is True and third["f2"].everyone is True
