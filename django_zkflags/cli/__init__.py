"""``manage.py zkflags`` subcommands (see :mod:`django_zkflags.management.commands.zkflags`).
Each topic module lists its subcommands in ``COMMANDS``."""

from __future__ import annotations

from . import environments, files, flags, fleet, history, integrity, references, schedules, waffle
from .base import Subcommand

SUBCOMMANDS: dict[str, type[Subcommand]] = {
    cls.name: cls
    for module in (
        flags,
        environments,
        integrity,
        history,
        fleet,
        references,
        files,
        waffle,
        schedules,
    )
    for cls in module.COMMANDS
}
