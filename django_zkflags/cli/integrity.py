"""Integrity: check, repair, restore."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from .. import services
from .base import Subcommand


class Check(Subcommand):
    name = "check"
    help = "Report drift between ZooKeeper and the database (exit 1)."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        pass

    def handle(self, **options: Any) -> None:
        drift = services.check()
        for name, what in drift.problems:
            self.stdout.write(f"{name}: {what}")
        if drift.problems:
            fix = "restore" if drift.zookeeper_lost_data else "repair"
            raise CommandError(f"{len(drift.problems)} problem(s); run 'manage.py zkflags {fix}'")
        self.stdout.write("ZooKeeper and the admin agree.")


class Repair(Subcommand):
    name = "repair"
    help = "Rebuild the snapshot and make the rows mirror ZooKeeper."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--delete-orphan-rows",
            action="store_true",
            help="also delete admin rows of flags ZooKeeper does not have",
        )

    def handle(self, delete_orphan_rows: bool = False, **options: Any) -> None:
        report = services.repair(delete_orphan_rows=delete_orphan_rows)
        for name, error in report.invalid.items():
            self.stdout.write(f"{name}: left as it was in the snapshot ({error})")
        for name in report.mirrored:
            self.stdout.write(f"{name}: row now mirrors ZooKeeper")
        for name in report.deleted_rows:
            self.stdout.write(f"{name}: row deleted (not in ZooKeeper)")
        for name in report.orphan_rows:
            self.stdout.write(
                f"{name}: row kept, ZooKeeper has no such flag (restore it with 'zkflags "
                "restore', or delete the row with 'zkflags repair --delete-orphan-rows')"
            )
        self.stdout.write(f"Repaired {len(report.mirrored) + len(report.deleted_rows)} row(s).")


class Restore(Subcommand):
    name = "restore"
    help = "Write admin rows back to ZooKeeper for flags it does not have."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("names", nargs="*", help="only these flags")

    def handle(self, names: list[str], **options: Any) -> None:
        restored = services.restore(actor=services.command_actor(), names=names or None)
        for change in restored:
            self.stdout.write(
                f"{change.flag_name}: restored to ZooKeeper (version {change.zk_version})"
            )
        self.stdout.write(f"Restored {len(restored)} flag(s).")


COMMANDS: tuple[type[Subcommand], ...] = (
    Check,
    Repair,
    Restore,
)
