"""The public API, answered from the in-memory snapshot only (no network, no database
except a user's group ids, once per user object, for flags with group rules)."""

from __future__ import annotations

from typing import Any

from .cache import store
from .evaluation import RequestFlags, evaluate, value_in
from .snapshot import Snapshot

__all__ = ["RequestFlags", "flag_is_active", "flag_is_active_for_user", "get_snapshot", "get_value"]


def flag_is_active(request: Any, name: str) -> bool:
    """Is flag ``name`` on for this request?

    With :class:`~django_zkflags.middleware.FlagMiddleware` the answer comes from the
    snapshot frozen at the start of the request; without it, from the current snapshot.
    """
    flags = getattr(request, "flags", None)
    if isinstance(flags, RequestFlags):
        return flags.is_active(name)
    return evaluate(store.current, name, getattr(request, "user", None), request)


def flag_is_active_for_user(user: Any, name: str) -> bool:
    """Is flag ``name`` on for ``user`` (for code outside a request)?"""
    return evaluate(store.current, name, user)


def get_value(name: str, default: Any = None, request: Any = None) -> Any:
    """The live configuration value of flag ``name`` in this process's environment, or
    ``default`` when the flag does not exist or has no value.

    Values are read-only (objects are mappings, lists are tuples). With ``request`` (and
    the middleware) the value comes from the request's snapshot.
    """
    flags = getattr(request, "flags", None) if request is not None else None
    snapshot = flags.snapshot if isinstance(flags, RequestFlags) else store.current
    return value_in(snapshot, name, default)


def get_snapshot() -> Snapshot:
    """The current snapshot (immutable), for code that wants several consistent answers."""
    return store.current
