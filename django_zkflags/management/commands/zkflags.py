"""``manage.py zkflags``: look at and repair flags from the command line.

zkflags status                 the connection and the snapshot this process sees
zkflags list                   every flag with its rule, from ZooKeeper
zkflags set NAME --on|--off|--rules [--percent P]   change a flag (audited)
zkflags env [NAME --parent P | NAME --delete]       list or define environments
zkflags env --replace FILE     replace the whole environments document (a JSON file, or
                               '-' for standard input): validated, versioned, audited
zkflags host NAME ENV | NAME --delete                peg a host to an environment
zkflags check                  report drift between ZooKeeper and the admin's rows
zkflags repair                 rebuild the snapshot from the flag znodes and make the
                               rows mirror ZooKeeper (audited as "repaired")
zkflags restore [NAME...]      write admin rows back to ZooKeeper for flags it lost

Every change goes through django_zkflags.services, audited with source "command" and the
operating system's user.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ... import runtime, services
from ...exceptions import FlagWriteError
from ...rules import FlagRule, InvalidFlag, validate_name, validate_percent
from ...snapshot import CorruptSnapshot


class Command(BaseCommand):
    help = "Inspect, change and repair django-zkflags flags in ZooKeeper."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        statusp = sub.add_parser("status", help="Connection and snapshot of this process.")
        statusp.add_argument(
            "--wait", type=float, default=3.0, help="seconds to wait for the first snapshot"
        )
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
        envp.add_argument(
            "--replace",
            metavar="FILE",
            help="replace the whole environments document with this JSON file ('-': standard "
            "input), e.g. to repair one edited by hand into something invalid",
        )
        hostp = sub.add_parser(
            "host", help="Peg a host to an environment: host NAME ENV | --delete"
        )
        hostp.add_argument("name")
        hostp.add_argument("environment", nargs="?")
        hostp.add_argument("--delete", action="store_true")
        sub.add_parser("check", help="Report drift between ZooKeeper and the database (exit 1).")
        repairp = sub.add_parser(
            "repair", help="Rebuild the snapshot and make the rows mirror ZooKeeper."
        )
        repairp.add_argument(
            "--delete-orphan-rows",
            action="store_true",
            help="also delete admin rows of flags ZooKeeper does not have",
        )
        restorep = sub.add_parser(
            "restore", help="Write admin rows back to ZooKeeper for flags it does not have."
        )
        restorep.add_argument("names", nargs="*", help="only these flags")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"do_{action}")(**options)
        except (FlagWriteError, InvalidFlag, CorruptSnapshot) as exc:
            raise CommandError(str(exc)) from exc

    def do_status(self, wait: float = 3.0, **options: Any) -> None:
        rt = runtime.start(wait=wait)
        self.stdout.write(json.dumps(rt.status(), indent=2, default=str))

    def do_list(self, **options: Any) -> None:
        entries = services.read_snapshot().flags
        for name in sorted(entries):
            try:
                rule = FlagRule.from_document(entries[name], name=name)
                self.stdout.write(f"{name}\tv{entries[name].get('version')}\t{rule.summary()}")
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
            except (ValueError, RecursionError) as exc:
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

        audit = services.update_flag(name, change, actor=services.command_actor(), source="command")
        stored = services.read_flag(name)
        assert stored.rule is not None
        rule = stored.rule.for_environment((env,) if env else ())
        where = f" in {env}" if env else ""
        unchanged = " (unchanged)" if audit is None else ""
        self.stdout.write(f"{name}{where}: {rule.summary()} (version {stored.version}){unchanged}")

    def do_env(
        self,
        name: str | None,
        parent: str | None,
        delete: bool,
        replace: str | None = None,
        **options: Any,
    ) -> None:
        if replace is not None:
            if name is not None or parent is not None or delete:
                raise CommandError("env --replace FILE takes no NAME, --parent or --delete")
            self.replace_environments(replace)
            return
        if name is None:
            stored = services.read_environments()
            if stored.error is not None:
                self.stderr.write(f"The environments document is invalid: {stored.error}")
            for env, env_parent in sorted(stored.document["parents"].items()):
                self.stdout.write(f"{env}\tparent={env_parent or '-'}")
            for host, env in sorted(stored.document["hosts"].items()):
                self.stdout.write(f"host {host}\t-> {env}")
            return

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            parents = dict(doc["parents"])
            if delete:
                if name not in parents:
                    raise CommandError(f"No environment {name!r}")
                parents.pop(name)
            else:
                parents[name] = parent
            return {**doc, "parents": parents}

        services.update_environments(change, actor=services.command_actor(), source="command")
        what = "deleted" if delete else f"parent={parent or '-'}"
        self.stdout.write(f"environment {name}: {what}")

    def replace_environments(self, path: str) -> None:
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CommandError(f"{path} is not JSON: {exc}") from None
        stored = services.read_environments()
        was = f" (it was invalid: {stored.error})" if stored.error is not None else ""
        change = services.save_environments(
            doc,
            expected_version=stored.version,
            actor=services.command_actor(),
            source="command",
        )
        if change is None:
            self.stdout.write(f"environments unchanged (version {stored.version})")
        else:
            self.stdout.write(f"environments replaced (version {change.zk_version}){was}")

    def do_host(self, name: str, environment: str | None, delete: bool, **options: Any) -> None:
        if not delete and environment is None:
            raise CommandError("host NAME ENVIRONMENT (or host NAME --delete)")

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            hosts = dict(doc["hosts"])
            if delete:
                hosts.pop(name, None)
            else:
                hosts[name] = environment
            return {**doc, "hosts": hosts}

        services.update_environments(change, actor=services.command_actor(), source="command")
        self.stdout.write(f"host {name}: {'unpegged' if delete else f'pegged to {environment}'}")

    def do_check(self, **options: Any) -> None:
        drift = services.check()
        for name, what in drift.problems:
            self.stdout.write(f"{name}: {what}")
        if drift.problems:
            fix = "restore" if drift.zookeeper_lost_data else "repair"
            raise CommandError(f"{len(drift.problems)} problem(s); run 'manage.py zkflags {fix}'")
        self.stdout.write("ZooKeeper and the admin agree.")

    def do_repair(self, delete_orphan_rows: bool = False, **options: Any) -> None:
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

    def do_restore(self, names: list[str], **options: Any) -> None:
        restored = services.restore(actor=services.command_actor(), names=names or None)
        for change in restored:
            self.stdout.write(
                f"{change.flag_name}: restored to ZooKeeper (version {change.zk_version})"
            )
        self.stdout.write(f"Restored {len(restored)} flag(s).")
