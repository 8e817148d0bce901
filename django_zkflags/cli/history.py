"""A flag's history: history, revert, show, delete.

Changes go through :mod:`django_zkflags.services` (versioned, audited with source
"command" and the operating system's user); times are shown in the project's time zone.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from .. import runtime, services
from ..cache import store
from ..diff import compact, diff_documents
from ..models import Flag, FlagChange
from ..rules import validate_name
from .base import Subcommand


def when(at: Any) -> str:
    """A time in the project's time zone, naming the zone."""
    if timezone.is_aware(at):
        at = timezone.localtime(at)
    return f"{at:%Y-%m-%d %H:%M:%S} {timezone.get_current_timezone_name()}"


def describe(change: FlagChange) -> str:
    version = f"v{change.zk_version}" if change.zk_version is not None else "-"
    who = change.username or "system"
    return f"{version}  {when(change.at)}  {change.get_action_display()} by {who} ({change.source or '-'})"


class History(Subcommand):
    name = "history"
    help = "A flag's changes, newest first, with what each changed."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--limit", type=int, default=50, help="show this many changes (0: all; default 50)"
        )

    def handle(self, name: str, limit: int = 50, **options: Any) -> None:
        validate_name(name)
        changes = FlagChange.objects.filter(flag_name=name).order_by("-at", "-pk")
        total = changes.count()
        if not total:
            self.stdout.write(f"{name}: no audited change.")
            return
        rows = list(changes[:limit] if limit > 0 else changes)
        names = services.member_names(doc for row in rows for doc in (row.before, row.after))
        self.stdout.write(
            f"{name}: {total} change(s), newest first (times in "
            f"{timezone.get_current_timezone_name()})"
        )
        for row in rows:
            self.stdout.write(describe(row))
            lines = [str(c) for c in diff_documents(row.before, row.after, names=names)]
            for line in lines or ["(no field changed)"]:
                self.stdout.write(f"    {line}")
        if len(rows) < total:
            self.stdout.write(f"... {total - len(rows)} older change(s): --limit 0 shows all.")


class Revert(Subcommand):
    name = "revert"
    help = "Restore a flag as it was at a ZooKeeper version (a new version, audited)."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--version",
            type=int,
            required=True,
            help="the ZooKeeper version to restore ('zkflags history NAME' lists them)",
        )
        parser.add_argument(
            "--expected-version",
            type=int,
            help="refuse unless the flag is at this version now (default: as read just now)",
        )

    def handle(
        self, name: str, version: int, expected_version: int | None = None, **options: Any
    ) -> None:
        validate_name(name)
        if expected_version is None:
            expected_version = services.read_flag(name).version
        restored = services.revert_flag(
            name,
            version,
            expected_version=expected_version,
            actor=services.command_actor(),
            source="command",
        )
        left_out = "".join(
            f"; left out {kind} {', '.join(map(str, pks))} (no longer in the database)"
            for kind, pks in restored.dropped.items()
        )
        if restored.change is None:
            self.stdout.write(
                f"{name}: already as it was at version {version} (now version "
                f"{restored.version}); nothing written{left_out}"
            )
        else:
            self.stdout.write(
                f"{name}: restored as it was at version {version}; now version "
                f"{restored.version}{left_out}"
            )


class Show(Subcommand):
    name = "show"
    help = "A flag as ZooKeeper holds it, and what this process serves."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--wait", type=float, default=3.0, help="seconds to wait for this process's snapshot"
        )

    def handle(self, name: str, wait: float = 3.0, **options: Any) -> None:
        validate_name(name)
        stored = services.read_flag(name)
        out = self.stdout.write
        if not stored.exists:
            out(f"{name}: not in ZooKeeper")
            deleted = FlagChange.objects.filter(flag_name=name).order_by("-at", "-pk").first()
            if deleted is not None and deleted.action == FlagChange.DELETED:
                out(f"  deleted {when(deleted.at)} by {deleted.username or 'system'}")
        elif stored.rule is None:
            out(f"{name}: INVALID in ZooKeeper (version {stored.version}): {stored.error}")
        else:
            rule = stored.rule
            names = services.member_names([stored.document()])
            out(f"{name}: version {stored.version}")
            out(f"  rule:      {rule.summary()}")
            for field, value in (
                ("everyone", rule.everyone),
                ("percent", rule.percent),
            ):
                if value is not None:
                    out(f"  {field + ':':<10} {compact(value)}")
            for field in ("superusers", "staff", "authenticated"):
                if getattr(rule, field):
                    out(f"  {field + ':':<10} true")
            for kind in ("users", "groups"):
                ids = sorted(getattr(rule, kind))
                if ids:
                    labels = [names[kind].get(pk, f"#{pk} (deleted)") for pk in ids]
                    out(f"  {kind + ':':<10} {', '.join(labels)}")
            out(f"  value:     {compact(rule.to_document().get('value'))}")
            if rule.note:
                out(f"  note:      {rule.note}")
            overrides = rule.to_document().get("environments") or {}
            if overrides:
                out("  overrides:")
                for env, override in sorted(overrides.items()):
                    out(f"    {env}: {compact(override)}")
            else:
                out("  overrides: none")
        self._served(name, stored.version, wait)

    def _served(self, name: str, version: int | None, wait: float) -> None:
        """What this process serves for the flag (from its snapshot, as requests do)."""
        rt = runtime.start(wait=wait)
        snapshot = store.current
        env = snapshot.environment or "none"
        chain = " → ".join(snapshot.chain) if snapshot.chain else "-"
        where = f"this process (environment {env}, chain {chain}, from {snapshot.source})"
        served = snapshot.flags.get(name)
        if served is None:
            self.stdout.write(f"  served:    not served by {where}")
            return
        base = store.base.flags.get(name)
        served_version = base.version if base is not None else served.version
        lag = ""
        if served_version != version:
            lag = f" (ZooKeeper has version {version}; this process is behind)"
        anonymous = "on" if served.is_active(None) else "off"
        self.stdout.write(
            f"  served:    version {served_version} by {where}{lag}: {served.summary()}; "
            f"anonymous visitors: {anonymous}; value: {compact(served.to_document().get('value'))}"
        )
        if not rt.loaded.is_set():
            self.stdout.write("  (no snapshot from ZooKeeper yet in this process)")


class Delete(Subcommand):
    name = "delete"
    help = "Delete a flag (asks first unless --yes; versioned, audited)."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--yes",
            "--noinput",
            "--no-input",
            dest="yes",
            action="store_true",
            help="do not ask for confirmation",
        )

    def handle(self, name: str, yes: bool = False, **options: Any) -> None:
        validate_name(name)
        stored = services.read_flag(name)
        if not stored.exists:
            if not Flag.objects.filter(name=name).exists():
                raise CommandError(f"No flag {name!r} in ZooKeeper.")
            what = "an admin row without a flag in ZooKeeper"
        elif stored.rule is None:
            what = f"version {stored.version}, invalid: {stored.error}"
        else:
            what = f"version {stored.version}: {stored.rule.summary()}"
        if not yes:
            self.stdout.write(f"Delete flag {name} ({what})? Type 'yes' to delete:")
            self.stdout.flush()
            answer = sys.stdin.readline().strip().lower()
            if answer not in ("yes", "y"):
                raise CommandError(f"Not deleted: {name} is unchanged.")
        change = services.delete_flag(
            name,
            expected_version=stored.version,
            actor=services.command_actor(),
            source="command",
        )
        if change is None:
            self.stdout.write(f"{name}: admin row deleted (ZooKeeper had no such flag)")
            return
        self.stdout.write(
            f"{name}: deleted (was version {stored.version}). To bring it back: "
            f"'manage.py zkflags revert {name} --version {stored.version}'"
        )


COMMANDS: tuple[type[Subcommand], ...] = (
    History,
    Revert,
    Show,
    Delete,
)
