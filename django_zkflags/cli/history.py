"""A flag's history: history, revert, show, delete (not built yet)."""

from __future__ import annotations

from .base import Subcommand

COMMANDS: tuple[type[Subcommand], ...] = ()
