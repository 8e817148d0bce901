"""System checks. Ids are stable; see docs/checks.md.

* zkflags.E001 -- ZKFLAGS_URL cannot be parsed.
* zkflags.E002 -- ZKFLAGS has an unknown key or a value of the wrong type (or a
  MAX_SNAPSHOT_BYTES below MAX_WRITE_BYTES).
* zkflags.E003 -- ZKFLAGS["TESTING_OVERRIDES"] is on while DEBUG is False.
* zkflags.W001 -- FlagMiddleware is not in MIDDLEWARE.
* zkflags.W002 -- FlagMiddleware comes before AuthenticationMiddleware.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from . import conf

MIDDLEWARE_PATH = "django_zkflags.middleware.FlagMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    try:
        conf.parse_url(conf.get_url_string())
    except (ValueError, TypeError, AttributeError) as exc:
        errors.append(
            Error(
                f"ZKFLAGS_URL is malformed: {exc}",
                hint="Use zk://[user:password@]host:2181[,host2:2181]/root/path",
                id="zkflags.E001",
            )
        )
    user_config = getattr(settings, "ZKFLAGS", {}) or {}
    if not isinstance(user_config, dict):
        errors.append(Error("ZKFLAGS must be a dict", id="zkflags.E002"))
        user_config = {}
    for key, value in user_config.items():
        if key not in conf.DEFAULTS:
            errors.append(
                Error(
                    f"ZKFLAGS has an unknown key {key!r}",
                    hint=f"Known keys: {', '.join(sorted(conf.DEFAULTS))}",
                    id="zkflags.E002",
                )
            )
            continue
        default = conf.DEFAULTS[key]
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            errors.append(
                Error(f"ZKFLAGS[{key!r}] must be a non-negative number", id="zkflags.E002")
            )
        elif isinstance(default, bool) and not isinstance(value, bool):
            errors.append(Error(f"ZKFLAGS[{key!r}] must be True or False", id="zkflags.E002"))
    errors.extend(_check_snapshot_bound())
    if conf.get("TESTING_OVERRIDES") and not settings.DEBUG:
        errors.append(
            Error(
                "ZKFLAGS['TESTING_OVERRIDES'] lets any request force flags; it is refused "
                "when DEBUG is False.",
                id="zkflags.E003",
            )
        )
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        errors.append(
            Warning(
                f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: requests will not get one consistent "
                "view of the flags, and anonymous visitors no stable percentage bucket.",
                hint=f"Add it after {AUTH_MIDDLEWARE}.",
                id="zkflags.W001",
            )
        )
    elif AUTH_MIDDLEWARE in middleware and middleware.index(MIDDLEWARE_PATH) < middleware.index(
        AUTH_MIDDLEWARE
    ):
        errors.append(
            Warning(
                f"{MIDDLEWARE_PATH} comes before {AUTH_MIDDLEWARE}: request.user is not set yet.",
                id="zkflags.W002",
            )
        )
    return errors


def _check_snapshot_bound() -> list[Any]:
    """A snapshot of MAX_WRITE_BYTES of plain JSON must be readable."""
    try:
        bound, write = int(conf.get("MAX_SNAPSHOT_BYTES")), int(conf.get("MAX_WRITE_BYTES"))
    except (TypeError, ValueError):
        return []  # reported above as a wrong type
    if bound >= write:
        return []
    return [
        Error(
            f"ZKFLAGS['MAX_SNAPSHOT_BYTES'] ({bound}) is below ZKFLAGS['MAX_WRITE_BYTES'] "
            f"({write}): processes would refuse snapshots the app writes",
            hint="Leave it at its default (64 MiB) unless memory is very tight.",
            id="zkflags.E002",
        )
    ]
