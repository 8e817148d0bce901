"""export, import: flags as files (JSON, YAML, or a directory with one file per flag)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from .. import runtime, services
from ..files import kind_of, read, write
from ..transfer import ImportPlan, export, plan_import
from .base import Subcommand


class Export(Subcommand):
    name = "export"
    help = (
        "Write every flag and the environments document to a .json or .yaml file, or a directory."
    )

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("path", help="FILE.json, FILE.yaml, or a directory")

    def handle(self, path: str, **options: Any) -> None:
        target = Path(path)
        content = export(runtime.get_runtime().reader())
        write(target, content)
        self.stdout.write(
            f"Exported {len(content.flags)} flag(s) and the environments "
            f"(version {content.environments_version}) to {target} ({kind_of(target)})"
        )


class Import(Subcommand):
    name = "import"
    help = "Apply a file written by export (or by hand): all or nothing, audited per flag."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("path", help="FILE.json, FILE.yaml, or a directory")
        parser.add_argument("--dry-run", action="store_true", help="show the changes only")
        parser.add_argument(
            "--prune", action="store_true", help="delete flags the file does not have"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="apply even to flags changed in ZooKeeper since the file was exported",
        )

    def handle(self, path: str, dry_run: bool, prune: bool, force: bool, **options: Any) -> None:
        content = read(Path(path))
        reader = runtime.get_runtime().reader()
        current, _invalid = reader.flag_entries()
        plan = plan_import(content, current, reader.environments(), prune=prune, force=force)
        self.show(plan)
        if plan.problems:
            raise CommandError(
                f"{len(plan.problems)} problem(s); nothing was changed:\n  "
                + "\n  ".join(plan.problems)
            )
        if dry_run or plan.empty:
            self.stdout.write("Dry run: nothing was changed." if dry_run else "Nothing to change.")
            return
        audit = services.save_flags(
            plan.items,
            environments=plan.environments,
            actor=services.command_actor(),
            source="import",
        )
        self.stdout.write(f"Imported: {len(audit)} change(s) in one transaction.")

    def show(self, plan: ImportPlan) -> None:
        for change in plan.changes:
            self.stdout.write(f"{change.action} {change.name}")
            for line in change.lines:
                self.stdout.write(f"    {line}")
        if plan.environments is not None:
            self.stdout.write("change environments")
            for line in plan.environments_lines:
                self.stdout.write(f"    {line}")
        if plan.unchanged:
            self.stdout.write(f"unchanged: {len(plan.unchanged)} flag(s)")


COMMANDS: tuple[type[Subcommand], ...] = (Export, Import)
