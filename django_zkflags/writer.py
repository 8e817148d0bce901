"""Versioned writes: each change of a flag (or of the environments document) is one
ZooKeeper ``multi()`` with the snapshot: the shards it changes and the head (format 2,
see :mod:`django_zkflags.snapshot`).

* the changed znode is written from the version the editor started from: that is the
  optimistic lock that refuses a conflicting edit (:class:`FlagConflict`);
* the snapshot is rewritten from the version just read: that serialises writers. When only
  the snapshot moved (someone saved *another* flag meanwhile) the attempt is made again
  from fresh reads, through kazoo's ``KazooRetry`` and ``ForceRetryError`` as in kazoo's
  own recipes.

Both succeed or neither does. A change that would not change anything is not written (no
new version). The writer takes validated input (a :class:`FlagRule`, a validated
environments document); it does not validate again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.retry import ForceRetryError, KazooRetry, RetryFailedError

from .client import UNAVAILABLE_ERRORS, Paths, Requests
from .exceptions import (
    FlagConflict,
    FlagTooLarge,
    FlagWriteError,
    PermissionDenied,
    ZooKeeperUnavailable,
)
from .kazoo_compat import withdraw_queued_request
from .reader import StoredFlag, StoredSnapshot, TreeReader, forget_decoded_shards
from .rules import FlagRule, validate_name
from .snapshot import (
    MAX_SNAPSHOT_BYTES,
    SHARDS,
    CorruptSnapshot,
    encode_document,
    encode_head,
    encode_shard,
    shard_of,
)

log = logging.getLogger("django_zkflags.writer")

ENVIRONMENTS = "@environments"  # the name changes of the environments document go by
BATCH = "@batch"  # the name of a change record that covers several flags

T = TypeVar("T")

#: A check of a change against the whole view it is committed with, run in every attempt
#: (so against what ZooKeeper holds at that moment, serialised with every other writer by
#: the snapshot's version): ``check(flags, before)``, where ``flags`` are the snapshot's
#: entries after the change and ``before`` the entries the change replaces (None: it
#: creates the flag), by name. It raises to refuse the change; nothing is written.
ViewCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], None]

READ_BACK_ERRORS: tuple[type[BaseException], ...] = (FlagWriteError, *UNAVAILABLE_ERRORS)
#: Bytes kept free in each multi() besides what is counted (request framing, paths, ACLs).
WRITE_MARGIN = 16 * 1024


@dataclass(frozen=True)
class WriteResult:
    """What one change did: ``name`` (a flag name or ``"@environments"``), the znode
    ``version`` after it (None after a delete), the documents before and after, whether
    anything was written at all, and the change record written with it (if any)."""

    name: str
    version: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed: bool = True
    record_path: str | None = None
    action: str = ""  # "created", "changed" or "deleted"


@dataclass(frozen=True)
class AlsoOp:
    """One more operation for the ``multi()`` of a change, all or nothing with it: delete
    (``data`` None) or set a znode at ``expected_version`` (for example, consuming a
    scheduled change in the same transaction as the change it makes)."""

    path: str
    expected_version: int
    data: bytes | None = None


class AlsoOpFailed(FlagWriteError):
    """An :class:`AlsoOp` did not apply (its znode moved or is gone): nothing was written.
    Not retried: the caller decides what it means."""

    def __init__(self, path: str, error: BaseException) -> None:
        super().__init__(f"{path}: {error!r}; nothing was written")
        self.path = path
        self.error = error


@dataclass(frozen=True)
class BatchItem:
    """One flag of :meth:`FlagWriter.write_flags`: the rule to write (None deletes it) and
    the znode version its editor started from (None: create it)."""

    name: str
    rule: FlagRule | None
    expected_version: int | None


@dataclass(frozen=True)
class ChangeNote:
    """Who makes a change, from where, when: written to ``<root>/changes/`` in the same
    ``multi()`` as the change, so that a change that is live has a trail even if the
    process dies before its audit row is committed."""

    id: str
    source: str
    username: str = ""
    user_id: Any = None
    at: str = ""
    host: str = ""
    pid: int = 0
    action: str = ""  # "" : created/changed/deleted, as the writer finds it
    #: A scheduled change: when it was due (ISO 8601), so that its audit row (written from
    #: this record if the process dies first) says how late it ran.
    scheduled_for: str = ""

    #: Documents larger than this (encoded) are left out of the record, so that the record
    #: never makes a change too large for one write; the audit row then says so.
    MAX_DOCUMENT_BYTES = 32 * 1024

    def record(self, name: str, action: str, version: int | None, before: Any, after: Any) -> bytes:
        def small(doc: Any) -> Any:
            if doc is not None and len(encode_document(doc)) > self.MAX_DOCUMENT_BYTES:
                return {"omitted": "too large for the change record"}
            return doc

        return encode_document(
            {
                **self._who(),
                "name": name,
                "action": self.action or action,
                "version": version,
                "before": small(before),
                "after": small(after),
            }
        )

    #: A batch record larger than this leaves the documents out (names, actions and
    #: versions stay), so that it never makes the transaction too large.
    MAX_BATCH_RECORD_BYTES = 128 * 1024

    def record_batch(self, results: Sequence[WriteResult]) -> bytes:
        """One record for a batch of changes: ``{"name": "@batch", "changes": [...]}``."""
        changes = [
            {
                "name": r.name,
                "action": self.action or r.action,
                "version": r.version,
                "before": r.before,
                "after": r.after,
            }
            for r in results
        ]
        data = encode_document({**self._who(), "name": BATCH, "changes": changes})
        if len(data) > self.MAX_BATCH_RECORD_BYTES:
            for change in changes:
                change["before"] = change["after"] = {"omitted": "batch too large for the record"}
            data = encode_document({**self._who(), "name": BATCH, "changes": changes})
        return data

    def _who(self) -> dict[str, Any]:
        who = {
            "id": self.id,
            "source": self.source,
            "username": self.username,
            "user_id": self.user_id,
            "at": self.at,
            "host": self.host,
            "pid": self.pid,
        }
        if self.scheduled_for:
            who["scheduled_for"] = self.scheduled_for
        return who


class _Entries(dict[str, Any]):
    """The view's entries for one attempt, remembering which names the attempt set or took
    out: only their shards are written."""

    def __init__(self, entries: Mapping[str, Any]) -> None:
        super().__init__(entries)
        self.touched: set[str] = set()

    def __setitem__(self, name: str, entry: Any) -> None:
        self.touched.add(name)
        super().__setitem__(name, entry)

    def __delitem__(self, name: str) -> None:
        self.touched.add(name)
        super().__delitem__(name)

    def pop(self, name: str, *default: Any) -> Any:  # type: ignore[override]
        self.touched.add(name)
        return super().pop(name, *default)


@dataclass
class _View:
    """The snapshot as read for one write attempt, to be rewritten."""

    flags: _Entries
    environments: dict[str, Any]
    version: int | None  # None: there is no snapshot node yet
    rebuilt: bool = False  # from the source znodes (the snapshot was missing or unreadable)
    epoch: str | None = None  # None: a new epoch (the view is written whole)
    shards: int = SHARDS
    #: Each shard's znode version as read (None: not a sharded view read whole, so every
    #: shard is written, and the versions of those that exist are looked up).
    shard_versions: dict[int, int] | None = None
    shard_names: Mapping[int, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _ShardWrite:
    index: int
    data: bytes | None  # None: delete the shard (it holds no flag any more)
    version: int | None  # the version it is at (None: create it)
    inflated: int = 0


@dataclass(frozen=True)
class _ViewWrite:
    """The shards an attempt writes and the new head."""

    shards: list[_ShardWrite]
    head: bytes

    @property
    def size(self) -> int:
        return len(self.head) + sum(len(write.data or b"") for write in self.shards)


def new_epoch() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild of the snapshot did: the invalid znodes (each kept its previous
    entry), the entries it changed (a flag, or ``"@environments"``, as its znode holds it
    and the snapshot did not: before and after), whether it wrote the snapshot, and the
    change record written with it."""

    invalid: dict[str, str]
    changes: list[WriteResult]
    written: bool = True
    record_path: str | None = None


def _differences(
    old_flags: dict[str, Any],
    entries: dict[str, Any],
    old_environments: dict[str, Any],
    environments: dict[str, Any],
    environments_version: int | None,
) -> list[WriteResult]:
    """The entries of a snapshot rebuilt from the znodes that differ from the old one."""

    def document(entry: Any) -> dict[str, Any] | None:
        if entry is None:
            return None
        return {key: value for key, value in entry.items() if key != "version"}

    changes = []
    for name in sorted(set(old_flags) | set(entries)):
        before, after = old_flags.get(name), entries.get(name)
        if before == after:
            continue
        if after is None:
            action, version = "deleted", None
        else:
            action = "created" if before is None else "changed"
            version = after.get("version")
        changes.append(
            WriteResult(name, version, document(before), document(after), True, None, action)
        )
    if environments != old_environments:
        changes.append(
            WriteResult(
                ENVIRONMENTS,
                environments_version,
                old_environments,
                environments,
                True,
                None,
                "changed",
            )
        )
    return changes


class _Outcome(ZooKeeperUnavailable):
    """A commit cut off by a lost connection; the message says whether it was applied."""


class FlagWriter:
    #: Attempts when only the snapshot moved under us (another flag was written).
    RETRIES = 20

    def __init__(
        self,
        requests: Requests,
        paths: Paths,
        acl: list[Any],
        *,
        max_bytes: int = 1000 * 1000,
        check_empty_tree: Callable[[], None] | None = None,
        max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES,
        check: ViewCheck | None = None,
    ) -> None:
        """``check_empty_tree`` is called before a write that would start the tree from
        nothing (no snapshot, no flag, no environments): it raises to refuse that (when
        ZooKeeper lost data that exists elsewhere, say). ``max_snapshot_bytes``: the
        largest snapshot (as JSON) read or written; a larger one read is corrupt (and
        rebuilt), one to be written is refused. ``check`` (a :data:`ViewCheck`) is run by
        every change of flags (``write_flag``, ``write_flags``, ``delete_flag``) before it
        commits: cross-flag rules (prerequisites) decided against the view written."""
        self.check_empty_tree = check_empty_tree
        self.check = check
        self.requests = requests
        self.client: KazooClient = requests.client
        self.paths = paths
        self.acl = acl
        self.max_bytes = max_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        self.reader = TreeReader(requests, paths, max_snapshot_bytes=max_snapshot_bytes)

    # -- the changes -----------------------------------------------------------------------

    def write_flag(
        self,
        rule: FlagRule,
        expected_version: int | None,
        note: ChangeNote | None = None,
        also: Sequence[AlsoOp] = (),
    ) -> WriteResult:
        """Create (``expected_version=None``) or update a flag from the version the editor
        saw. ``also``: more operations in the same ``multi()`` (the change is written even
        if it changes nothing, so that they apply)."""
        name = rule.name
        doc = rule.to_document()
        data = encode_document(doc)
        path = self.paths.flag(name)
        new_version = 0 if expected_version is None else expected_version + 1

        def attempt() -> WriteResult:
            current = self.reader.flag(name)
            self._check_expected(name, expected_version, current)
            view = self._view_for_write()
            entry = {**doc, "version": current.version}
            unchanged = current.document() == doc and view.flags.get(name) == entry
            if unchanged and not view.rebuilt and not also:
                return WriteResult(name, current.version, doc, doc, changed=False, action="changed")
            replaced = view.flags.get(name)
            view.flags[name] = {**doc, "version": new_version}
            if self.check is not None:
                self.check(view.flags, {name: replaced})
            tx = self.client.transaction()
            if expected_version is None:
                tx.create(path, data, acl=self.acl)
            else:
                tx.set_data(path, data, version=expected_version)
            for op in also:
                if op.data is None:
                    tx.delete(op.path, version=op.expected_version)
                else:
                    tx.set_data(op.path, op.data, version=op.expected_version)
            action = "created" if expected_version is None else "changed"
            record = (
                note.record(name, action, new_version, current.document(), doc) if note else None
            )
            record_path = self._commit(
                tx,
                view,
                name,
                data,
                record,
                read_back=lambda: (
                    self._applied(name, doc, new_version)
                    and (not also or note is None or self._recorded(note.id))
                ),
                also=also,
            )
            return WriteResult(
                name, new_version, current.document(), doc, True, record_path, action
            )

        return self._retrying(repr(name), attempt)

    def write_flags(
        self,
        items: Sequence[BatchItem],
        note: ChangeNote | None = None,
        environments: tuple[dict[str, Any], int | None] | None = None,
    ) -> list[WriteResult]:
        """Create, change and delete several flags in **one** ``multi()``: all or nothing.
        ``environments`` (a validated document and the version its editor started from)
        replaces the environments document in the same transaction; its result comes last.

        Each item says what its editor started from (``expected_version``: None creates);
        if any flag is not there any more, nothing is written and :class:`FlagConflict`
        names every flag that moved. Items that would change nothing are left out (their
        result says ``changed=False``); when nothing is left, nothing is written. One change
        record covers the batch. The whole transaction must fit in one ZooKeeper write
        (``MAX_WRITE_BYTES``): about 2,000 small flags; more is :class:`FlagTooLarge`.
        """
        names = [item.name for item in items]
        if len(set(names)) != len(names):
            raise FlagWriteError("A flag appears twice in one batch")
        for item in items:
            validate_name(item.name)
            if item.rule is not None and item.rule.name != item.name:
                raise FlagWriteError(f"Item {item.name!r} carries the rule of {item.rule.name!r}")
            if item.rule is None and item.expected_version is None:
                raise FlagWriteError(f"Deleting {item.name!r} needs the version it is at")

        def attempt() -> list[WriteResult]:
            current = {item.name: self.reader.flag(item.name) for item in items}
            moved = []
            for item in items:
                try:
                    self._check_expected(item.name, item.expected_version, current[item.name])
                except FlagConflict as exc:
                    moved.append((item.name, exc))
            env_current = self.reader.environments() if environments is not None else None
            if environments is not None and env_current is not None:
                if env_current.version != environments[1]:
                    moved.append(
                        (
                            ENVIRONMENTS,
                            FlagConflict(
                                "The environments were changed by someone else (ZooKeeper is "
                                f"at version {env_current.version}, you started from "
                                f"{environments[1]}); nothing was saved.",
                                current=env_current.document,
                                current_version=env_current.version,
                            ),
                        )
                    )
            if moved:
                if len(moved) == 1:
                    raise moved[0][1]
                raise FlagConflict(
                    f"{len(moved)} flags moved since they were read ("
                    + ", ".join(name for name, _exc in moved)
                    + "); nothing was saved.",
                    current=None,
                    current_version=None,
                )
            view = self._view_for_write()
            tx = self.client.transaction()
            results: list[WriteResult] = []
            written: list[tuple[str, dict[str, Any] | None, int | None]] = []
            sizes: list[int] = []
            replaced: dict[str, Any] = {}
            for item in items:
                stored = current[item.name]
                before = stored.document()
                if item.rule is None:
                    replaced[item.name] = view.flags.pop(item.name, None)
                    tx.delete(self.paths.flag(item.name), version=item.expected_version)
                    written.append((item.name, None, None))
                    results.append(
                        WriteResult(item.name, None, before, None, True, None, "deleted")
                    )
                    continue
                doc = item.rule.to_document()
                entry = {**doc, "version": stored.version}
                if before == doc and view.flags.get(item.name) == entry and not view.rebuilt:
                    results.append(
                        WriteResult(item.name, stored.version, doc, doc, False, None, "changed")
                    )
                    continue
                data = encode_document(doc)
                sizes.append(len(data))
                if item.expected_version is None:
                    tx.create(self.paths.flag(item.name), data, acl=self.acl)
                    version, action = 0, "created"
                else:
                    tx.set_data(self.paths.flag(item.name), data, version=item.expected_version)
                    version, action = item.expected_version + 1, "changed"
                replaced[item.name] = view.flags.get(item.name)
                view.flags[item.name] = {**doc, "version": version}
                written.append((item.name, doc, version))
                results.append(WriteResult(item.name, version, before, doc, True, None, action))
            if environments is not None and env_current is not None:
                env_doc, env_expected = environments
                unchanged = env_current.document == env_doc and view.environments == env_doc
                if env_current.error is None and unchanged and not view.rebuilt:
                    results.append(
                        WriteResult(
                            ENVIRONMENTS,
                            env_current.version,
                            env_doc,
                            env_doc,
                            False,
                            None,
                            "changed",
                        )
                    )
                else:
                    data = encode_document(env_doc)
                    sizes.append(len(data))
                    if env_expected is None:
                        tx.create(self.paths.environments, data, acl=self.acl)
                        version, action = 0, "created"
                    else:
                        tx.set_data(self.paths.environments, data, version=env_expected)
                        version, action = env_expected + 1, "changed"
                    view.environments = env_doc
                    written.append((ENVIRONMENTS, env_doc, version))
                    results.append(
                        WriteResult(
                            ENVIRONMENTS, version, env_current.document, env_doc, True, None, action
                        )
                    )
            if not written:
                return results
            if self.check is not None and replaced:
                self.check(view.flags, replaced)
            record = (
                note.record_batch([r for r in results if r.changed]) if note is not None else None
            )

            def read_back() -> bool:
                for name, doc, version in written:
                    if name == ENVIRONMENTS:
                        stored = self.reader.environments()
                        if (stored.document, stored.version) != (doc, version):
                            return False
                    elif not self._applied(name, doc, version):
                        return False
                return True

            record_path = self._commit(
                tx,
                view,
                f"{len(written)} flags",
                b"",
                record,
                read_back=read_back,
                nodes=len(written),
                total_node_bytes=sum(sizes),
            )
            return [
                replace(result, record_path=record_path) if result.changed else result
                for result in results
            ]

        return self._retrying(f"{len(items)} flags", attempt)

    def create_flag_node(self, rule: FlagRule, note: ChangeNote | None = None) -> WriteResult:
        """Create a flag znode (with its change record) *without* the snapshot: for a
        restore of many flags, followed by one :meth:`rebuild_snapshot`. Raises
        FlagConflict if the flag exists."""
        name = rule.name
        doc = rule.to_document()
        data = encode_document(doc)

        def attempt() -> WriteResult:
            self._check_size(None, data, name)
            tx = self.client.transaction()
            tx.create(self.paths.flag(name), data, acl=self.acl)
            record = note.record(name, "created", 0, None, doc) if note else None
            if record is not None:
                tx.create(f"{self.paths.changes}/c-", record, acl=self.acl, sequence=True)
            results = self.requests.result(tx.commit_async())
            if isinstance(results[0], NodeExistsError):
                self._check_expected(name, None, self.reader.flag(name))
            for result in results:
                if isinstance(result, NoAuthError):
                    raise PermissionDenied(
                        "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
                    )
                if isinstance(result, Exception):
                    raise FlagWriteError(f"ZooKeeper refused the write: {result!r}")
            path = results[1] if record is not None else None
            return WriteResult(name, 0, None, doc, True, path, "created")

        return self._retrying(repr(name), attempt)

    def delete_flag(
        self, name: str, expected_version: int, note: ChangeNote | None = None
    ) -> WriteResult:
        validate_name(name)
        path = self.paths.flag(name)

        def attempt() -> WriteResult:
            current = self.reader.flag(name)
            self._check_expected(name, expected_version, current)
            view = self._view_for_write()
            replaced = view.flags.pop(name, None)
            if self.check is not None:
                self.check(view.flags, {name: replaced})
            tx = self.client.transaction()
            tx.delete(path, version=expected_version)
            record = note.record(name, "deleted", None, current.document(), None) if note else None
            record_path = self._commit(
                tx, view, name, b"", record, read_back=lambda: self._applied(name, None, None)
            )
            return WriteResult(name, None, current.document(), None, True, record_path, "deleted")

        return self._retrying(repr(name), attempt)

    def write_environments(
        self, doc: dict[str, Any], expected_version: int | None, note: ChangeNote | None = None
    ) -> WriteResult:
        """Replace the environments document (validated by the caller) from the version
        the editor read (None: there is none yet)."""
        data = encode_document(doc)
        path = self.paths.environments
        new_version = 0 if expected_version is None else expected_version + 1

        def attempt() -> WriteResult:
            current = self.reader.environments()
            if current.version != expected_version:
                raise FlagConflict(
                    "The environments were changed by someone else (ZooKeeper is at version "
                    f"{current.version}, you started from {expected_version}); nothing was "
                    "saved.",
                    current=current.document,
                    current_version=current.version,
                )
            view = self._view_for_write()
            unchanged = current.document == doc and view.environments == doc
            if current.error is None and unchanged and not view.rebuilt:
                return WriteResult(
                    ENVIRONMENTS, current.version, doc, doc, changed=False, action="changed"
                )
            view.environments = doc
            tx = self.client.transaction()
            if expected_version is None:
                tx.create(path, data, acl=self.acl)
            else:
                tx.set_data(path, data, version=expected_version)

            def read_back() -> bool:
                stored = self.reader.environments()
                return stored.version == new_version and stored.document == doc

            action = "created" if expected_version is None else "changed"
            record = (
                note.record(ENVIRONMENTS, action, new_version, current.document, doc)
                if note
                else None
            )
            record_path = self._commit(tx, view, ENVIRONMENTS, data, record, read_back=read_back)
            return WriteResult(
                ENVIRONMENTS, new_version, current.document, doc, True, record_path, action
            )

        return self._retrying("the environments", attempt)

    def rebuild_snapshot(self) -> dict[str, str]:
        """Rewrite the snapshot from the flag znodes and the environments znode (repairs
        drift). Returns the invalid znodes; each keeps its previous snapshot entry."""
        return self._rebuild(None, always=True).invalid

    def heal_snapshot(self, note: ChangeNote) -> Rebuilt:
        """Rebuild the snapshot from the znodes when they hold what it does not (a znode
        created, changed or deleted by another client), with a change record of every
        entry that changed (``note``, one batch record) in the same ``multi()``. Nothing
        is written when the snapshot already says what the znodes hold. A missing or
        unreadable snapshot is rebuilt without a record (there is nothing to compare)."""
        return self._rebuild(note, always=False)

    def _rebuild(self, note: ChangeNote | None, *, always: bool) -> Rebuilt:
        def attempt() -> Rebuilt:
            # The snapshot first: a write that lands after this read moves its version, so
            # the versioned write below fails and the attempt starts again from fresh reads
            # (flag znodes read before a write never go out with a snapshot read after it).
            corrupt = False
            old: StoredSnapshot | None = None
            try:
                old = self.reader.snapshot()
                old_flags, old_environments, version = old.flags, old.environments, old.version
            except CorruptSnapshot:
                corrupt = True
                old_flags, old_environments = {}, {}
                version = self.reader.snapshot_version()
            entries, errors = self.reader.flag_entries()
            for name in errors:
                if name in old_flags:
                    entries[name] = old_flags[name]
            environments = self.reader.environments()
            if environments.error is not None:
                errors["(environments)"] = environments.error
                env_doc = old_environments
            else:
                env_doc = environments.document
            baseline = version is not None and not corrupt
            changes = (
                _differences(old_flags, entries, old_environments, env_doc, environments.version)
                if baseline
                else []
            )
            if not always:
                if baseline and old_flags and not entries and not errors:
                    raise FlagWriteError(
                        f"ZooKeeper holds no flag znode under {self.paths.flags} while the "
                        f"snapshot has {len(old_flags)} flag(s): not rebuilt (every process "
                        "would turn them all off). 'manage.py zkflags restore' writes them "
                        "back from the admin's rows."
                    )
                nothing_there = not entries and environments.version is None
                if (baseline and not changes) or (version is None and nothing_there):
                    return Rebuilt(errors, [], written=False)
            if baseline and old is not None and old.epoch is not None:
                # A sharded view read whole and consistent: write the shards that differ.
                view = self._view_of(old)
                for change in changes:
                    if change.name != ENVIRONMENTS:
                        if change.name in entries:
                            view.flags[change.name] = entries[change.name]
                        else:
                            view.flags.pop(change.name, None)
                view.environments = env_doc
            else:  # missing, unreadable, or format 1: written whole, in a new epoch
                view = _View(_Entries(entries), env_doc, version, rebuilt=True)
            record = note.record_batch(changes) if note is not None and changes else None
            planned = self._plan(view)
            self._check_size(planned, b"", "the rebuilt snapshot", extra=len(record or b""))
            # A view larger than one multi() (about 80,000 flags and more) is written in
            # steps: shards first, each versioned, then the head, which makes them current.
            # Until the head moves nobody reads those shards.
            final = self._write_shards_in_steps(planned, len(record or b""))
            tx = self.client.transaction()
            self._add_view_ops(tx, view, replace(planned, shards=final))
            if record is not None:
                tx.create(f"{self.paths.changes}/c-", record, acl=self.acl, sequence=True)
            results = self.requests.result(tx.commit_async())
            if any(isinstance(result, NoAuthError) for result in results):
                raise PermissionDenied(
                    "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
                )
            failed = [result for result in results if isinstance(result, Exception)]
            if failed:
                # The snapshot moved (or appeared), or changes/ vanished: go again.
                if all(
                    isinstance(r, (BadVersionError, NodeExistsError, NoNodeError, RolledBackError))
                    for r in failed
                ):
                    raise ForceRetryError()
                raise FlagWriteError(f"ZooKeeper refused the write: {failed[0]!r}")
            record_path = results[len(final) + 1] if record is not None else None
            changes = [replace(change, record_path=record_path) for change in changes]
            return Rebuilt(errors, changes, written=True, record_path=record_path)

        return self._retrying("the snapshot", attempt)

    def _write_shards_in_steps(self, planned: _ViewWrite, extra: int) -> list[_ShardWrite]:
        """Commit shard writes in multis of at most ``max_bytes`` until the rest fits in one
        with the head (and ``extra`` bytes); return that rest."""
        budget = self.max_bytes - len(planned.head) - extra - WRITE_MARGIN
        pending = list(planned.shards)
        while sum(len(write.data or b"") for write in pending) > budget:
            step: list[_ShardWrite] = []
            size = 0
            while pending and size + len(pending[0].data or b"") <= budget:
                size += len(pending[0].data or b"")
                step.append(pending.pop(0))
            if not step:  # one shard alone over the budget: _check_size refused it already
                step.append(pending.pop(0))
            tx = self.client.transaction()
            for write in step:
                self._add_shard_op(tx, write)
            results = self.requests.result(tx.commit_async())
            failed = [result for result in results if isinstance(result, Exception)]
            if any(isinstance(result, NoAuthError) for result in failed):
                raise PermissionDenied(
                    "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
                )
            if failed:
                raise ForceRetryError()  # a shard moved: read everything again
        return pending

    def ensure_layout(self) -> None:
        """Create the root, ``flags/``, ``changes/`` and ``shards/`` if they are missing (a first write,
        or a root deleted since). One ``exists`` when they are there."""
        if self.requests.result(self.client.exists_async(self.paths.shards)) is not None:
            return
        for directory in (self.paths.flags, self.paths.changes, self.paths.shards):
            path = ""
            for part in directory.strip("/").split("/"):
                path += "/" + part
                try:
                    self.requests.result(self.client.create_async(path, b"", acl=self.acl))
                except NodeExistsError:
                    pass

    # -- one attempt's parts ---------------------------------------------------------------

    def _view_for_write(self) -> _View:
        """The snapshot to rewrite. A missing or unreadable one is rebuilt from the source
        znodes: a write never publishes a snapshot that lacks the other flags."""
        try:
            stored = self.reader.snapshot()
            if stored.version is not None:
                return self._view_of(stored)
            version = None
        except CorruptSnapshot:
            log.error("Snapshot znode is corrupt; rebuilding it from the source znodes")
            version = self.reader.snapshot_version()
        entries, invalid = self.reader.flag_entries()
        environments = self.reader.environments()
        empty = not entries and not invalid and environments.version is None
        if empty and version is None and self.check_empty_tree is not None:
            self.check_empty_tree()
        return _View(_Entries(entries), environments.document, version, rebuilt=True)

    @staticmethod
    def _view_of(stored: StoredSnapshot) -> _View:
        """The view to rewrite from a snapshot read whole (a format-1 one is written whole,
        as a sharded view in a new epoch)."""
        if stored.epoch is None:
            return _View(_Entries(stored.flags), dict(stored.environments), stored.version)
        return _View(
            _Entries(stored.flags),
            dict(stored.environments),
            stored.version,
            epoch=stored.epoch,
            shards=stored.shards,
            shard_versions=dict(stored.shard_versions),
            shard_names=stored.shard_names,
        )

    def _plan(self, view: _View) -> _ViewWrite:
        """The shards to write for ``view`` (those holding a name the attempt touched, or
        all of them when the view is written whole) and its new head."""
        count = view.shards
        groups: dict[int, dict[str, Any]] = {}
        if view.shard_versions is None:
            for name, entry in view.flags.items():
                groups.setdefault(shard_of(name, count), {})[name] = entry
            existing = self.reader.shard_versions(list(range(count)))
            touched = set(groups) | set(existing)
            listed: dict[int, int] = {}
            epoch = new_epoch()
        else:
            by_shard: dict[int, set[str]] = {}
            for name in view.flags.touched:
                by_shard.setdefault(shard_of(name, count), set()).add(name)
            existing = dict(view.shard_versions)
            unknown = [k for k in by_shard if k not in existing]
            if unknown:  # shards the head does not list (left over, or none yet)
                existing.update(self.reader.shard_versions(unknown))
            for k, names in by_shard.items():
                members = names | view.shard_names.get(k, frozenset())
                groups[k] = {name: view.flags[name] for name in members if name in view.flags}
            touched = set(by_shard)
            listed = dict(view.shard_versions)
            epoch = view.epoch or new_epoch()
        writes = []
        whole = view.shard_versions is None
        for k in sorted(touched):
            entries = groups.get(k)
            if entries or (k in existing and not whole):
                # A shard that loses its last flag is kept (empty) until the next epoch: a
                # shard's version only grows within an epoch, so that a process or a cache
                # never takes a new incarnation of it for one it has.
                data, inflated = encode_shard(k, entries or {})
                writes.append(_ShardWrite(k, data, existing.get(k), inflated))
                listed[k] = existing[k] + 1 if k in existing else 0
            elif k in existing:  # a view written whole, in a new epoch: no empty shards
                writes.append(_ShardWrite(k, None, existing[k]))
        head = encode_head(epoch, count, listed, view.environments, len(view.flags))
        return _ViewWrite(writes, head)

    def _add_shard_op(self, tx: Any, write: _ShardWrite) -> None:
        path = self.paths.shard(write.index)
        if write.data is None:
            tx.delete(path, version=write.version)
        elif write.version is None:
            tx.create(path, write.data, acl=self.acl)
        else:
            tx.set_data(path, write.data, version=write.version)

    def _add_view_ops(self, tx: Any, view: _View, planned: _ViewWrite) -> None:
        """The shard writes, then the head: from the version read (create when none)."""
        for write in planned.shards:
            self._add_shard_op(tx, write)
        if view.version is None:
            tx.create(self.paths.snapshot, planned.head, acl=self.acl)
        else:
            tx.set_data(self.paths.snapshot, planned.head, version=view.version)

    def _check_size(
        self, planned: _ViewWrite | None, node_data: bytes, what: str, extra: int = 0
    ) -> None:
        """Refuse what one ZooKeeper write cannot carry, or what readers would refuse (a
        shard larger than ``max_snapshot_bytes`` as JSON)."""
        # An oversize packet is not an error in ZooKeeper: the server drops the connection.
        label = what if " " in what else repr(what)  # a flag name, or "the rebuilt snapshot"
        if len(node_data) > self.max_bytes:
            raise FlagTooLarge(
                f"The document of {label} is {len(node_data)} bytes as JSON, over the "
                f"{self.max_bytes}-byte limit of one ZooKeeper write; nothing was saved. "
                "Keep large values elsewhere and put their address in the flag."
            )
        if planned is None:
            return
        for write in planned.shards:
            if write.inflated > self.max_snapshot_bytes:
                raise FlagTooLarge(
                    f"Saving {what} would make shard {write.index} of the snapshot "
                    f"{write.inflated} bytes as JSON, over the {self.max_snapshot_bytes} bytes "
                    "every process accepts (ZKFLAGS['MAX_SNAPSHOT_BYTES']); nothing was saved."
                )
            if len(write.data or b"") + len(planned.head) + extra > self.max_bytes:
                raise FlagTooLarge(
                    f"Saving {label} would make shard {write.index} of the snapshot "
                    f"{len(write.data or b'')} bytes (compressed), over the {self.max_bytes}-byte "
                    "limit of one ZooKeeper write; nothing was saved. Remove unused flags or "
                    "long user lists (use groups)."
                )
        rebuilding = what == "the rebuilt snapshot"  # may be written in steps
        if not rebuilding and planned.size + len(node_data) + extra > self.max_bytes:
            raise FlagTooLarge(
                f"Saving {label} would make one ZooKeeper write of "
                f"{planned.size + len(node_data) + extra} bytes (the snapshot's shards: "
                f"{planned.size}), over the {self.max_bytes}-byte limit; nothing was saved. "
                "Save fewer flags at once, or run 'manage.py zkflags repair' first (a "
                "snapshot written in the old single-znode format is converted whole)."
            )

    def _commit(
        self,
        tx: Any,
        view: _View,
        what: str,
        node_data: bytes,
        record: bytes | None,
        *,
        read_back: Callable[[], bool],
        nodes: int = 1,
        total_node_bytes: int | None = None,
        also: Sequence[AlsoOp] = (),
    ) -> str | None:
        """Add the snapshot rewrite (and the change record) to ``tx``, whose first
        ``nodes`` operations change flag or environments znodes, and commit it.
        Returns the path of the change record created (None without one, or when the
        outcome had to be learnt by reading back).

        Raises ForceRetryError when something moved since the attempt read it, and
        resolves a commit cut off by a lost connection by reading back.
        """
        planned = self._plan(view)
        extra = len(record or b"") + (total_node_bytes or len(node_data)) - len(node_data)
        self._check_size(planned, node_data, what, extra=extra)
        self._add_view_ops(tx, view, planned)
        if record is not None:
            tx.create(f"{self.paths.changes}/c-", record, acl=self.acl, sequence=True)
        pending = tx.commit_async()
        try:
            results = self.requests.result(pending, raw=True)
        except UNAVAILABLE_ERRORS as exc:
            if withdraw_queued_request(self.client, pending):
                raise _Outcome(
                    f"ZooKeeper did not answer in time ({self.requests.url.hosts}); "
                    "nothing was saved."
                ) from exc
            self._resolve_unknown_outcome(what, read_back, exc)
            return None
        also_results = results[nodes : nodes + len(also)]
        del results[nodes : nodes + len(also)]
        shard_count = len(planned.shards)
        node_results = results[:nodes]
        shard_results = results[nodes : nodes + shard_count]
        snapshot_result = results[nodes + shard_count]
        record_at = nodes + shard_count + 1
        if not any(isinstance(result, Exception) for result in (*results, *also_results)):
            return results[record_at] if record is not None else None  # type: ignore[no-any-return]
        for op, result in zip(also, also_results, strict=True):
            if isinstance(result, (BadVersionError, NoNodeError, NodeExistsError)):
                if not any(
                    isinstance(r, (BadVersionError, NodeExistsError, NoNodeError))
                    for r in node_results
                ):
                    raise AlsoOpFailed(op.path, result)
        if record is not None and isinstance(results[record_at], NoNodeError):
            raise ForceRetryError()  # changes/ vanished (a root deleted meanwhile)
        if any(isinstance(result, NoAuthError) for result in results):
            raise PermissionDenied(
                "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
            )
        if any(
            isinstance(result, (BadVersionError, NodeExistsError, NoNodeError))
            for result in node_results
        ):
            # A changed znode moved: the next attempt re-reads it and reports the conflict.
            raise ForceRetryError()
        moved = (
            BadVersionError,
            NodeExistsError,
            NoNodeError,
            RolledBackError,
            RuntimeInconsistency,
        )
        if all(isinstance(result, moved) for result in (*shard_results, snapshot_result)):
            raise ForceRetryError()  # only the snapshot moved: go again from fresh reads
        refused = next(r for r in (*shard_results, snapshot_result) if not isinstance(r, moved))
        raise FlagWriteError(f"ZooKeeper refused the write: {refused!r}")

    def _resolve_unknown_outcome(
        self, what: str, read_back: Callable[[], bool], exc: BaseException
    ) -> None:
        """The connection broke during the commit: "the client will not know if the update
        has applied", so read back (after a sync) instead of retrying blindly."""
        log.warning("Connection lost while saving %s; reading back to learn the outcome", what)
        try:
            self.requests.wait_connected()
            self.requests.result(self.client.sync_async(self.paths.root))
            applied = read_back()
        except READ_BACK_ERRORS:
            raise _Outcome(
                f"ZooKeeper connection lost while saving {what}; the outcome is unknown "
                "until it returns. Reload before trying again."
            ) from exc
        if not applied:
            raise _Outcome(
                f"ZooKeeper connection lost while saving {what}; the change was not applied."
            ) from exc

    def _applied(self, name: str, doc: dict[str, Any] | None, version: int | None) -> bool:
        stored = self.reader.flag(name)
        return stored.version == version and stored.document() == doc

    def _recorded(self, note_id: str) -> bool:
        """Is the change record of ``note_id`` there? With an :class:`AlsoOp` the flag's
        document alone cannot say whose ``multi()`` applied: another steward may have
        written the same change from the same version (and consumed the same schedule)."""
        return any(
            change.record is not None and change.record.get("id") == note_id
            for change in self.reader.change_records()
        )

    def _check_expected(self, name: str, expected: int | None, current: StoredFlag) -> None:
        if expected is None and current.exists:
            raise FlagConflict(
                f"Flag {name!r} already exists in ZooKeeper (version {current.version}); "
                "nothing was overwritten.",
                current=current.document(),
                current_version=current.version,
            )
        if expected is not None and current.version != expected:
            what = (
                "was deleted" if current.version is None else f"is now at version {current.version}"
            )
            raise FlagConflict(
                f"Flag {name!r} was changed by someone else while you were editing it: you "
                f"started from version {expected}, ZooKeeper {what}. Your change was not "
                "saved; review the current values and try again.",
                current=current.document(),
                current_version=current.version,
            )

    # -- running attempts ------------------------------------------------------------------

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (after making sure the layout exists) until nothing moved under
        it, as kazoo's recipes do."""

        def run() -> T:
            self.requests.wait_connected()
            self.ensure_layout()
            try:
                return attempt()
            except ForceRetryError:
                forget_decoded_shards()  # a shard kept may be one a hand edit replaced
                raise

        retry = KazooRetry(
            max_tries=self.RETRIES, delay=0.005, backoff=1.5, max_delay=0.2, ignore_expire=False
        )
        try:
            return retry(run)  # type: ignore[no-any-return]
        except RetryFailedError:
            raise ZooKeeperUnavailable(
                f"Could not save {what}: it kept changing ({self.RETRIES} tries); "
                "nothing was saved."
            ) from None
        except _Outcome:
            raise
        except ZooKeeperUnavailable as exc:  # before the commit: nothing was sent
            raise ZooKeeperUnavailable(f"{exc}; nothing was saved.") from exc
