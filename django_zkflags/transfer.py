"""Moving flags in and out: export what ZooKeeper holds, plan an import of a file.

An import is planned whole before anything is written: every flag of the file is validated
(one invalid flag and nothing changes), compared with what ZooKeeper holds (a flag whose
document is the same is left alone: an export imported back changes nothing), and checked
against the version the file was exported at (a flag someone changed since is refused,
unless ``force``). The plan is then applied by :func:`django_zkflags.services.save_flags`
as one ZooKeeper ``multi()``: all or nothing, each flag audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .diff import diff_documents
from .files import FlagFile
from .reader import TreeReader
from .rules import FlagRule, InvalidFlag, validate_environments_document
from .writer import BatchItem


def export(reader: TreeReader) -> FlagFile:
    """Every valid flag znode (with its version) and the environments document."""
    entries, _invalid = reader.flag_entries()
    environments = reader.environments()
    return FlagFile(
        flags={name: dict(entry) for name, entry in sorted(entries.items())},
        environments=environments.document if environments.error is None else None,
        environments_version=environments.version,
    )


@dataclass
class PlannedChange:
    name: str
    action: str  # "create", "change", "delete"
    lines: list[str]  # the per-field diff, in words


@dataclass
class ImportPlan:
    items: list[BatchItem] = field(default_factory=list)
    changes: list[PlannedChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    environments: tuple[dict[str, Any], int | None] | None = None
    environments_lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # invalid flags, conflicts: refuse

    @property
    def empty(self) -> bool:
        return not self.items and self.environments is None


def plan_import(
    content: FlagFile,
    current: Mapping[str, Any],
    current_environments: Any,
    *,
    prune: bool = False,
    force: bool = False,
) -> ImportPlan:
    """Compare ``content`` with what ZooKeeper holds: ``current`` (flag entries with their
    version, as :meth:`TreeReader.flag_entries` gives) and ``current_environments`` (a
    :class:`StoredEnvironments`)."""
    plan = ImportPlan()
    for name, doc in sorted(content.flags.items()):
        version = doc.get("version")
        try:
            rule = FlagRule.from_document(
                {k: v for k, v in doc.items() if k != "version"}, name=name
            )
        except InvalidFlag as exc:
            plan.problems.append(f"{name}: {exc}")
            continue
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            plan.problems.append(f"{name}: 'version' must be a whole number, got {version!r}")
            continue
        new_doc = rule.to_document()
        entry = current.get(name)
        if entry is None:
            if version is not None and not force:
                plan.problems.append(
                    f"{name}: was deleted since the file was exported (at version {version}); "
                    "--force creates it again"
                )
                continue
            plan.items.append(BatchItem(name, rule, None))
            plan.changes.append(PlannedChange(name, "create", _lines(None, new_doc)))
            continue
        old_doc = {k: v for k, v in entry.items() if k != "version"}
        if old_doc == new_doc:
            plan.unchanged.append(name)
            continue
        if version is not None and version != entry["version"] and not force:
            plan.problems.append(
                f"{name}: changed in ZooKeeper since the file was exported (file: version "
                f"{version}, ZooKeeper: version {entry['version']}); --force overwrites it"
            )
            continue
        plan.items.append(BatchItem(name, rule, entry["version"]))
        plan.changes.append(PlannedChange(name, "change", _lines(old_doc, new_doc)))
    if prune:
        for name, entry in sorted(current.items()):
            if name not in content.flags:
                plan.items.append(BatchItem(name, None, entry["version"]))
                old_doc = {k: v for k, v in entry.items() if k != "version"}
                plan.changes.append(PlannedChange(name, "delete", _lines(old_doc, None)))
    if content.environments is not None:
        _plan_environments(plan, content, current_environments, force)
    return plan


def _plan_environments(plan: ImportPlan, content: FlagFile, stored: Any, force: bool) -> None:
    try:
        document = validate_environments_document(content.environments)
    except InvalidFlag as exc:
        plan.problems.append(f"environments: {exc}")
        return
    if stored.error is None and stored.document == document:
        return
    wanted = content.environments_version
    if wanted is not None and wanted != stored.version and not force:
        plan.problems.append(
            f"environments: changed in ZooKeeper since the file was exported (file: version "
            f"{wanted}, ZooKeeper: version {stored.version}); --force overwrites them"
        )
        return
    plan.environments = (document, stored.version)
    plan.environments_lines = [
        f"{key}: {stored.document.get(key)} → {document.get(key)}"
        for key in ("parents", "hosts")
        if stored.document.get(key) != document.get(key)
    ]


def _lines(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    return [str(change) for change in diff_documents(old, new)]
