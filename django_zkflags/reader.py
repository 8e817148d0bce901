"""Reads of the tree, for editors and repairs (serving processes read only the snapshot,
through :mod:`django_zkflags.watcher`).

A node that does not hold valid data (written by hand, say) is returned with an
``error`` instead of raising, so that an editor can see it and overwrite it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kazoo.exceptions import NoNodeError

from .client import Paths, Requests
from .exceptions import ZooKeeperUnavailable
from .rules import FlagRule, InvalidFlag, validate_environments_document
from .snapshot import (
    MAX_SNAPSHOT_BYTES,
    SHARDS,
    CorruptSnapshot,
    Head,
    decode_document,
    decode_shard,
    decode_view,
)

#: Reads sent before their answers are awaited, when reading every flag znode.
PIPELINED_READS = 1000
#: Reads of the head and its shards before giving up while writes keep landing between.
SNAPSHOT_READ_ROUNDS = 5
#: Decoded shards by path: (epoch, version, shard count) and entries. Entries are never
#: mutated (writers copy the view); one root holds at most SHARDS of them.
_decoded: dict[str, tuple[tuple[str, int, int], dict[str, Any]]] = {}


def forget_decoded_shards() -> None:
    """Read every shard again next time (a write found one that moved: a hand edit)."""
    _decoded.clear()


NO_ENVIRONMENTS_DOCUMENT: dict[str, Any] = {"parents": {}, "hosts": {}}


@dataclass(frozen=True)
class StoredFlag:
    """A flag znode: its rule (None when missing or invalid) and znode version (None when
    missing)."""

    name: str
    rule: FlagRule | None
    version: int | None
    error: str | None = None

    @property
    def exists(self) -> bool:
        return self.version is not None

    def document(self) -> dict[str, Any] | None:
        return self.rule.to_document() if self.rule is not None else None


@dataclass(frozen=True)
class StoredEnvironments:
    """The environments znode: a valid document (empty when missing or invalid), its
    version, and what is wrong with it when it is invalid."""

    document: dict[str, Any]
    version: int | None
    error: str | None = None


@dataclass(frozen=True)
class StoredSnapshot:
    """The snapshot: flag entries (documents with their version), the environments
    document, and the snapshot znode's version (None when there is no snapshot node).

    For a sharded view (format 2) also its epoch, number of shards, each shard's znode
    version and the names it holds; ``epoch`` is None for a format-1 snapshot (one znode).
    """

    flags: dict[str, Any] = field(default_factory=dict)
    environments: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    epoch: str | None = None
    shards: int = SHARDS
    shard_versions: dict[int, int] = field(default_factory=dict)
    shard_names: dict[int, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ChangeRecord:
    """A change record under ``<root>/changes/``: the change is live; its audit row may
    not be committed yet (or ever, if the writing process died)."""

    path: str
    record: dict[str, Any] | None  # None when the node is not a readable record
    created_ms: int  # the node's ctime (ZooKeeper's clock, milliseconds since the epoch)
    error: str | None = None


class TreeReader:
    def __init__(
        self, requests: Requests, paths: Paths, *, max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES
    ) -> None:
        """``max_snapshot_bytes``: a larger snapshot (as JSON) is refused as corrupt."""
        self.requests = requests
        self.paths = paths
        self.max_snapshot_bytes = max_snapshot_bytes

    def _get(self, path: str) -> tuple[bytes, Any] | None:
        try:
            return self.requests.result(self.requests.client.get_async(path))  # type: ignore[no-any-return]
        except NoNodeError:
            return None

    def flag(self, name: str) -> StoredFlag:
        self.requests.wait_connected()
        found = self._get(self.paths.flag(name))
        if found is None:
            return StoredFlag(name, None, None)
        data, stat = found
        try:
            rule = FlagRule.from_document(decode_document(data), name=name)
        except InvalidFlag as exc:
            return StoredFlag(name, None, stat.version, str(exc))
        return StoredFlag(name, rule, stat.version)

    def snapshot(self) -> StoredSnapshot:
        """The whole view: the head and every shard it names (one round trip for all the
        shards), or a format-1 snapshot.

        Raises :class:`CorruptSnapshot` when the head or a shard holds something
        unreadable, a shard is missing, or a shard is at another version than the head
        says while the head does not move (a write in steps cut off, or a hand edit).
        """
        self.requests.wait_connected()
        for _ in range(SNAPSHOT_READ_ROUNDS):
            found = self._get(self.paths.snapshot)
            if found is None:
                return StoredSnapshot()
            data, stat = found
            view = decode_view(data, self.max_snapshot_bytes)
            if not isinstance(view, Head):
                return StoredSnapshot(view["flags"], view["environments"], stat.version)
            shards = self._shards(view)
            moved = [k for k, (version, _entries) in shards.items() if version != view.versions[k]]
            if not moved:
                flags: dict[str, Any] = {}
                for _version, entries in shards.values():
                    flags.update(entries)
                return StoredSnapshot(
                    flags,
                    view.environments,
                    stat.version,
                    epoch=view.epoch,
                    shards=view.shards,
                    shard_versions={k: version for k, (version, _e) in shards.items()},
                    shard_names={k: frozenset(entries) for k, (_v, entries) in shards.items()},
                )
            again = self.snapshot_stat()
            if again is None or again.mzxid == stat.mzxid:
                k = moved[0]
                raise CorruptSnapshot(
                    f"shard {k} is at version {shards[k][0]} where the head says "
                    f"{view.versions[k]}: a view written in steps was cut off, or a hand edit"
                )
            # A write landed between the head and its shards: read again.
        raise ZooKeeperUnavailable("the snapshot kept moving while it was read; try again")

    def _shards(self, head: Head) -> dict[int, tuple[int, dict[str, Any]]]:
        """Every shard ``head`` names: its znode version and entries. A shard this process
        read before at the version the head names, in the same epoch, is not read again
        (a shard's version only grows within an epoch: writers never delete one there),
        so a write at 100,000 flags reads the head and the shards that moved since."""
        client = self.requests.client
        shards: dict[int, tuple[int, dict[str, Any]]] = {}
        pending = []
        for k in sorted(head.versions):
            kept = _decoded.get(self.paths.shard(k))
            if kept is not None and kept[0] == (head.epoch, head.versions[k], head.shards):
                shards[k] = (head.versions[k], kept[1])
            else:
                pending.append((k, client.get_async(self.paths.shard(k))))
        for k, result in pending:
            try:
                data, stat = self.requests.result(result)
            except NoNodeError:
                raise CorruptSnapshot(f"shard {k} is missing") from None
            entries = decode_shard(data, k, head.shards, self.max_snapshot_bytes)
            if stat.version == head.versions[k]:
                _decoded[self.paths.shard(k)] = ((head.epoch, stat.version, head.shards), entries)
            shards[k] = (stat.version, entries)
        return shards

    def snapshot_stat(self) -> Any:
        return self.requests.result(self.requests.client.exists_async(self.paths.snapshot))

    def shard_versions(self, indices: list[int]) -> dict[int, int]:
        """The znode version of each of these shards that exists (one round trip)."""
        client = self.requests.client
        pending = [(k, client.exists_async(self.paths.shard(k))) for k in indices]
        found = {}
        for k, result in pending:
            stat = self.requests.result(result)
            if stat is not None:
                found[k] = stat.version
        return found

    def snapshot_version(self) -> int | None:
        stat = self.requests.result(self.requests.client.exists_async(self.paths.snapshot))
        return stat.version if stat is not None else None

    def environments(self) -> StoredEnvironments:
        self.requests.wait_connected()
        found = self._get(self.paths.environments)
        if found is None:
            return StoredEnvironments(dict(NO_ENVIRONMENTS_DOCUMENT), None)
        data, stat = found
        try:
            doc = validate_environments_document(decode_document(data))
        except InvalidFlag as exc:
            return StoredEnvironments(dict(NO_ENVIRONMENTS_DOCUMENT), stat.version, str(exc))
        return StoredEnvironments(doc, stat.version)

    def flag_names(self) -> list[str]:
        self.requests.wait_connected()
        try:
            children = self.requests.result(
                self.requests.client.get_children_async(self.paths.flags)
            )
        except NoNodeError:
            return []
        return sorted(children)

    def change_records(self) -> list[ChangeRecord]:
        """Every change record, oldest first."""
        self.requests.wait_connected()
        try:
            children = self.requests.result(
                self.requests.client.get_children_async(self.paths.changes)
            )
        except NoNodeError:
            return []
        records = []
        for child in sorted(children):
            path = f"{self.paths.changes}/{child}"
            found = self._get(path)
            if found is None:
                continue  # settled meanwhile
            data, stat = found
            try:
                record = decode_document(data)
                if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                    raise InvalidFlag("not a change record")
                records.append(ChangeRecord(path, record, stat.ctime))
            except InvalidFlag as exc:
                records.append(ChangeRecord(path, None, stat.ctime, str(exc)))
        return records

    def flag_entries(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Every flag znode as a snapshot entry (document + version), and the names of the
        invalid ones with what is wrong."""
        entries: dict[str, Any] = {}
        errors: dict[str, str] = {}
        names = []
        for name in self.flag_names():
            try:
                self.paths.flag(name)
                names.append(name)
            except InvalidFlag as exc:  # a child znode whose name is not a flag name
                errors[name[:200]] = str(exc)
        client = self.requests.client
        for start in range(0, len(names), PIPELINED_READS):
            # Pipelined: 100,000 flags are 100 round trips, not 100,000.
            chunk = names[start : start + PIPELINED_READS]
            pending = [(name, client.get_async(self.paths.flag(name))) for name in chunk]
            for name, result in pending:
                try:
                    data, stat = self.requests.result(result)
                except NoNodeError:
                    continue  # deleted meanwhile
                try:
                    rule = FlagRule.from_document(decode_document(data), name=name)
                except InvalidFlag as exc:
                    errors[name] = str(exc)
                    continue
                entries[name] = {**rule.to_document(), "version": stat.version}
        return entries, errors


def read_view(client: Any, root: str, max_bytes: int = MAX_SNAPSHOT_BYTES) -> dict[str, Any]:
    """The whole view under ``root`` as ``{"flags": {name: entry}, "environments": {...}}``,
    read with a plain (connected) kazoo client: the head, then the shards it names, or a
    format-1 snapshot. For tools and tests; raises CorruptSnapshot, NoNodeError."""
    data, _stat = client.get(f"{root}/snapshot")
    view = decode_view(data, max_bytes)
    if not isinstance(view, Head):
        return view
    flags: dict[str, Any] = {}
    for k in sorted(view.versions):
        shard, _shard_stat = client.get(f"{root}/shards/{k}")
        flags.update(decode_shard(shard, k, view.shards, max_bytes))
    return {"flags": flags, "environments": view.environments}


__all__ = [
    "ChangeRecord",
    "CorruptSnapshot",
    "StoredEnvironments",
    "StoredFlag",
    "StoredSnapshot",
    "TreeReader",
    "read_view",
]
