"""The fleet: fleet (not built yet)."""

from __future__ import annotations

from .base import Subcommand

COMMANDS: tuple[type[Subcommand], ...] = ()
