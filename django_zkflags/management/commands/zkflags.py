"""``manage.py zkflags``: look at and repair flags from the command line.

zkflags status                 the connection and the snapshot this process sees
zkflags list                   every flag with its rule, from ZooKeeper
zkflags set NAME --on|--off|--rules [--percent P]   change a flag (audited)
zkflags check                  report drift between ZooKeeper and the admin's rows
zkflags repair                 rebuild the snapshot from the flag znodes and make the
                               rows mirror ZooKeeper (audited as "repaired")
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ... import runtime, services
from ...models import Flag, FlagChange
from ...rules import FlagRule, InvalidFlag, validate_name, validate_percent
from ...snapshot import CorruptSnapshot
from ...zk import FlagWriteError, WriteResult


class Command(BaseCommand):
    help = "Inspect, change and repair django-zkflags flags in ZooKeeper."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="Connection and snapshot of this process.")
        sub.add_parser("list", help="Every flag in ZooKeeper.")
        setp = sub.add_parser("set", help="Change or create a flag.")
        setp.add_argument("name")
        mode = setp.add_mutually_exclusive_group()
        mode.add_argument("--on", dest="everyone", action="store_const", const=True, default="keep")
        mode.add_argument("--off", dest="everyone", action="store_const", const=False)
        mode.add_argument("--rules", dest="everyone", action="store_const", const=None)
        setp.add_argument("--percent", type=float)
        setp.add_argument("--note")
        setp.add_argument("--value", help="live configuration value, as JSON ('null' clears it)")
        setp.add_argument(
            "--env", help="change the override of this environment instead of the base rule"
        )
        envp = sub.add_parser("env", help="Define environments: env NAME [--parent P] | --delete")
        envp.add_argument("name", nargs="?")
        envp.add_argument("--parent")
        envp.add_argument("--delete", action="store_true")
        hostp = sub.add_parser(
            "host", help="Peg a host to an environment: host NAME ENV | --delete"
        )
        hostp.add_argument("name")
        hostp.add_argument("environment", nargs="?")
        hostp.add_argument("--delete", action="store_true")
        sub.add_parser("check", help="Report drift between ZooKeeper and the database (exit 1).")
        sub.add_parser("repair", help="Rebuild the snapshot and make the rows mirror ZooKeeper.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"do_{action}")(**options)
        except (FlagWriteError, InvalidFlag, CorruptSnapshot) as exc:
            raise CommandError(str(exc)) from exc

    def do_status(self, **options: Any) -> None:
        rt = runtime.start(wait=float(options.get("wait", 3.0) or 3.0))
        self.stdout.write(json.dumps(rt.status(), indent=2, default=str))

    def do_list(self, **options: Any) -> None:
        writer = runtime.writer()
        entries, _version = writer.read_snapshot_entries()
        for name in sorted(entries):
            try:
                rule = FlagRule.from_document(entries[name], name=name)
                self.stdout.write(f"{name}\tv{rule.version}\t{rule.summary()}")
            except InvalidFlag as exc:
                self.stdout.write(f"{name}\tINVALID\t{exc}")

    def do_set(
        self,
        name: str,
        everyone: Any,
        percent: float | None,
        note: str | None,
        value: str | None = None,
        env: str | None = None,
        **options: Any,
    ) -> None:
        validate_name(name)
        changes: dict[str, Any] = {}
        if everyone != "keep":
            changes["everyone"] = everyone
        if percent is not None:
            percent = validate_percent(percent)
            if percent is not None and round(percent, 1) != percent:
                # The admin's row holds one decimal: it could not mirror this (endless drift).
                raise CommandError(f"--percent takes at most one decimal, got {percent:g}")
            changes["percent"] = percent
        if value is not None:
            try:
                changes["value"] = json.loads(value)
            except ValueError as exc:
                raise CommandError(f"--value must be JSON: {exc}") from None
        if env is not None:
            validate_name(env)

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            if env is not None:
                environments = dict(doc.get("environments") or {})
                environments[env] = {**environments.get(env, {}), **changes}
                doc["environments"] = environments
            else:
                doc.update(changes)
            if note is not None:
                doc["note"] = note
            return doc

        audit = services.update_flag(name, change, source="command")
        doc, version = runtime.writer().read_flag(name)
        rule = FlagRule.from_document(doc).for_environment((env,) if env else ())
        where = f" in {env}" if env else ""
        unchanged = " (unchanged)" if audit is None else ""
        self.stdout.write(f"{name}{where}: {rule.summary()} (version {version}){unchanged}")

    def do_env(self, name: str | None, parent: str | None, delete: bool, **options: Any) -> None:
        writer = runtime.writer()
        doc, version = writer.read_environments()
        if name is None:
            for env, env_parent in sorted(doc["parents"].items()):
                self.stdout.write(f"{env}\tparent={env_parent or '-'}")
            for host, env in sorted(doc["hosts"].items()):
                self.stdout.write(f"host {host}\t-> {env}")
            return
        parents = dict(doc["parents"])
        if delete:
            if name not in parents:
                raise CommandError(f"No environment {name!r}")
            parents.pop(name)
        else:
            parents[name] = parent
        self._write_environments({**doc, "parents": parents}, version)
        what = "deleted" if delete else f"parent={parent or '-'}"
        self.stdout.write(f"environment {name}: {what}")

    def do_host(self, name: str, environment: str | None, delete: bool, **options: Any) -> None:
        writer = runtime.writer()
        doc, version = writer.read_environments()
        hosts = dict(doc["hosts"])
        if delete:
            hosts.pop(name, None)
        elif environment is None:
            raise CommandError("host NAME ENVIRONMENT (or host NAME --delete)")
        else:
            hosts[name] = environment
        self._write_environments({**doc, "hosts": hosts}, version)
        self.stdout.write(f"host {name}: {'unpegged' if delete else f'pegged to {environment}'}")

    def _write_environments(self, doc: dict[str, Any], version: int | None) -> None:
        result = runtime.writer().write_environments(doc, version)
        services.record(result, "created" if version is None else "changed", None, "command")

    def _drift(self) -> tuple[list[str], dict[str, Any], dict[str, Any], dict[str, str]]:
        writer = runtime.writer()
        nodes, errors = writer.entries_from_flag_nodes()
        try:
            snapshot, _version = writer.read_snapshot_entries()
        except CorruptSnapshot as exc:
            snapshot = {}
            errors["(snapshot)"] = str(exc)
        problems = []
        for name, error in errors.items():
            problems.append(f"{name}: flag znode is invalid: {error}")
        for name in sorted(set(nodes) | set(snapshot)):
            if nodes.get(name) != snapshot.get(name) and name not in errors:
                problems.append(f"{name}: snapshot differs from the flag znode")
        rows = {f.name: f for f in Flag.objects.prefetch_related("users", "groups")}
        for name in sorted(set(rows) | set(nodes)):
            node, row = nodes.get(name), rows.get(name)
            if row is None:
                problems.append(f"{name}: in ZooKeeper but has no admin row")
            elif node is None:
                if name not in errors:
                    problems.append(f"{name}: admin row but not in ZooKeeper")
            elif not _row_mirrors(row, node):
                problems.append(
                    f"{name}: admin row (v{row.zk_version}) differs from ZooKeeper (v{node['version']})"
                )
        return problems, nodes, rows, errors

    def do_check(self, **options: Any) -> None:
        problems = self._drift()[0]
        for problem in problems:
            self.stdout.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} problem(s); run 'manage.py zkflags repair'")
        self.stdout.write("ZooKeeper and the admin agree.")

    def do_repair(self, **options: Any) -> None:
        writer = runtime.writer()
        bad = writer.rebuild_snapshot()
        for name, error in bad.items():
            self.stdout.write(f"{name}: left as it was in the snapshot ({error})")
        _problems, nodes, rows, errors = self._drift()
        repaired = 0
        for name in sorted(set(rows) | set(nodes)):
            node, row = nodes.get(name), rows.get(name)
            if name in errors:
                continue
            doc = {k: v for k, v in node.items() if k != "version"} if node else None
            before = row.document() if row else None
            if node is None:
                assert row is not None
                Flag.objects.filter(pk=row.pk).delete()  # bypasses ZooKeeper: it is not there
            elif row is None or not _row_mirrors(row, node):
                assert doc is not None
                services.mirror_document(row or Flag(name=name), doc, node["version"])
            else:
                continue
            version = node["version"] if node else None
            result = WriteResult(name, version, before, doc)
            services.record(result, FlagChange.REPAIRED, None, "repair")
            repaired += 1
            self.stdout.write(f"{name}: row now mirrors ZooKeeper")
        self.stdout.write(f"Repaired {repaired} row(s).")


def _row_mirrors(row: Flag, node: dict[str, Any]) -> bool:
    """Does the admin row mirror this znode entry? The row keeps percentages to one
    decimal, so a znode written by other means with more decimals still counts as mirrored."""
    doc = {k: v for k, v in node.items() if k != "version"}
    if doc.get("percent") is not None:
        doc["percent"] = round(doc["percent"], 1)
    return row.zk_version == node["version"] and row.document() == doc
