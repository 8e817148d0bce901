"""``manage.py zkflags`` subcommands (see :mod:`django_zkflags.management.commands.zkflags`)."""

from __future__ import annotations

from .base import Subcommand
from .environments import Env, Host
from .flags import List, Set, Status
from .integrity import Check, Repair, Restore

SUBCOMMANDS: dict[str, type[Subcommand]] = {
    cls.name: cls for cls in (Status, List, Set, Env, Host, Check, Repair, Restore)
}
