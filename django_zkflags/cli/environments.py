"""Environments: env, host."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandError

from .. import services
from .base import Subcommand


class Env(Subcommand):
    name = "env"
    help = "Define environments: env NAME [--parent P] | --delete | --replace FILE"

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("name", nargs="?")
        parser.add_argument("--parent")
        parser.add_argument("--delete", action="store_true")
        parser.add_argument(
            "--replace",
            metavar="FILE",
            help="replace the whole environments document with this JSON file ('-': standard "
            "input), e.g. to repair one edited by hand into something invalid",
        )

    def handle(
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


class Host(Subcommand):
    name = "host"
    help = "Peg a host to an environment: host NAME ENV | --delete"

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument("environment", nargs="?")
        parser.add_argument("--delete", action="store_true")

    def handle(self, name: str, environment: str | None, delete: bool, **options: Any) -> None:
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


COMMANDS: tuple[type[Subcommand], ...] = (
    Env,
    Host,
)
