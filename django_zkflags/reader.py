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
from .rules import FlagRule, InvalidFlag, validate_environments_document
from .snapshot import MAX_SNAPSHOT_BYTES, CorruptSnapshot, decode_document, decode_payload

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
    """The snapshot znode: flag entries (documents with their version), the environments
    document, and the znode version (None when there is no snapshot node)."""

    flags: dict[str, Any] = field(default_factory=dict)
    environments: dict[str, Any] = field(default_factory=dict)
    version: int | None = None


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
        """Raises :class:`CorruptSnapshot` when the node holds something unreadable."""
        self.requests.wait_connected()
        found = self._get(self.paths.snapshot)
        if found is None:
            return StoredSnapshot()
        data, stat = found
        payload = decode_payload(data, self.max_snapshot_bytes)
        return StoredSnapshot(payload["flags"], payload["environments"], stat.version)

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
        for name in self.flag_names():
            try:
                stored = self.flag(name)
            except InvalidFlag as exc:  # a child znode whose name is not a flag name
                errors[name[:200]] = str(exc)
                continue
            if stored.rule is not None:
                entries[name] = {**stored.rule.to_document(), "version": stored.version}
            elif stored.error is not None:
                errors[name] = stored.error
        return entries, errors


__all__ = [
    "ChangeRecord",
    "CorruptSnapshot",
    "StoredEnvironments",
    "StoredFlag",
    "StoredSnapshot",
    "TreeReader",
]
