"""django-zkflags: feature flags and live configuration kept in Apache ZooKeeper.

The public API::

    from django_zkflags import flag_is_active, flag_is_active_for_user, get_value

and, for async code, ``aflag_is_active``, ``aflag_is_active_for_user`` and ``aget_value``;
``explain`` (``aexplain``) says why a flag is on or off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "aexplain",
    "aflag_is_active",
    "aflag_is_active_for_user",
    "aget_value",
    "explain",
    "flag_is_active",
    "flag_is_active_for_user",
    "get_snapshot",
    "get_value",
    "status",
    "__version__",
]

if TYPE_CHECKING:
    from .api import (
        aexplain,
        aflag_is_active,
        aflag_is_active_for_user,
        aget_value,
        explain,
        flag_is_active,
        flag_is_active_for_user,
        get_snapshot,
        get_value,
    )
    from .runtime import status


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (settings, INSTALLED_APPS) pulls in nothing.
    if name in (
        "aexplain",
        "aflag_is_active",
        "aflag_is_active_for_user",
        "aget_value",
        "explain",
        "flag_is_active",
        "flag_is_active_for_user",
        "get_snapshot",
        "get_value",
    ):
        from . import api

        value = getattr(api, name)
    elif name == "status":
        from .runtime import status as value
    else:
        raise AttributeError(f"module 'django_zkflags' has no attribute {name!r}")
    globals()[name] = value
    return value
