"""Flags: list, set. (``status`` is in :mod:`.fleet`.)"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError

from .. import services
from ..rules import FlagRule, InvalidFlag, validate_name, validate_percent
from .base import Subcommand


class List(Subcommand):
    name = "list"
    help = "Every flag in ZooKeeper."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        pass

    def handle(self, **options: Any) -> None:
        entries = services.read_snapshot().flags
        for name in sorted(entries):
            try:
                rule = FlagRule.from_document(entries[name], name=name)
                self.stdout.write(f"{name}\tv{entries[name].get('version')}\t{rule.summary()}")
            except InvalidFlag as exc:
                self.stdout.write(f"{name}\tINVALID\t{exc}")


class Set(Subcommand):
    name = "set"
    help = "Change or create a flag."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("name")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--on", dest="everyone", action="store_const", const=True, default="keep")
        mode.add_argument("--off", dest="everyone", action="store_const", const=False)
        mode.add_argument("--rules", dest="everyone", action="store_const", const=None)
        parser.add_argument("--percent", type=float)
        parser.add_argument("--note")
        parser.add_argument("--value", help="live configuration value, as JSON ('null' clears it)")
        parser.add_argument(
            "--env", help="change the override of this environment instead of the base rule"
        )
        parser.add_argument(
            "--requires",
            metavar="A,B",
            help="prerequisites: flags that must all be on too, comma-separated ('' clears); "
            "they must exist, and a cycle is refused",
        )
        exposure = parser.add_mutually_exclusive_group()
        exposure.add_argument(
            "--public",
            dest="public",
            action="store_const",
            const=True,
            default=None,
            help="serve the flag to browsers (zkflags/flags.json)",
        )
        exposure.add_argument(
            "--private", dest="public", action="store_const", const=False, help="stop serving it"
        )

    def handle(
        self,
        name: str,
        everyone: Any,
        percent: float | None,
        note: str | None,
        value: str | None = None,
        env: str | None = None,
        requires: str | None = None,
        public: bool | None = None,
        **options: Any,
    ) -> None:
        validate_name(name)
        changes: dict[str, Any] = {}
        flag_wide: dict[str, Any] = {}  # not overridable per environment
        if requires is not None:
            flag_wide["requires"] = [part.strip() for part in requires.split(",") if part.strip()]
        if public is not None:
            flag_wide["public"] = public
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
            doc.update(flag_wide)
            if note is not None:
                doc["note"] = note
            return doc

        audit = services.update_flag(name, change, actor=services.command_actor(), source="command")
        stored = services.read_flag(name)
        assert stored.rule is not None
        rule = stored.rule.for_environment((env,) if env else ())
        where = f" in {env}" if env else ""
        unchanged = " (unchanged)" if audit is None else ""
        shown = ", public" if rule.public else ""
        self.stdout.write(
            f"{name}{where}: {rule.summary()} (version {stored.version}{shown}){unchanged}"
        )


COMMANDS: tuple[type[Subcommand], ...] = (
    List,
    Set,
)
