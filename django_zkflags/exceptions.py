"""Errors a caller of django-zkflags can catch. ``InvalidFlag`` (bad input) lives with the
rules it protects, in :mod:`django_zkflags.rules`, and is re-exported here."""

from __future__ import annotations

from typing import Any

from .rules import InvalidFlag

__all__ = [
    "FlagConflict",
    "FlagRequired",
    "FlagTooLarge",
    "FlagWriteError",
    "InvalidFlag",
    "PermissionDenied",
    "ZooKeeperUnavailable",
]


class FlagWriteError(Exception):
    """A change was refused or could not be made."""


class ZooKeeperUnavailable(FlagWriteError):
    """ZooKeeper could not be reached (or has no quorum); the message says whether the
    change may still have been applied."""


class FlagConflict(FlagWriteError):
    """Someone else changed the flag (or the environments) since the editor read it."""

    def __init__(
        self, message: str, *, current: dict[str, Any] | None, current_version: int | None
    ) -> None:
        super().__init__(message)
        self.current = current
        self.current_version = current_version


class FlagRequired(FlagWriteError):
    """A flag other flags require cannot be deleted (they would be off for everyone):
    take it out of their prerequisites first."""


class FlagTooLarge(FlagWriteError):
    """The change would make a znode larger than one ZooKeeper write may be."""


class PermissionDenied(FlagWriteError):
    """ZooKeeper's ACL refused the write (the credentials in ZKFLAGS_URL)."""
