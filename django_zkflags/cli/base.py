"""The ``manage.py zkflags`` subcommands, one module per topic. Each subcommand is a small
class: its name, its arguments, and ``handle`` (which writes to ``self.stdout``). Every
change goes through :mod:`django_zkflags.services`, audited with source "command" and the
operating system's user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TextIO


class Subcommand:
    name: ClassVar[str]
    help: ClassVar[str]

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        pass

    #: ``handle(**options)``: the parsed arguments as keywords.
    handle: Callable[..., None]
