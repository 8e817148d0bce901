"""The public API, evaluated against the in-memory snapshot only."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from . import conf
from .cache import store
from .snapshot import Snapshot


def user_group_ids(user: Any) -> Iterable[int]:
    """The user's group ids, queried once per user object and kept on it.

    Only flags with group rules ask for it; request.user lives for one request.
    """
    ids = getattr(user, "_zkflags_group_ids", None)
    if ids is None:
        ids = frozenset(user.groups.values_list("pk", flat=True))
        try:
            user._zkflags_group_ids = ids
        except AttributeError:
            pass
    return ids


def _value_in(snapshot: Snapshot, name: str, default: Any) -> Any:
    rule = snapshot.flags.get(name)
    if rule is None or rule.value is None:
        return default
    return rule.value


def flag_is_active(request: Any, name: str) -> bool:
    """Is flag ``name`` on for this request?

    With :class:`~django_zkflags.middleware.FlagMiddleware` the answer comes from the
    snapshot frozen at the start of the request.
    """
    flags = getattr(request, "flags", None)
    if isinstance(flags, RequestFlags):
        return flags.is_active(name)
    user = getattr(request, "user", None)
    snapshot = store.current
    rule = snapshot.flags.get(name)
    if rule is None:
        return snapshot.default_active
    anonymous_id = None
    if rule.threshold and not (user is not None and user.is_authenticated):
        anonymous_id = read_anonymous_id(request)
    return rule.is_active(user, anonymous_id, user_group_ids)


def flag_is_active_for_user(user: Any, name: str) -> bool:
    """Is flag ``name`` on for ``user`` (for code outside a request)?"""
    snapshot = store.current
    rule = snapshot.flags.get(name)
    if rule is None:
        return snapshot.default_active
    return rule.is_active(user, None, user_group_ids)


def get_value(name: str, default: Any = None, request: Any = None) -> Any:
    """The live configuration value of flag ``name`` in this process's environment, or
    ``default`` when the flag does not exist or has no value.

    Values are read-only (objects are mappings, lists are tuples). With ``request`` (and
    the middleware) the value comes from the request's snapshot.
    """
    flags = getattr(request, "flags", None) if request is not None else None
    snapshot = flags.snapshot if isinstance(flags, RequestFlags) else store.current
    return _value_in(snapshot, name, default)


def get_snapshot() -> Snapshot:
    """The current snapshot (immutable), for code that wants several consistent answers."""
    return store.current


class RequestFlags:
    """The flags as one request sees them: one snapshot for the whole request."""

    __slots__ = (
        "snapshot",
        "user",
        "request",
        "anonymous_id",
        "new_anonymous_id",
        "_answers",
        "_forced",
    )

    def __init__(self, request: Any, snapshot: Snapshot | None = None) -> None:
        self.snapshot = store.current if snapshot is None else snapshot
        self.request = request
        self.user = getattr(request, "user", None)
        self.anonymous_id: str | None = None
        self.new_anonymous_id = False
        self._answers: dict[str, bool] = {}
        self._forced: dict[str, bool] | None = None
        if conf.get("TESTING_OVERRIDES") and settings.DEBUG:  # never in production
            self._forced = _parse_forced(request.GET.get(conf.get("TESTING_OVERRIDES_PARAM"), ""))

    def is_active(self, name: str) -> bool:
        answer = self._answers.get(name)
        if answer is not None:
            return answer
        if self._forced and name in self._forced:
            answer = self._forced[name]
        else:
            rule = self.snapshot.flags.get(name)
            if rule is None:
                answer = self.snapshot.default_active
            else:
                user = self.user
                if (
                    self.anonymous_id is None
                    and rule.threshold
                    and rule.everyone is None
                    and not (user is not None and user.is_authenticated)
                ):
                    # An anonymous visitor meets a percentage: it needs a stable identity.
                    self.anonymous_id = read_anonymous_id(self.request)
                    if self.anonymous_id is None:
                        self.anonymous_id = secrets.token_urlsafe(16)
                        self.new_anonymous_id = True
                answer = rule.is_active(user, self.anonymous_id, user_group_ids)
        self._answers[name] = answer
        return answer

    __getitem__ = is_active

    def value(self, name: str, default: Any = None) -> Any:
        """The flag's live configuration value, from this request's snapshot."""
        return _value_in(self.snapshot, name, default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.is_active(name)

    def active_names(self) -> list[str]:
        return sorted(name for name in self.snapshot.flags if self.is_active(name))


ANONYMOUS_SALT = "django_zkflags.anonymous"


def read_anonymous_id(request: Any) -> str | None:
    """The visitor's id from its signed cookie (signed so nobody picks their bucket)."""
    get_signed_cookie = getattr(request, "get_signed_cookie", None)
    if get_signed_cookie is None:
        return None
    return get_signed_cookie(conf.get("ANONYMOUS_COOKIE"), default=None, salt=ANONYMOUS_SALT)


def _parse_forced(value: str) -> dict[str, bool]:
    forced: dict[str, bool] = {}
    for item in value.split(","):
        name, _, state = item.partition(":")
        if name and state in ("on", "off", "1", "0"):
            forced[name] = state in ("on", "1")
    return forced
