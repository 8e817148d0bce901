"""System checks. Ids are stable; see docs/checks.md.

* zkflags.E001 -- ZKFLAGS_URL cannot be parsed.
* zkflags.E002 -- ZKFLAGS has an unknown key or a value of the wrong type (or a
  MAX_SNAPSHOT_BYTES below MAX_WRITE_BYTES).
* zkflags.E003 -- ZKFLAGS["TESTING_OVERRIDES"] is on while DEBUG is False.
* zkflags.W001 -- FlagMiddleware is not in MIDDLEWARE.
* zkflags.W002 -- FlagMiddleware comes before AuthenticationMiddleware.
* zkflags.W004 -- ZKFLAGS_URL holds a password that DEFAULT_EXCEPTION_REPORTER_FILTER would
  show on the technical 500 page and in the error e-mails to ADMINS.
* zkflags.W005 -- (``check --deploy``) ZKFLAGS_URL has no credentials while DEBUG is False:
  the znodes the app creates are world-writable.
* zkflags.W006 -- a flag declared in ZKFLAGS["FLAGS"] has a default that is not a boolean.
* zkflags.W007 -- a flag declared in ZKFLAGS["FLAGS"] has an invalid name or unknown keys.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.http import HttpRequest
from django.utils.module_loading import import_string

from . import conf
from .redaction import redact

MIDDLEWARE_PATH = "django_zkflags.middleware.FlagMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    try:
        conf.parse_url(conf.get_url_string(), password=conf.get_password())
    except (ValueError, TypeError, AttributeError) as exc:
        errors.append(
            Error(
                f"ZKFLAGS_URL is malformed: {redact(str(exc))}",
                hint="Use zk://[user[:password]@]host:2181[,host2:2181]/root/path "
                "(with zk://user@... the password comes from ZKFLAGS_PASSWORD)",
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


FILTER_HINT = (
    "Set DEFAULT_EXCEPTION_REPORTER_FILTER = 'django_zkflags.debug.SafeExceptionReporterFilter', "
    "or take the password out of the URL: ZKFLAGS_URL = 'zk://user@host:2181/root' with the "
    "password in ZKFLAGS_PASSWORD (a setting Django hides by its name, or an environment "
    "variable, or a file named by ZKFLAGS_PASSWORD_FILE)."
)


@register(Tags.security)
def check_password_shown(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """zkflags.W004: ask the configured exception reporter filter to cleanse ZKFLAGS_URL the
    way an error report does -- as a setting when it is one, as an entry of request.META
    when it comes from the environment (runserver copies the environment there) -- and warn
    if the password is still in what it returns."""
    url = conf.get_url_string()
    _, password = conf.url_credentials(url) if isinstance(url, str) else (None, None)
    if not password:
        return []
    path = settings.DEFAULT_EXCEPTION_REPORTER_FILTER
    reporter_filter = import_string(path)()
    if getattr(settings, "ZKFLAGS_URL", None) is not None:
        where = "the settings"
        shown = reporter_filter.get_safe_settings().get("ZKFLAGS_URL")
    else:
        where = "request.META (the environment, under runserver)"
        request = HttpRequest()
        request.META = {"ZKFLAGS_URL": url}
        shown = reporter_filter.get_safe_request_meta(request).get("ZKFLAGS_URL")
    if password not in str(shown):
        return []
    return [
        Warning(
            f"ZKFLAGS_URL holds a password, and DEFAULT_EXCEPTION_REPORTER_FILTER ({path}) "
            f"leaves it in {where}: the technical 500 page and the error e-mails to ADMINS "
            "show it.",
            hint=FILTER_HINT,
            id="zkflags.W004",
        )
    ]


@register(Tags.security, deploy=True)
def check_open_acl(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """zkflags.W005, with ``check --deploy`` (like Django's own security warnings; Django's
    test runner runs the other checks with DEBUG False)."""
    if settings.DEBUG:
        return []
    try:
        url = conf.parse_url(conf.get_url_string(), password=conf.get_password())
    except (ValueError, TypeError, AttributeError):
        return []  # zkflags.E001
    if url.has_credentials:
        return []
    return [
        Warning(
            "ZKFLAGS_URL has no credentials: the znodes django-zkflags creates are "
            "world-writable (OPEN_ACL_UNSAFE), so anyone who can reach ZooKeeper can change "
            "every flag.",
            hint="Give the app a digest identity: ZKFLAGS_URL = 'zk://user@host:2181/root' "
            "with the password in ZKFLAGS_PASSWORD. Znodes it creates from then on are "
            "writable by that identity only (readable by all); znodes created before keep "
            "their ACL until you change it (zkCli.sh setAcl).",
            id="zkflags.W005",
        )
    ]


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


@register(Tags.compatibility)
def check_declared_flags(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """zkflags.W006 (a declared default that is not a boolean) and zkflags.W007 (a declared
    name that is not a valid flag name, or an entry that is not understood)."""
    from .rules import InvalidFlag, validate_name

    declared = (getattr(settings, "ZKFLAGS", {}) or {}).get("FLAGS") or {}
    problems: list[Any] = []
    if not isinstance(declared, dict):
        return [Error('ZKFLAGS["FLAGS"] must be a dict of flag names', id="zkflags.E002")]
    for name, spec in declared.items():
        try:
            validate_name(name)
        except InvalidFlag as exc:
            problems.append(Warning(f'ZKFLAGS["FLAGS"]: {exc}; it is ignored', id="zkflags.W007"))
            continue
        default = spec.get("default", False) if isinstance(spec, dict) else spec
        if not isinstance(default, bool):
            problems.append(
                Warning(
                    f'ZKFLAGS["FLAGS"][{name!r}]: the default must be True or False, got '
                    f"{default!r}; the flag is ignored",
                    hint='Write {"name": False} or {"name": {"default": True, "note": "..."}}',
                    id="zkflags.W006",
                )
            )
        elif isinstance(spec, dict) and set(spec) - {"default", "note", "value"}:
            unknown = sorted(set(spec) - {"default", "note", "value"})
            problems.append(
                Warning(
                    f'ZKFLAGS["FLAGS"][{name!r}] has unknown key(s) {unknown}; known: '
                    "default, note, value",
                    id="zkflags.W007",
                )
            )
    return problems
