"""references: which flags the project's code and templates use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from .. import conf, services
from ..references import Scan, scan
from .base import Subcommand

DYNAMIC_NOTE = (
    "Names built at run time (f-strings, variables) cannot be found by a scan: check the "
    "dynamic references below before deleting a flag the scan calls unused."
)


class References(Subcommand):
    name = "references"
    help = "Flags in ZooKeeper nothing references, and references to flags that do not exist."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--path",
            action="append",
            default=None,
            help="a directory or file to scan (repeatable; default: settings.BASE_DIR, else "
            "the current directory)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument(
            "--fail-on-unused", action="store_true", help="exit 1 when a flag is unused"
        )

    def handle(
        self, path: list[str] | None, json: bool, fail_on_unused: bool, **options: Any
    ) -> None:
        roots = [Path(p) for p in path] if path else [Path(getattr(settings, "BASE_DIR", "."))]
        declared = sorted((conf.get("FLAGS") or {}).keys())
        result = scan(roots, declared)
        existing = services.read_snapshot().flags
        report = _report(result, existing)
        if json:
            self.stdout.write(_json(report))
        else:
            self._print(report, roots)
        if fail_on_unused and report["unused"]:
            raise CommandError(f"{len(report['unused'])} flag(s) are referenced nowhere")

    def _print(self, report: dict[str, Any], roots: list[Path]) -> None:
        self.stdout.write(
            f"Scanned {report['files']} file(s) under {', '.join(map(str, roots))}: "
            f"{report['references']} reference(s) to {report['referenced']} flag(s), "
            f"{len(report['dynamic'])} dynamic."
        )
        if report["unused"]:
            self.stdout.write("Unused (in ZooKeeper, referenced nowhere):")
            for name in report["unused"]:
                self.stdout.write(f"  {name}")
        if report["missing"]:
            self.stdout.write("Missing (referenced, not in ZooKeeper, not declared):")
            for item in report["missing"]:
                where = ", ".join(f"{r['path']}:{r['line']}" for r in item["references"])
                self.stdout.write(f"  {item['name']}  ({where})")
        if report["dynamic"]:
            self.stdout.write("Dynamic (built at run time):")
            for ref in report["dynamic"]:
                self.stdout.write(f"  {ref['path']}:{ref['line']}  {ref['how']}")
        for error in report["errors"]:
            self.stderr.write(f"not scanned: {error}")
        self.stdout.write(DYNAMIC_NOTE)


def _report(result: Scan, existing: dict[str, Any]) -> dict[str, Any]:
    referenced = result.names
    declared = {r.name for r in result.references if r.how == "declared"}
    missing: dict[str, list[dict[str, Any]]] = {}
    for ref in result.references:
        if ref.name is not None and ref.name not in existing and ref.name not in declared:
            missing.setdefault(ref.name, []).append(
                {"path": ref.path, "line": ref.line, "how": ref.how}
            )
    return {
        "unused": sorted(set(existing) - referenced),
        "missing": [{"name": name, "references": refs} for name, refs in sorted(missing.items())],
        "dynamic": [{"path": r.path, "line": r.line, "how": r.how} for r in result.dynamic],
        "files": len({r.path for r in result.references if r.how != "declared"}),
        "references": len(result.references),
        "referenced": len(referenced),
        "errors": result.errors,
        "note": DYNAMIC_NOTE,
    }


def _json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


COMMANDS: tuple[type[Subcommand], ...] = (References,)
