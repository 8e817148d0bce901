"""The one write path. Every change of a flag or of the environments document goes through
here: the admin's forms and list actions, ORM saves, deletes and many-to-many edits
(through :mod:`django_zkflags.receivers`), the management command and repairs. In this
order:

1. **validate once**: the change is a :class:`~django_zkflags.rules.FlagRule` (or a
   validated environments document) before anything leaves the process;
2. **one ZooKeeper multi()**: the changed znode, from the version the editor started from,
   with the snapshot (:mod:`django_zkflags.writer`). A change that changes nothing is not
   written, mirrored or audited;
3. **the row mirror**: the admin's ``Flag`` row and its many-to-many rows are made to
   mirror what ZooKeeper now holds, without sending model signals;
4. **the audit row** (``FlagChange``).

Steps 3 and 4 share one database transaction, after the ZooKeeper commit. A refusal at
step 1 or 2 changes nothing anywhere. ZooKeeper is the truth: should the database fail
after step 2, the change is live and ``manage.py zkflags check`` reports the row that does
not mirror it (``repair`` mirrors it). The one exception to step 3 is an ORM ``save()``:
Django writes that row itself, right after :func:`push_row` returned.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import router, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from . import runtime
from .diff import member_ids
from .exceptions import FlagConflict, FlagRequired, FlagWriteError
from .models import Flag, FlagChange
from .reader import ChangeRecord, StoredEnvironments, StoredFlag, StoredSnapshot
from .rules import (
    FlagRule,
    InvalidFlag,
    PrerequisiteError,
    prerequisite_problems,
    requires_of,
    strongly_connected,
    validate_environments_document,
    validate_name,
)
from .snapshot import CorruptSnapshot
from .writer import BATCH, ENVIRONMENTS, AlsoOp, BatchItem, ChangeNote, WriteResult

log = logging.getLogger("django_zkflags")

#: Who made a change: a Django user, a name (a command's OS user), or None (the system).
Actor = Any

_acting_as: ContextVar[Actor] = ContextVar("zkflags_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Audit ORM changes made inside the block as ``actor``'s::

    with acting_as(request.user):
        flag.save()
        flag.users.add(user)
    """
    token = _acting_as.set(actor)
    try:
        yield
    finally:
        _acting_as.reset(token)


# -- reads (editors start from what ZooKeeper holds) ----------------------------------------


def read_flag(name: str) -> StoredFlag:
    return runtime.get_runtime().reader().flag(name)


def read_environments() -> StoredEnvironments:
    return runtime.get_runtime().reader().environments()


def read_snapshot() -> StoredSnapshot:
    """Raises CorruptSnapshot when the snapshot znode is unreadable."""
    return runtime.get_runtime().reader().snapshot()


def current_actor() -> Actor:
    """The actor set by :func:`acting_as` around ORM changes (None outside it)."""
    return _acting_as.get()


def command_actor() -> str:
    """Who runs a management command: the operating system's user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


# -- flags ------------------------------------------------------------------------------------


def save_flag(
    rule: FlagRule,
    *,
    expected_version: int | None,
    actor: Actor = None,
    source: str,
    also: Sequence[AlsoOp] = (),
    scheduled_for: datetime | None = None,
) -> FlagChange | None:
    """Create (``expected_version=None``) or change a flag from the version the editor
    started from. Returns the audit row, or None when nothing changed. A new override for
    an environment the environments document does not define is refused
    (:func:`refuse_undefined_environments`).

    ``also``: more operations in the same ``multi()`` (:class:`~.writer.AlsoOp`; the
    steward consumes a schedule znode there); with them the change is written and audited
    even if it changes nothing, and :class:`~.writer.AlsoOpFailed` means nothing was.
    ``scheduled_for``: when a scheduled change was due (its audit row says so)."""
    refuse_undefined_environments(rule)
    settle_changes()
    note = _note(actor, source, scheduled_for=scheduled_for)
    result = _writer().write_flag(rule, expected_version, note, also)
    if not result.changed:
        return None
    with _atomic():
        _mirror(rule, result.version)
        return _record(result, note, actor)


def delete_flag(
    name: str, *, expected_version: int | None, actor: Actor = None, source: str
) -> FlagChange | None:
    """Delete a flag from the version the editor started from, and its row. A row that
    mirrors no znode (``expected_version`` None) is deleted only if ZooKeeper has no such
    flag either."""
    validate_name(name)
    if expected_version is None:
        stored = read_flag(name)
        if stored.exists:
            raise FlagWriteError(
                f"Flag {name!r} exists in ZooKeeper but this row does not know its version; "
                "reload it before deleting."
            )
        with _atomic():
            _delete_row(name)
        return None
    settle_changes()
    note = _note(actor, source)
    result = _writer().delete_flag(name, expected_version, note)
    with _atomic():
        _delete_row(name)
        return _record(result, note, actor)


def update_flag(
    name: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    actor: Actor = None,
    source: str,
) -> FlagChange | None:
    """Change one flag from what ZooKeeper holds now: ``change`` gets its document (a
    missing or invalid znode starts from the admin row, else from an empty rule) and
    returns the new one, which is validated and saved from the version read."""
    stored = read_flag(name)
    doc = stored.document()
    if doc is None:
        row = Flag.objects.filter(name=name).first()
        doc = (row.to_rule() if row is not None else FlagRule(name)).to_document()
    rule = FlagRule.from_document(change(dict(doc)), name=name)
    return save_flag(rule, expected_version=stored.version, actor=actor, source=source)


def refuse_undefined_environments(rule: FlagRule) -> None:
    """Raise InvalidFlag if ``rule`` overrides an environment that the environments document
    does not define, and that the flag did not override already (as ZooKeeper holds it now,
    or as its row has it when its znode is invalid): a typo such as "stagin" would otherwise
    be saved and never apply anywhere.

    An override the flag already had is let through, so that deleting an environment never
    blocks unrelated edits of the flags that still override it (``check`` reports those).
    Without any environments document, environments are named only by each process's
    settings and nothing is refused. Reads ZooKeeper only when ``rule`` has overrides."""
    if not rule.environments:
        return
    stored_environments = read_environments()
    if stored_environments.version is None:
        return
    defined = set(stored_environments.document["parents"])
    new = set(rule.environments) - defined
    if not new:
        return
    stored = read_flag(rule.name)
    if stored.rule is not None:
        new -= set(stored.rule.environments)
    elif stored.error is not None:
        row = Flag.objects.filter(name=rule.name).first()
        if row is not None and isinstance(row.environments, dict):
            new -= set(row.environments)
    if not new:
        return
    names = ", ".join(repr(env) for env in sorted(new))
    if stored_environments.error is not None:
        raise InvalidFlag(
            f"Cannot check the new override(s) for {names}: the environments document in "
            f"ZooKeeper is invalid ({stored_environments.error}). Replace it first (the "
            "admin's Environments page, or 'manage.py zkflags env --replace FILE')."
        )
    raise InvalidFlag(
        f"Environment(s) {names} not defined (defined: {', '.join(sorted(defined)) or 'none'}). "
        "A typo? Define it first ('manage.py zkflags env NAME', or the admin's "
        "Environments page)."
    )


# -- prerequisites (checked by the writer, against the view it commits with) ---------------


def check_prerequisites(flags: Mapping[str, Any], before: Mapping[str, Any]) -> None:
    """Refuse a change of flags that would make a flag require a flag that does not exist,
    close a cycle of prerequisites (of any length), or delete a flag that others require.

    ``flags`` are every snapshot entry as the change would leave them, ``before`` the
    entries it replaces (None: created), by name. Every change of flags through this module
    runs it: the writer calls it in each attempt, against the snapshot it is about to
    replace (:data:`~django_zkflags.writer.ViewCheck`), so two editors saving at once cannot
    make a cycle between them. Only requirements the change adds are looked at: a flag
    whose prerequisites a hand edit broke can still be edited (turned off), and ``check``
    reports it. Raises :class:`~django_zkflags.rules.PrerequisiteError` (an InvalidFlag)
    or :class:`~django_zkflags.exceptions.FlagRequired`; nothing is written then."""
    new_edges: list[tuple[str, str]] = []
    deleted: set[str] = set()
    for name, old in before.items():
        entry = flags.get(name)
        if entry is None:
            deleted.add(name)
            continue
        had = requires_of(old)
        new_edges.extend((name, other) for other in requires_of(entry) if other not in had)
    problems = prerequisite_problems(flags, new_edges)
    if problems:
        raise PrerequisiteError("; ".join(problems) + ". Nothing was saved.")
    if not deleted:
        return
    required: dict[str, list[str]] = {}
    for name, entry in flags.items():
        requires = entry.get("requires") if isinstance(entry, dict) else None
        if requires and isinstance(requires, list):
            for other in deleted.intersection(requires):
                required.setdefault(other, []).append(name)
    if required:
        raise FlagRequired(
            "; ".join(
                f"Flag {other!r} is required by {', '.join(repr(n) for n in sorted(names))}"
                for other, names in sorted(required.items())
            )
            + ": take it out of their prerequisites first. Nothing was deleted."
        )


def _prerequisite_drift(rules: Mapping[str, FlagRule], names: set[str]) -> list[tuple[str, str]]:
    """Prerequisites written by other means that no save would accept: a flag requiring a
    flag ZooKeeper does not hold (``names`` are the flag znodes), or a cycle."""
    graph = {name: rule.requires for name, rule in rules.items() if rule.requires}
    problems = []
    for name, requires in sorted(graph.items()):
        missing = [other for other in requires if other not in names]
        if missing:
            problems.append(
                (
                    name,
                    f"requires {', '.join(missing)}, which ZooKeeper does not hold: off "
                    "everywhere until they exist or are taken out of its prerequisites",
                )
            )
    for component in strongly_connected(graph):
        if len(component) > 1:
            for name in sorted(component):
                others = ", ".join(sorted(set(component) - {name}))
                problems.append(
                    (
                        name,
                        f"is in a cycle of prerequisites with {others}: off everywhere until "
                        "one of them stops requiring the next",
                    )
                )
    return problems


def set_everyone(
    names: Iterable[str], everyone: bool | None, *, actor: Actor = None, source: str
) -> list[FlagChange]:
    """Switch flags on or off for everyone, or back to their rules (bulk admin actions)."""
    changes = (
        update_flag(name, lambda doc: {**doc, "everyone": everyone}, actor=actor, source=source)
        for name in names
    )
    return [change for change in changes if change is not None]


# -- rows changed through the ORM (signal receivers) -----------------------------------------


def push_row(row: Flag, *, source: str = "orm") -> FlagChange | None:
    """An ORM ``save()`` of ``row``: write the rule it describes from the version it
    mirrors (its many-to-many rows as the database has them). Sets ``row.zk_version``;
    Django writes the row itself afterwards."""
    row.check_not_renamed()
    rule = row.to_rule()
    refuse_undefined_environments(rule)
    settle_changes()
    actor = current_actor()
    note = _note(actor, source)
    result = _writer().write_flag(rule, row.zk_version, note)
    row.zk_version = result.version
    row.remember_name()
    if not result.changed:
        return None
    with _atomic():
        if row.pk is not None:
            Flag.objects.filter(pk=row.pk).update(zk_version=result.version)
        return _record(result, note, actor)


def push_links(flag_pks: Iterable[int], *, source: str = "orm m2m") -> None:
    """Many-to-many rows of these flags changed through the ORM: write each flag's rule
    as its row now describes it (nothing is written for a flag that did not change)."""
    for row in Flag.objects.filter(pk__in=list(flag_pks)):
        push_row(row, source=source)


def flags_listing(kind: str, pk: int) -> list[int]:
    """The pks of the rows of flags whose ZooKeeper rule lists user (``kind="users"``) or
    group (``"groups"``) ``pk``."""
    names = [name for name, entry in read_snapshot().flags.items() if pk in (entry.get(kind) or ())]
    return list(Flag.objects.filter(name__in=names).values_list("pk", flat=True))


def remove_member(kind: str, pk: int, *, source: str) -> list[FlagChange]:
    """A user (``kind="users"``) or group (``"groups"``) is being deleted: take it out of
    every flag that lists it, its environment overrides included. Only flags whose rows
    link it are read (the database knows them for free); ``check`` finds the others."""
    names = Flag.objects.filter(**{f"{kind}__pk": pk}).values_list("name", flat=True)

    def without(doc: dict[str, Any]) -> dict[str, Any]:
        return _without_member(doc, kind, pk)

    changes = (update_flag(name, without, source=source) for name in list(names))
    return [change for change in changes if change is not None]


def _without_member(doc: dict[str, Any], kind: str, pk: int) -> dict[str, Any]:
    doc = {**doc, kind: [i for i in doc.get(kind) or [] if i != pk]}
    environments = doc.get("environments")
    if environments:
        doc["environments"] = {
            env: (
                {**override, kind: [i for i in override[kind] or [] if i != pk]}
                if kind in override
                else override
            )
            for env, override in environments.items()
        }
    return doc


# -- environments ---------------------------------------------------------------------------


def save_environments(
    doc: Any, *, expected_version: int | None, actor: Actor = None, source: str
) -> FlagChange | None:
    """Replace the environments document (parents, pegged hosts) from the version the
    editor read. Returns the audit row, or None when nothing changed."""
    doc = validate_environments_document(doc)
    settle_changes()
    note = _note(actor, source)
    result = _writer().write_environments(doc, expected_version, note)
    if not result.changed:
        return None
    with _atomic():
        return _record(result, note, actor)


def update_environments(
    change: Callable[[dict[str, Any]], dict[str, Any]], *, actor: Actor = None, source: str
) -> FlagChange | None:
    stored = read_environments()
    if stored.error is not None:
        raise InvalidFlag(
            f"The environments document in ZooKeeper is invalid ({stored.error}); replace it "
            "whole (the admin's Environments page, or 'zkflags env --replace FILE')."
        )
    return save_environments(
        change(dict(stored.document)),
        expected_version=stored.version,
        actor=actor,
        source=source,
    )


# -- check and repair -----------------------------------------------------------------------


@dataclass
class Drift:
    """What ``check`` found: each problem with the flag it concerns."""

    problems: list[tuple[str, str]] = field(default_factory=list)  # (name, what)
    nodes: dict[str, FlagRule] = field(default_factory=dict)  # valid flag znodes
    versions: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # invalid flag znodes
    rows: dict[str, Flag] = field(default_factory=dict)
    #: flags listing users or groups the database no longer has: {name: {kind: ids}}
    gone_members: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def add(self, name: str, what: str) -> None:
        self.problems.append((name, what))

    @property
    def orphan_rows(self) -> list[str]:
        """Rows that mirror a znode ZooKeeper does not have."""
        return sorted(set(self.rows) - set(self.nodes) - set(self.invalid))

    @property
    def zookeeper_lost_data(self) -> bool:
        """No flag znode at all, while rows say ZooKeeper had some: a wiped ensemble, a
        deleted root, or ZKFLAGS_URL pointing at the wrong place - not drift."""
        return (
            not self.nodes
            and not self.invalid
            and any(row.zk_version is not None for row in self.rows.values())
        )


def check() -> Drift:
    """Compare the flag znodes, the snapshot and the admin's rows."""
    reader = runtime.get_runtime().reader()
    drift = Drift()
    entries, drift.invalid = reader.flag_entries()
    for name, entry in entries.items():
        drift.versions[name] = entry["version"]
        drift.nodes[name] = FlagRule.from_document(entry, name=name)
    for name, error in drift.invalid.items():
        drift.add(name, f"flag znode is invalid: {error}")
    try:
        snapshot = reader.snapshot()
        if snapshot.version is None and (entries or drift.invalid):
            drift.add("(snapshot)", "the snapshot znode is missing")
        for name in sorted(set(entries) | set(snapshot.flags)):
            if name not in drift.invalid and entries.get(name) != snapshot.flags.get(name):
                drift.add(name, "snapshot differs from the flag znode")
    except CorruptSnapshot as exc:
        drift.add("(snapshot)", str(exc))
    environments = reader.environments()
    if environments.error is not None:
        drift.add("(environments)", f"the environments document is invalid: {environments.error}")
    elif environments.version is not None:
        defined = set(environments.document["parents"])
        for name, node in sorted(drift.nodes.items()):
            undefined = sorted(set(node.environments) - defined)
            if undefined:
                drift.add(
                    name,
                    f"overrides environment(s) {', '.join(undefined)} that the environments "
                    "document does not define: define them ('zkflags env NAME') or remove "
                    "the overrides",
                )
    for name, what in _prerequisite_drift(drift.nodes, set(drift.nodes) | set(drift.invalid)):
        drift.add(name, what)
    for change in pending_changes():
        record = change.record or {}
        drift.add(
            str(record.get("name")),
            f"changed in ZooKeeper (version {record.get('version')}, by "
            f"{record.get('username') or '-'} from {record.get('source')!r} at "
            f"{record.get('at')}) but has no audit row: its writer stopped before committing "
            "it ('repair' records it)",
        )
    drift.rows = {f.name: f for f in Flag.objects.prefetch_related("users", "groups")}
    if drift.zookeeper_lost_data:
        drift.add(
            "(zookeeper)",
            f"ZooKeeper holds no flags under {reader.paths.root} but {len(drift.rows)} admin "
            "row(s) mirror flags it had: it lost its data, or ZKFLAGS_URL points elsewhere. "
            "'manage.py zkflags restore' writes the rows back.",
        )
        return drift
    drift.gone_members = _gone_members(drift.nodes)
    for name, gone in sorted(drift.gone_members.items()):
        for kind, ids in gone.items():
            drift.add(name, f"lists deleted {kind} {ids} ('repair' takes them out)")
    for name in sorted(set(drift.rows) | set(entries)):
        row, rule = drift.rows.get(name), drift.nodes.get(name)
        if name in drift.gone_members:
            continue  # the row cannot link what is gone: repaired with the ids above
        if row is None:
            drift.add(name, "in ZooKeeper but has no admin row")
        elif rule is None:
            if name not in drift.invalid:
                drift.add(name, "admin row but not in ZooKeeper")
        elif not row.mirrors(rule, drift.versions[name]):
            drift.add(
                name,
                f"admin row (v{row.zk_version}) differs from ZooKeeper (v{drift.versions[name]})",
            )
    return drift


def _members(rule: FlagRule, kind: str) -> set[int]:
    ids = set(getattr(rule, kind))
    for override in rule.environments.values():
        ids.update(override.get(kind) or ())
    return ids


def _gone_members(rules: dict[str, FlagRule]) -> dict[str, dict[str, list[int]]]:
    """Users and groups that flags list but the database does not have (deleted by a
    cascade or by SQL, which sends no signal to take them out)."""
    gone: dict[str, dict[str, list[int]]] = {}
    for kind, model in (("users", get_user_model()), ("groups", Group)):
        listed = {name: _members(rule, kind) for name, rule in rules.items()}
        wanted = set().union(*listed.values()) if listed else set()
        existing = set(model.objects.filter(pk__in=wanted).values_list("pk", flat=True))
        for name, ids in listed.items():
            if ids - existing:
                gone.setdefault(name, {})[kind] = sorted(ids - existing)
    return gone


@dataclass
class RepairReport:
    invalid: dict[str, str]  # flag znodes left as they were in the snapshot
    mirrored: list[str]  # rows made to mirror ZooKeeper
    deleted_rows: list[str]  # rows without a znode, deleted (only when asked)
    orphan_rows: list[str]  # rows without a znode, kept


def repair(*, delete_orphan_rows: bool = False) -> RepairReport:
    """Rebuild the snapshot from the flag znodes and make the rows mirror ZooKeeper, each
    change audited as "repaired". Rows whose znode is gone are kept unless
    ``delete_orphan_rows``; when ZooKeeper lost everything, nothing is done (use
    :func:`restore`)."""
    settle_changes()
    drift = check()
    if drift.zookeeper_lost_data:
        raise FlagWriteError(next(what for name, what in drift.problems if name == "(zookeeper)"))
    if drift.gone_members:
        for name, gone in sorted(drift.gone_members.items()):

            def without(doc: dict[str, Any], gone: dict[str, list[int]] = gone) -> dict[str, Any]:
                for kind, ids in gone.items():
                    for pk in ids:
                        doc = _without_member(doc, kind, pk)
                return doc

            update_flag(name, without, source="repair")
        drift = check()
    invalid = _writer().rebuild_snapshot()
    mirrored: list[str] = []
    deleted: list[str] = []
    with _atomic():
        for name, rule in sorted(drift.nodes.items()):
            row, version = drift.rows.get(name), drift.versions[name]
            if row is not None and row.mirrors(rule, version):
                continue
            before = _row_document(row)
            _mirror(rule, version)
            result = WriteResult(name, version, before, rule.to_document())
            _record(result, _note(None, "repair", "repaired"), None)
            mirrored.append(name)
        for name in drift.orphan_rows if delete_orphan_rows else ():
            before = _row_document(drift.rows[name])
            _delete_row(name)
            result = WriteResult(name, None, before, None)
            _record(result, _note(None, "repair", "repaired"), None)
            deleted.append(name)
    orphans = [] if delete_orphan_rows else drift.orphan_rows
    return RepairReport(invalid, mirrored, deleted, orphans)


def restore(*, actor: Actor = None, names: Iterable[str] | None = None) -> list[FlagChange]:
    """Write the admin's rows back to ZooKeeper, for flags ZooKeeper does not have (it lost
    its data, or a flag znode was deleted by hand), audited as "restored".

    The flag znodes are created first, then the snapshot is rewritten once: processes
    (which watch only the snapshot) go from the last snapshot they kept straight to the
    whole restored set, never through a partial one.
    """
    reader = runtime.get_runtime().reader()
    present = set(reader.flag_names())
    wanted = set(names) if names is not None else None
    rows = [
        row
        for row in Flag.objects.prefetch_related("users", "groups").order_by("name")
        if row.name not in present and (wanted is None or row.name in wanted)
    ]
    if not rows:
        return []
    writer = _writer(restoring=True)
    created = [
        (row.to_rule(), note, writer.create_flag_node(row.to_rule(), note))
        for row, note in ((row, _note(actor, "restore", "restored")) for row in rows)
    ]
    writer.rebuild_snapshot()
    restored: list[FlagChange] = []
    with _atomic():
        for rule, note, result in created:
            _mirror(rule, result.version)
            restored.append(_record(result, note, actor))
    return restored


# -- quick toggles (the admin's flag list) --------------------------------------------------


class StaleToggle(FlagConflict):
    """A quick toggle from a page drawn before the flag last changed (or was deleted)."""


def toggle_flag(
    name: str,
    everyone: bool | None,
    *,
    expected_version: int,
    actor: Actor = None,
    source: str = "admin toggle",
) -> FlagChange | None:
    """Turn one flag on (``everyone=True``) or off (``False``) for everyone, or back to its
    rules (``None``), from the znode version the editor's page showed: a versioned write
    through :func:`save_flag`, audited with ``actor`` and ``source``. Everything else in
    the flag is kept as ZooKeeper holds it (an invalid znode starts from the admin row, as
    :func:`update_flag` does).

    Returns the audit row, or None when the flag was already so (nothing written). Raises
    :class:`StaleToggle` when the flag moved since ``expected_version``, naming who changed
    it and what it is now; nothing is changed then."""
    stored = read_flag(name)
    if stored.version != expected_version:
        raise _stale_toggle(name, expected_version, stored)
    doc = stored.document()
    if doc is None:
        row = Flag.objects.filter(name=name).first()
        doc = (row.to_rule() if row is not None else FlagRule(name)).to_document()
    rule = FlagRule.from_document({**doc, "everyone": everyone}, name=name)
    try:
        return save_flag(rule, expected_version=expected_version, actor=actor, source=source)
    except FlagConflict:  # it moved between the read above and the write
        raise _stale_toggle(name, expected_version, read_flag(name)) from None


def _stale_toggle(name: str, expected_version: int, stored: StoredFlag) -> StaleToggle:
    """The refusal of a stale toggle: who changed the flag (its audit row for the version
    ZooKeeper holds, when there is one yet) and what it is now."""
    last = FlagChange.objects.filter(flag_name=name).order_by("-at", "-pk").first()
    audited = last is not None and (
        last.zk_version == stored.version if stored.exists else last.action == FlagChange.DELETED
    )
    if audited:
        assert last is not None
        who = f"{last.username or 'the system'} ({last.source or 'unknown source'})"
    else:
        who = "someone else (no audit row for that version yet)"
    if not stored.exists:
        what, now = "deleted", ""
    elif stored.rule is None:
        what = "changed"
        now = f"; it is now invalid in ZooKeeper (version {stored.version}: {stored.error})"
    else:
        what, now = "changed", f"; it is now {stored.rule.summary()} at version {stored.version}"
    return StaleToggle(
        f"Not toggled: {name} was {what} by {who} since this page was drawn (at version "
        f"{expected_version}){now}. Nothing was saved: look again, then toggle from the page "
        "as it is now.",
        current=stored.document(),
        current_version=stored.version,
    )


# -- history and revert ---------------------------------------------------------------------


class NothingToRestore(FlagWriteError):
    """The audit log holds no document to restore: no such version, a flag that is not
    deleted, or a document that was invalid or too large to be recorded."""


@dataclass(frozen=True)
class Restored:
    """What a restore did: the audit row it wrote (None when the flag already was so), the
    flag's ZooKeeper version now, and the user and group ids it left out because the
    database no longer has them (``{"users": [12]}``)."""

    name: str
    change: FlagChange | None
    version: int | None
    dropped: dict[str, list[int]] = field(default_factory=dict)


def member_names(documents: Iterable[dict[str, Any] | None]) -> dict[str, dict[int, str]]:
    """The usernames and group names of the ids ``documents`` list (environment overrides
    included) that still exist: ``{"users": {pk: username}, "groups": {pk: name}}``, in at
    most two queries."""
    ids = member_ids(documents)
    user_model = get_user_model()
    names: dict[str, dict[int, str]] = {"users": {}, "groups": {}}
    if ids["users"]:
        names["users"] = {
            pk: str(username)
            for pk, username in user_model.objects.filter(pk__in=ids["users"]).values_list(
                "pk", user_model.USERNAME_FIELD
            )
        }
    if ids["groups"]:
        names["groups"] = dict(Group.objects.filter(pk__in=ids["groups"]).values_list("pk", "name"))
    return names


def version_change(name: str, version: int) -> FlagChange | None:
    """The newest audit row that left flag ``name`` at ZooKeeper ``version``. A flag
    deleted and created again starts again from version 0: its latest life wins."""
    return (
        FlagChange.objects.filter(flag_name=name, zk_version=version, after__isnull=False)
        .order_by("-at", "-pk")
        .first()
    )


def revert_flag(
    name: str,
    to_version: int,
    *,
    expected_version: int | None,
    actor: Actor = None,
    source: str,
) -> Restored:
    """Restore flag ``name`` as it was at ZooKeeper version ``to_version`` (the ``after``
    of its newest audit row at that version, :func:`version_change`): see
    :func:`revert_to_change`."""
    validate_name(name)
    change = version_change(name, to_version)
    if change is None:
        raise NothingToRestore(
            f"Flag {name!r} has no audited version {to_version} to restore "
            f"('manage.py zkflags history {name}' lists its versions); nothing was saved."
        )
    return revert_to_change(change, expected_version=expected_version, actor=actor, source=source)


def revert_to_change(
    change: FlagChange,
    *,
    expected_version: int | None,
    actor: Actor = None,
    source: str,
) -> Restored:
    """Restore a flag as it was right after the audit row ``change``: its document is
    written as a *new* version, from ``expected_version`` (the version the person saw;
    None: the flag does not exist now and is created), through the same steps as every
    change (validated, one multi(), the row mirrored, audited as "reverted"). Refused
    with a :class:`~django_zkflags.exceptions.FlagConflict` when the flag moved since.
    Users and groups the database no longer has are left out. Nothing is written when the
    flag already is so."""
    label = f"version {change.zk_version}"
    rule, dropped = _restorable(change.flag_name, change.after, label)
    return _write_restored(
        rule, expected_version, actor, source, FlagChange.REVERTED, dropped, label
    )


def deleted_flags() -> QuerySet[FlagChange]:
    """The delete rows of flags that are gone: each flag whose newest audit row is a
    delete and that has no admin row. Newest first."""
    newest = (
        FlagChange.objects.filter(flag_name=OuterRef("flag_name"))
        .order_by("-at", "-pk")
        .values("pk")[:1]
    )
    return (
        FlagChange.objects.filter(action=FlagChange.DELETED, pk=Subquery(newest))
        .exclude(flag_name__in=Flag.objects.values("name"))
        .order_by("-at", "-pk")
    )


def undelete_flag(
    name: str, *, actor: Actor = None, source: str, deleted_change: int | None = None
) -> Restored:
    """Create flag ``name`` again as it was when it was deleted (the ``before`` of its
    delete row): a versioned create, refused if the flag exists, audited as
    "undeleted". ``deleted_change``, the pk of the delete row the person saw, is checked
    to be still the flag's latest change."""
    validate_name(name)
    last = FlagChange.objects.filter(flag_name=name).order_by("-at", "-pk").first()
    if last is None or last.action != FlagChange.DELETED:
        what = "has no history" if last is None else f"was last {last.get_action_display()}"
        raise NothingToRestore(f"Flag {name!r} is not deleted (it {what}); nothing was saved.")
    if deleted_change is not None and last.pk != deleted_change:
        raise FlagConflict(
            f"Flag {name!r} changed since this page was drawn (its history has a newer "
            "delete); nothing was restored. Reload and try again.",
            current=None,
            current_version=None,
        )
    label = "its last version before it was deleted"
    rule, dropped = _restorable(name, last.before, label)
    return _write_restored(rule, None, actor, source, FlagChange.UNDELETED, dropped, label)


def _restorable(
    name: str, doc: dict[str, Any] | None, label: str
) -> tuple[FlagRule, dict[str, list[int]]]:
    """The rule of a document taken from the audit log, without the users and groups the
    database no longer has (and which ones those were)."""
    if name == ENVIRONMENTS:
        raise NothingToRestore("The environments document is not a flag; nothing was saved.")
    if not isinstance(doc, dict) or "omitted" in doc:
        why = "too large to be recorded" if isinstance(doc, dict) else "not recorded"
        raise NothingToRestore(
            f"The document of flag {name!r} at {label} was {why} in the audit log; "
            "nothing was saved."
        )
    listed = member_ids([doc])
    existing = member_names([doc])
    dropped = {
        kind: sorted(listed[kind] - set(existing[kind]))
        for kind in ("users", "groups")
        if listed[kind] - set(existing[kind])
    }
    for kind, pks in dropped.items():
        for pk in pks:
            doc = _without_member(doc, kind, pk)
    try:
        return FlagRule.from_document(doc, name=name), dropped
    except InvalidFlag as exc:
        raise InvalidFlag(
            f"The document of flag {name!r} at {label} is not valid now ({exc}); nothing was saved."
        ) from None


def _write_restored(
    rule: FlagRule,
    expected_version: int | None,
    actor: Actor,
    source: str,
    action: str,
    dropped: dict[str, list[int]],
    label: str,
) -> Restored:
    """Steps 1 to 4 of every change (as :func:`save_flag`), audited as ``action``."""
    refuse_undefined_environments(rule)
    settle_changes()
    note = _note(actor, source, action)
    try:
        result = _writer().write_flag(rule, expected_version, note)
    except FlagConflict as exc:
        raise FlagConflict(
            _restore_conflict(rule.name, expected_version, exc.current_version, label),
            current=exc.current,
            current_version=exc.current_version,
        ) from exc
    if not result.changed:
        return Restored(rule.name, None, result.version, dropped)
    with _atomic():
        _mirror(rule, result.version)
        return Restored(rule.name, _record(result, note, actor), result.version, dropped)


def _restore_conflict(name: str, expected: int | None, current: int | None, label: str) -> str:
    if expected is None:
        now = f"exists (version {current})"
    elif current is None:
        now = "was deleted"
    else:
        now = f"is now at version {current}"
    saw = "did not exist" if expected is None else f"was at version {expected}"
    return (
        f"Flag {name!r} changed since the page was drawn: it {saw} then, and {now}. "
        f"Nothing was restored ({label}); look at its history again and retry."
    )


# -- several flags at once (imports, code) ---------------------------------------------------


def save_flags(
    items: Iterable[BatchItem],
    *,
    environments: tuple[Any, int | None] | None = None,
    actor: Actor = None,
    source: str,
) -> list[FlagChange]:
    """Create, change and delete several flags (and replace the environments document) as
    **one** ZooKeeper ``multi()``: all or nothing. Each item is a validated rule (None
    deletes) and the version its editor started from (None creates). A flag that moved
    refuses the whole change (:class:`FlagConflict` names them all); a flag that would not
    change is left out. Every flag changed gets its own audit row.

    ::

        from django_zkflags import services
        from django_zkflags.writer import BatchItem

        services.save_flags([
            BatchItem("checkout-v2", FlagRule("checkout-v2", percent=50), expected_version=3),
            BatchItem("old-banner", None, expected_version=7),
        ], actor=request.user, source="rollout")
    """
    items = list(items)
    env = None
    if environments is not None:
        env = (validate_environments_document(environments[0]), environments[1])
    for item in items:
        if item.rule is None or not item.rule.environments:
            continue
        if env is not None:  # checked against the document the same change writes
            undefined = set(item.rule.environments) - set(env[0]["parents"])
            if undefined:
                names = ", ".join(repr(e) for e in sorted(undefined))
                raise InvalidFlag(f"{item.name}: environment(s) {names} not defined")
        else:
            refuse_undefined_environments(item.rule)
    settle_changes()
    note = _note(actor, source)
    results = _writer().write_flags(items, note, env)
    changed = [result for result in results if result.changed]
    audit: list[FlagChange] = []
    with _atomic():
        rules = {item.name: item.rule for item in items}
        for index, result in enumerate(changed):
            if result.name == ENVIRONMENTS:
                pass
            elif result.after is None:
                _delete_row(result.name)
            else:
                rule = rules[result.name]
                assert rule is not None
                _mirror(rule, result.version)
            audit.append(_record(result, note, actor, change_id=_batch_id(note.id, index)))
    return audit


def _batch_id(record_id: str, index: int) -> str:
    """The audit row id of the ``index``-th change of a batch: the record's id, shortened,
    and the index (so a settle finds every row of the batch by the prefix)."""
    return f"{record_id[:BATCH_ID_PREFIX]}-{index:05d}"


BATCH_ID_PREFIX = 26


# -- the steward: hand edits of the znodes (see steward.py, docs/steward.md) ----------------


@dataclass(frozen=True)
class Healed:
    """What :func:`heal_hand_edits` did: the audit rows it wrote (source "zookeeper"), the
    znodes that hold no valid flag (each keeps its last good rule), and whether it rebuilt
    the snapshot."""

    changes: list[FlagChange]
    invalid: dict[str, str]
    rebuilt: bool


def heal_hand_edits() -> Healed:
    """Serve what the znodes hold after another client (``zkCli.sh``, a script) created,
    changed or deleted a flag znode, or changed the environments znode, behind the write
    path's back. In the order of every change:

    1. **ZooKeeper**: the snapshot is rebuilt from the znodes, with one change record of
       every entry that differs, in one ``multi()`` (:meth:`~.writer.FlagWriter.heal_snapshot`;
       nothing is written when the snapshot already says what the znodes hold);
    2. **the row mirror** and 3. **an audit row per change**, source "zookeeper" (ZooKeeper
       does not say who), in one database transaction; then the record is deleted.

    A process that dies between 1 and 3 leaves the record, settled like any other
    (:func:`settle_changes`). A znode that holds no valid flag keeps its last good rule
    and is returned in ``invalid``; no row changes for it."""
    settle_changes()
    note = _note(None, "zookeeper")
    rebuilt = _writer().heal_snapshot(note)
    audit: list[FlagChange] = []
    if rebuilt.changes:
        with _atomic():
            for index, result in enumerate(rebuilt.changes):
                if result.name == ENVIRONMENTS:
                    pass
                elif result.after is None:
                    _delete_row(result.name)
                else:
                    _mirror(FlagRule.from_document(result.after, name=result.name), result.version)
                audit.append(_record(result, note, None, change_id=_batch_id(note.id, index)))
    return Healed(audit, rebuilt.invalid, rebuilt.written)


# -- rows and audit (inside the database transaction) ---------------------------------------


class ZooKeeperLostData(FlagWriteError):
    """ZooKeeper holds nothing under the root while the admin's rows say it had flags."""


def _refuse_empty_tree() -> None:
    mirrored = Flag.objects.filter(zk_version__isnull=False).count()
    if mirrored:
        root = runtime.get_runtime().url.root
        raise ZooKeeperLostData(
            f"ZooKeeper holds no flags under {root}, but {mirrored} admin row(s) mirror "
            "flags it had: it lost its data, or ZKFLAGS_URL points elsewhere. Nothing was "
            "saved: a snapshot with only this change would turn every other flag off in "
            "every process. Run 'manage.py zkflags restore' first."
        )


def _writer(*, restoring: bool = False) -> Any:
    return runtime.get_runtime().writer(
        None if restoring else _refuse_empty_tree, check=check_prerequisites
    )


def _atomic() -> Any:
    return transaction.atomic(using=router.db_for_write(Flag))


def _mirror(rule: FlagRule, version: int | None) -> Flag:
    """Make the row of ``rule`` (and its many-to-many rows) mirror it at ``version``.

    Written with ``update()``, ``bulk_create()`` and the through tables, which send no
    model signals: the receivers that push ORM edits to ZooKeeper stay out of it.
    """
    values = {**Flag.values_from_rule(rule), "zk_version": version, "modified": timezone.now()}
    if not Flag.objects.filter(name=rule.name).update(**values):
        Flag.objects.bulk_create([Flag(name=rule.name, **values)])
    row = Flag.objects.get(name=rule.name)
    _set_links(row, "users", get_user_model(), rule.users)
    _set_links(row, "groups", Group, rule.groups)
    return row


def _set_links(row: Flag, field_name: str, target: Any, ids: Iterable[int]) -> None:
    m2m = Flag._meta.get_field(field_name)
    through = m2m.remote_field.through  # type: ignore[union-attr]
    source_fk, target_fk = m2m.m2m_field_name(), m2m.m2m_reverse_field_name()  # type: ignore[union-attr]
    # ZooKeeper may list ids the database does not have (deleted users): skip those.
    wanted = set(target.objects.filter(pk__in=list(ids)).values_list("pk", flat=True))
    linked = set(
        through.objects.filter(**{source_fk: row.pk}).values_list(f"{target_fk}_id", flat=True)
    )
    if linked - wanted:
        through.objects.filter(
            **{source_fk: row.pk, f"{target_fk}_id__in": linked - wanted}
        ).delete()
    through.objects.bulk_create(
        [through(**{f"{source_fk}_id": row.pk, f"{target_fk}_id": pk}) for pk in wanted - linked]
    )


def _delete_row(name: str) -> None:
    """Delete the row of ``name`` and its many-to-many rows, sending no model signals
    (``QuerySet.delete()`` would send ``pre_delete``, which pushes ORM deletes)."""
    pks = list(Flag.objects.filter(name=name).values_list("pk", flat=True))
    if not pks:
        return
    for field_name in ("users", "groups"):
        m2m = Flag._meta.get_field(field_name)
        through = m2m.remote_field.through  # type: ignore[union-attr]
        through.objects.filter(**{f"{m2m.m2m_field_name()}__in": pks}).delete()  # type: ignore[union-attr]
    queryset = Flag.objects.filter(pk__in=pks)
    queryset._raw_delete(queryset.db)  # Django's own signal-free delete (used by fast deletes)


def _row_document(row: Flag | None) -> dict[str, Any] | None:
    if row is None:
        return None
    try:
        return row.to_rule().to_document()
    except InvalidFlag:
        return None


def _who(actor: Actor) -> tuple[Any, str]:
    if isinstance(actor, str):
        return None, actor
    if actor is not None and getattr(actor, "is_authenticated", False):
        return actor, actor.get_username()
    return None, ""


def _note(
    actor: Actor, source: str, action: str = "", scheduled_for: datetime | None = None
) -> ChangeNote:
    user, username = _who(actor)
    return ChangeNote(
        id=uuid.uuid4().hex,
        source=source,
        username=username,
        user_id=user.pk if user is not None else None,
        at=timezone.now().isoformat(),
        host=socket.gethostname(),
        pid=os.getpid(),
        action=action,
        scheduled_for=scheduled_for.isoformat() if scheduled_for is not None else "",
    )


def _record(
    result: WriteResult, note: ChangeNote, actor: Actor, *, change_id: str | None = None
) -> FlagChange:
    """The audit row of a change; once it is committed, the change record in ZooKeeper
    has served its purpose and is deleted (without waiting: a left-over is settled)."""
    user, username = _who(actor)
    change = FlagChange.objects.create(
        flag_name=result.name,
        action=note.action or result.action,
        before=result.before,
        after=result.after,
        zk_version=result.version,
        source=note.source,
        user=user,
        username=username,
        change_id=change_id or note.id,
        scheduled_for=_parse_time(note.scheduled_for, None),
    )
    if result.record_path is not None:
        path = result.record_path
        transaction.on_commit(lambda: _forget_record(path), using=router.db_for_write(Flag))
    return change


def _forget_record(path: str) -> None:
    try:
        runtime.get_runtime().client.delete_async(path)
    except Exception:  # the next settle deletes it
        log.debug("Could not delete the change record %s", path, exc_info=True)


# -- change records left behind (a process died between ZooKeeper and the database) --------

#: A change record younger than this (seconds) may belong to a write still in progress in
#: another process: it is left alone (unless its writer is a dead process on this host).
SETTLE_AFTER = 60.0


def pending_changes(*, older_than: float = SETTLE_AFTER) -> list[ChangeRecord]:
    """Change records whose audit row is missing and whose writer is done (older than
    ``older_than`` seconds, or written by a process of this host that is gone)."""
    pending = []
    now_ms = time.time() * 1000
    for change in runtime.get_runtime().reader().change_records():
        record = change.record
        if record is None:
            continue
        if _audited(record):
            _forget_record(change.path)  # audited; the delete did not happen
            continue
        if (now_ms - change.created_ms) / 1000 >= older_than or _writer_gone(record):
            pending.append(change)
    return pending


def _audited(record: dict[str, Any]) -> bool:
    if record.get("name") == BATCH:
        prefix = f"{str(record['id'])[:BATCH_ID_PREFIX]}-"
        return FlagChange.objects.filter(change_id__startswith=prefix).exists()
    return FlagChange.objects.filter(change_id=record["id"]).exists()


def settle_changes(*, older_than: float = SETTLE_AFTER) -> list[FlagChange]:
    """Write the missing audit row of every change that is live in ZooKeeper but whose
    writer died before committing it (with who, when and from where the record says), and
    make the row mirror ZooKeeper. Runs before every write, and in check/repair."""
    settled = []
    for change in pending_changes(older_than=older_than):
        record = change.record
        assert record is not None
        name = str(record.get("name"))
        if name == BATCH:
            parts = [
                (entry, _batch_id(str(record["id"]), index))
                for index, entry in enumerate(record.get("changes") or [])
                if isinstance(entry, dict)
            ]
        else:
            parts = [(record, str(record["id"]))]
        with _atomic():
            user_id = record.get("user_id")
            user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
            for entry, change_id in parts:
                entry_name = str(entry.get("name"))
                if entry_name != ENVIRONMENTS:
                    _mirror_current(entry_name)
                settled.append(
                    FlagChange.objects.create(
                        flag_name=entry_name,
                        action=str(entry.get("action") or "changed"),
                        before=entry.get("before"),
                        after=entry.get("after"),
                        zk_version=entry.get("version"),
                        source=str(record.get("source") or "")[:40],
                        user=user,
                        username=str(record.get("username") or "")[:150],
                        at=_parse_time(record.get("at")),
                        change_id=change_id,
                        scheduled_for=_parse_time(record.get("scheduled_for"), None),
                    )
                )
            path = change.path
            transaction.on_commit(lambda p=path: _forget_record(p), using=router.db_for_write(Flag))
        log.warning(
            "Recorded the audit row of a live change its writer never committed: %s %s "
            "(version %s) by %s from %s",
            name,
            record.get("action"),
            record.get("version"),
            record.get("username") or "-",
            record.get("source"),
        )
    return settled


def _mirror_current(name: str) -> None:
    stored = read_flag(name)
    row = Flag.objects.filter(name=name).first()
    if stored.rule is not None:
        if row is None or not row.mirrors(stored.rule, stored.version):
            _mirror(stored.rule, stored.version)
    elif not stored.exists and row is not None and row.zk_version is not None:
        _delete_row(name)


def _writer_gone(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


_NOW: Any = object()


def _parse_time(value: Any, default: Any = _NOW) -> Any:
    """An ISO 8601 time from a change record; ``default`` (now) when there is none."""
    from django.utils.dateparse import parse_datetime

    parsed = parse_datetime(value) if isinstance(value, str) and value else None
    if parsed is not None:
        return parsed
    return timezone.now() if default is _NOW else default


__all__ = [
    "ENVIRONMENTS",
    "ZooKeeperLostData",
    "acting_as",
    "Drift",
    "RepairReport",
    "check",
    "check_prerequisites",
    "command_actor",
    "current_actor",
    "delete_flag",
    "flags_listing",
    "push_links",
    "push_row",
    "read_environments",
    "read_flag",
    "read_snapshot",
    "refuse_undefined_environments",
    "remove_member",
    "repair",
    "restore",
    "save_environments",
    "save_flag",
    "set_everyone",
    "settle_changes",
    "StaleToggle",
    "toggle_flag",
    "pending_changes",
    "update_environments",
    "update_flag",
    # history and revert
    "NothingToRestore",
    "Restored",
    "deleted_flags",
    "member_names",
    "revert_flag",
    "revert_to_change",
    "undelete_flag",
    "version_change",
    # the steward
    "Healed",
    "heal_hand_edits",
]
