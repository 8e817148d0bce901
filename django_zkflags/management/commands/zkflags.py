"""``manage.py zkflags``: look at and repair flags from the command line.

zkflags status                 the connection and the snapshot this process sees
zkflags list                   every flag with its rule, from ZooKeeper
zkflags set NAME --on|--off|--rules [--percent P]   change a flag (audited)
               [--requires A,B] [--public|--private]  its prerequisites; served to browsers
zkflags env [NAME --parent P | NAME --delete]       list or define environments
zkflags env --replace FILE     replace the whole environments document (a JSON file, or
                               '-' for standard input): validated, versioned, audited
zkflags host NAME ENV | NAME --delete                peg a host to an environment
zkflags check                  report drift between ZooKeeper and the admin's rows
zkflags repair                 rebuild the snapshot from the flag znodes and make the
                               rows mirror ZooKeeper (audited as "repaired")
zkflags restore [NAME...]      write admin rows back to ZooKeeper for flags it lost
zkflags history NAME [--limit N]   a flag's changes, newest first, with what each changed
zkflags revert NAME --version N    restore a flag as it was at ZooKeeper version N (a new
                               version; refused if the flag moves meanwhile)
zkflags show NAME              the flag as ZooKeeper holds it, and what this process serves
zkflags delete NAME [--yes]    delete a flag (asks first); 'revert' brings it back
zkflags fleet [--json]         every running process and the snapshot it serves
zkflags references [--json] [--fail-on-unused]   flags the code uses, and does not
zkflags schedule NAME --at WHEN --on|--off|--percent N|--value JSON [--force]
                               change a flag at a time, once (run by the steward)
zkflags schedule --list | --cancel ID      pending, refused and recently run schedules
zkflags rollout NAME --steps 1,5,25 --every 30m | --pause | --resume | --abort
zkflags steward [--status]     run a steward (one acts per root), or list them
zkflags export PATH            every flag and the environments: .json, .yaml, or a directory
zkflags import PATH [--dry-run] [--prune] [--force]   apply a file: all or nothing
zkflags import-waffle [--dry-run] [--force]   copy django-waffle's flags, switches, samples

Every change goes through django_zkflags.services, audited with source "command" and the
operating system's user.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...cli import SUBCOMMANDS
from ...exceptions import FlagWriteError
from ...rules import InvalidFlag
from ...snapshot import CorruptSnapshot


class Command(BaseCommand):
    help = "Inspect, change and repair django-zkflags flags in ZooKeeper."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for subcommand in SUBCOMMANDS.values():
            subcommand.add_arguments(sub.add_parser(subcommand.name, help=subcommand.help))

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            SUBCOMMANDS[action](self.stdout, self.stderr).handle(**options)
        except (FlagWriteError, InvalidFlag, CorruptSnapshot) as exc:
            raise CommandError(str(exc)) from exc
