"""The one evaluator: what the API, the template tags, the decorators and the middleware
all answer with.

:func:`evaluate` decides one flag against one snapshot. :class:`RequestFlags` (set as
``request.flags`` by the middleware) calls it with the snapshot frozen at the start of the
request, memoises the answers, honours ``?zkflags=`` overrides where allowed, and gives an
anonymous visitor that meets a percentage a stable id (set as a cookie by the middleware).

Async code gets the same answers from the same :func:`evaluate`: :func:`aprepare` first
fetches, with the async ORM, what evaluating would otherwise query synchronously (the
request's user, the user's group ids), so the sync path pays nothing for it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.utils.functional import LazyObject, SimpleLazyObject, empty

from . import conf
from .cache import OVERRIDE_NOTE, store
from .rules import (
    _AUTHENTICATED,
    CYCLIC_PREREQUISITE,
    MISSING_PREREQUISITE,
    TOO_MANY_PREREQUISITES,
    FlagRule,
    LinkedRule,
    is_authenticated,
)
from .snapshot import Snapshot

ANONYMOUS_SALT = "django_zkflags.anonymous"


def evaluate(
    snapshot: Snapshot,
    name: str,
    user: Any,
    request: Any = None,
    flags: RequestFlags | None = None,
) -> bool:
    """Is flag ``name`` on for ``user`` in ``snapshot``?

    An anonymous visitor meeting a percentage (the flag's, or a prerequisite's) is
    identified by ``flags`` (which mints an id when the visitor has none), else by
    ``request``'s signed cookie, else not at all. A flag with prerequisites is on only when
    its own rules match and every prerequisite is on for the same user or visitor.
    """
    rule = snapshot.flags.get(name)
    if rule is None:
        return snapshot.default_active
    constant = rule.constant  # on or off for everyone: nothing to evaluate
    if constant is not None:
        return constant
    return evaluate_rule(rule, user, request, flags)


def evaluate_rule(
    rule: FlagRule, user: Any, request: Any = None, flags: RequestFlags | None = None
) -> bool:
    """:func:`evaluate` once the rule is found (and is not on or off for everyone)."""
    if user.__class__ is SimpleLazyObject:
        # request.user: every attribute read goes through a proxy function (about 0.2 µs
        # each, and a rule reads several). Read the user behind it, loaded as any first
        # attribute read would load it.
        if user._wrapped is empty:
            user._setup()
        user = user._wrapped
    if rule.wants_anonymous_id and (request is not None or flags is not None):
        # is_authenticated(user), its lookup written out (a known class: no call)
        authenticated = _AUTHENTICATED.get(user.__class__)
        if authenticated is None:
            authenticated = is_authenticated(user)
    else:
        authenticated = True  # not asked: the rule reads it itself
    if not authenticated:
        if flags is not None:
            anonymous_id = flags.anonymous_id
            if anonymous_id is None:
                anonymous_id = flags.anonymous()
        else:
            anonymous_id = read_anonymous_id(request)
        # The user is anonymous: its rules see only the id (None: is_authenticated is not
        # read a second time).
        return rule.is_active(None, anonymous_id, user_group_ids)
    return rule.is_active(user, None, user_group_ids)


def first_off_prerequisite(
    snapshot: Snapshot,
    name: str,
    user: Any,
    request: Any = None,
    flags: RequestFlags | None = None,
) -> FlagRule | None:
    """The first prerequisite of flag ``name`` (in the order the flag lists them) that is
    off for this user or visitor, as :func:`evaluate` decides it, or None (no such flag, no
    prerequisites, or all of them on). A prerequisite that does not exist, or is in a cycle
    with the flag, comes back as an off rule of that name whose ``note`` says which
    (``rules.MISSING_PREREQUISITE``, ``rules.CYCLIC_PREREQUISITE``)."""
    rule = snapshot.flags.get(name)
    if not isinstance(rule, LinkedRule):
        return None
    anonymous_id = None
    if (
        rule.wants_anonymous_id
        and (request is not None or flags is not None)
        and not is_authenticated(user)
    ):
        anonymous_id = flags.anonymous() if flags is not None else read_anonymous_id(request)
    return rule.off_prerequisite(user, anonymous_id, user_group_ids)


# -- explain: why a flag is on or off (beside the hot path, never on it) -----------------------

#: Every reason :class:`Explanation` gives.
REASONS = (
    "everyone",
    "superusers",
    "staff",
    "authenticated",
    "users",
    "groups",
    "percent",
    "prerequisite",
    "override",
    "missing",
    "no-match",
)


@dataclass(frozen=True)
class Explanation:
    """Why flag ``name`` is on or off for one user or visitor (``django_zkflags.explain``).

    ``active`` is what ``flag_is_active`` answers for the same request (or
    ``flag_is_active_for_user`` for the same user). ``reason`` is one of :data:`REASONS`:

    * "everyone": the flag is on, or off, for everyone;
    * "superusers", "staff", "authenticated", "users", "groups": that rule matched;
    * "percent": the percentage decided: on when ``bucket < threshold`` (or at 100 %), off
      when the visitor's bucket is not under the threshold and no other rule matched;
    * "prerequisite": the flag's own rules matched, but ``prerequisite`` is off: the first
      flag it depends on (directly or through its prerequisites, in the order listed) that
      is off, the root cause;
    * "override": forced by ``override_flag``, or by ``?zkflags=`` (``DEBUG`` with
      ``ZKFLAGS["TESTING_OVERRIDES"]``, with the middleware);
    * "missing": ZooKeeper does not hold the flag: the answer is
      ``ZKFLAGS["UNKNOWN_FLAG_ACTIVE"]``, or the default of a flag declared in
      ``ZKFLAGS["FLAGS"]`` (then ``declared`` is True);
    * "no-match": no rule matched, and no percentage applied (none, or an anonymous visitor
      without an id).

    ``environment``, ``bucket`` and ``threshold`` are those of the rule that decided (for
    "prerequisite", the prerequisite's): ``environment`` is the environment of this
    process's chain whose override set that rule (None: the flag's own rule);
    ``threshold`` (percent x 100, 0 to 10,000) is set for a flag with a percentage, and
    ``bucket`` (0 to 9,999) when the percentage was looked at for an identity (the user's
    pk, an anonymous visitor's id). ``version`` is the flag's znode version (None when
    ZooKeeper does not hold it or it is forced); ``detail`` says it all in one sentence.
    """

    name: str
    active: bool
    reason: str
    detail: str = ""
    environment: str | None = None
    bucket: int | None = None
    threshold: int | None = None
    prerequisite: str | None = None
    version: int | None = None
    declared: bool = False


def explain_in(
    snapshot: Snapshot,
    name: str,
    user: Any,
    request: Any = None,
    flags: RequestFlags | None = None,
    anonymous_id: str | None = None,
) -> Explanation:
    """Why :func:`evaluate` (or ``flags.is_active``) answers what it does for flag ``name``.

    It walks the rule again (:meth:`FlagRule.why`) instead of asking ``evaluate``, so that
    checks pay nothing for it. An anonymous visitor is identified as ``evaluate`` does it
    (only when the rule wants an id: ``rule.wants_anonymous_id``), or by ``anonymous_id``
    when given (the admin's "try it" box).
    """
    forced = flags._forced if flags is not None else None
    if forced and name in forced:
        active = forced[name]
        param = conf.get("TESTING_OVERRIDES_PARAM")
        return Explanation(name, active, "override", f"forced {_on(active)} by ?{param}=")
    rule = snapshot.flags.get(name)
    if rule is None:
        active = snapshot.default_active
        return Explanation(
            name,
            active,
            "missing",
            f"no such flag in ZooKeeper: {_on(active)} (ZKFLAGS['UNKNOWN_FLAG_ACTIVE'])",
        )
    if _forced_by_override(rule):
        active = rule.everyone is True
        return Explanation(name, active, "override", f"forced {_on(active)} by override_flag")
    if rule.version is None and store.declared.get(name) is rule:
        active = rule.everyone is True
        return Explanation(
            name,
            active,
            "missing",
            f"not in ZooKeeper: {_on(active)}, the default declared in ZKFLAGS['FLAGS']",
            declared=True,
        )
    if not rule.wants_anonymous_id or (user is not None and user.is_authenticated):
        anonymous_id = None
    elif anonymous_id is None and (request is not None or flags is not None):
        anonymous_id = flags.anonymous() if flags is not None else read_anonymous_id(request)
    active, reason, position = rule.why(user, anonymous_id, user_group_ids)
    decided, prerequisite = rule, None
    if active and isinstance(rule, LinkedRule):
        off = rule.off_prerequisite(user, anonymous_id, user_group_ids)
        if off is not None:
            decided, prerequisite = off, off.name
            active, reason, position = FlagRule.why(off, user, anonymous_id, user_group_ids)
    who = "this user" if user is not None and user.is_authenticated else "this visitor"
    detail = _own_detail(decided, reason, position, who, anonymous_id)
    environment = decided.overridden_in(reason, snapshot.chain) if reason != "no-match" else None
    if environment is not None:
        detail += f" (set for environment {environment!r})"
    if prerequisite is not None:
        if decided.version is None and decided.note in _UNAVAILABLE:
            detail = f"requires {prerequisite!r}: {decided.note}"
        elif _forced_by_override(decided):
            detail = f"requires {prerequisite!r}, forced off by override_flag"
        else:
            detail = f"requires {prerequisite!r}, which is off for {who}: {detail}"
        reason = "prerequisite"
    return Explanation(
        name,
        active,
        reason,
        detail,
        environment=environment,
        bucket=position,
        threshold=decided.threshold if decided.threshold else None,
        prerequisite=prerequisite,
        version=rule.version,
    )


_UNAVAILABLE = (MISSING_PREREQUISITE, CYCLIC_PREREQUISITE, TOO_MANY_PREREQUISITES)


def _forced_by_override(rule: FlagRule) -> bool:
    return rule.version is None and rule.note == OVERRIDE_NOTE


def _on(active: bool) -> str:
    return "on" if active else "off"


def _own_detail(
    rule: FlagRule, reason: str, position: int | None, who: str, anonymous_id: str | None
) -> str:
    """One sentence for :meth:`FlagRule.why`'s answer."""
    if reason == "everyone":
        return f"{_on(rule.everyone is True)} for everyone"
    if reason == "percent":
        share = f"{rule.threshold / 100:g}%"
        if position is None:
            return f"on for {share}"
        if position < rule.threshold:
            return f"{who} is in the {share}: bucket {position} is under {rule.threshold}"
        return f"{who} is not in the {share}: bucket {position} is not under {rule.threshold}"
    if reason == "no-match":
        if rule.threshold and anonymous_id is None and who == "this visitor":
            return "no rule matches (an anonymous visitor without an id is in no percentage)"
        return "no rule matches"
    return {
        "authenticated": "on for every signed-in user",
        "superusers": "on for superusers",
        "staff": "on for staff",
        "users": f"on for the users listed, {who} among them",
        "groups": f"on for its groups, {who} in one of them",
    }[reason]


def user_group_ids(user: Any) -> Iterable[int]:
    """The user's group ids, queried once per user object and kept on it.

    Only flags with group rules ask for it; request.user lives for one request.
    """
    ids = getattr(user, "_zkflags_group_ids", None)
    if ids is None:
        try:
            ids = frozenset(user.groups.values_list("pk", flat=True))
        except SynchronousOnlyOperation as exc:
            raise SynchronousOnlyOperation(
                "django-zkflags needs this user's group ids for a flag with group rules: in "
                "async code use await aflag_is_active(...) or aflag_is_active_for_user(...), "
                "which fetch them with the async ORM"
            ) from exc
        _keep_group_ids(user, ids)
    return ids


def _keep_group_ids(user: Any, ids: frozenset[int]) -> None:
    try:
        user._zkflags_group_ids = ids
    except AttributeError:
        pass


# -- async: fetch first, then the same evaluate ----------------------------------------------


def needs_group_ids(rule: Any, user: Any) -> bool:
    """Could evaluating ``rule`` for ``user`` query the user's group ids (not fetched yet)?

    ``rule.wants_group_ids`` (rules.py) covers every rule that can reach ``user_group_ids``:
    its own group rules and its prerequisites'.
    """
    return bool(
        rule is not None
        and rule.wants_group_ids  # its own group rules or a prerequisite's
        and user is not None
        and user.is_authenticated
        and getattr(user, "_zkflags_group_ids", None) is None
    )


async def aprepare(snapshot: Snapshot, name: str, user: Any, request: Any = None) -> Any:
    """Fetch with the async ORM what ``evaluate(snapshot, name, user, ...)`` would query,
    and return the user to evaluate for.

    A lazy user (Django's ``request.user``, loaded on first use by a sync query) comes back
    loaded: ``await request.auser()`` (Django 5.0+), else loaded in a thread. The user's
    group ids are fetched when flag ``name`` has group rules (once per user object, kept on
    it as :func:`user_group_ids` keeps them).
    """
    if isinstance(user, LazyObject):
        auser = getattr(request, "auser", None)
        user = await auser() if auser is not None else await aload_lazy(user)
    if needs_group_ids(snapshot.flags.get(name), user):
        await aload_group_ids(user)
    return user


async def aload_lazy(user: LazyObject) -> Any:
    """The object behind a lazy user, loaded in a thread when it was not (Django 4.2 has no
    ``request.auser()``; also a lazy user passed with no request)."""
    if user._wrapped is empty:
        from asgiref.sync import sync_to_async

        await sync_to_async(getattr)(user, "is_authenticated")
    return user._wrapped


async def aload_group_ids(user: Any) -> None:
    """:func:`user_group_ids`' query, with the async ORM; kept on the user the same way."""
    _keep_group_ids(user, frozenset([pk async for pk in user.groups.values_list("pk", flat=True)]))


def read_anonymous_id(request: Any) -> str | None:
    """The visitor's id from its signed cookie (signed so nobody picks their bucket)."""
    get_signed_cookie = getattr(request, "get_signed_cookie", None)
    if get_signed_cookie is None:
        return None
    return get_signed_cookie(conf.get("ANONYMOUS_COOKIE"), default=None, salt=ANONYMOUS_SALT)


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
        if answer is None:
            if self._forced and name in self._forced:
                answer = self._forced[name]
            else:
                answer = evaluate(self.snapshot, name, self.user, self.request, self)
            self._answers[name] = answer
        return answer

    __getitem__ = is_active

    async def ais_active(self, name: str) -> bool:
        """:meth:`is_active` for async code: the user (``request.auser()``) and its group ids
        are fetched with the async ORM first, and the user is kept for every later check of
        this request, sync ones (a template's ``{% flag %}``) included."""
        answer = self._answers.get(name)
        if answer is None:
            self.user = await aprepare(self.snapshot, name, self.user, self.request)
            answer = self.is_active(name)
        return answer

    def anonymous(self) -> str:
        """This visitor's stable id: its cookie's, or a new one the middleware will set."""
        if self.anonymous_id is None:
            self.anonymous_id = read_anonymous_id(self.request)
            if self.anonymous_id is None:
                self.anonymous_id = secrets.token_urlsafe(16)
                self.new_anonymous_id = True
        return self.anonymous_id

    def release(self) -> None:
        """Let go of the request's snapshot once its response is closed (the middleware
        calls this): a request object can live on as cyclic garbage until the collector
        runs, and a snapshot it still held would make the watcher copy the whole flags
        dict on the next changes (docs/design.md, the sharded view). A check made after
        this (a streaming response still running) reads the current snapshot."""
        self.snapshot = CURRENT  # type: ignore[assignment]

    def value(self, name: str, default: Any = None) -> Any:
        """The flag's live configuration value, from this request's snapshot."""
        return value_in(self.snapshot, name, default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.is_active(name)

    def active_names(self) -> list[str]:
        return sorted(name for name in self.snapshot.flags if self.is_active(name))


class _CurrentSnapshot:
    """Stands for whichever snapshot is current: every attribute is read from
    ``store.current`` when it is asked for."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(store.current, name)

    def __len__(self) -> int:
        return len(store.current)

    def __contains__(self, name: object) -> bool:
        return name in store.current


CURRENT = _CurrentSnapshot()


def value_in(snapshot: Snapshot, name: str, default: Any) -> Any:
    rule = snapshot.flags.get(name)
    if rule is None or rule.value is None:
        return default
    return rule.value


def _parse_forced(value: str) -> dict[str, bool]:
    forced: dict[str, bool] = {}
    for item in value.split(","):
        name, _, state = item.partition(":")
        if name and state in ("on", "off", "1", "0"):
            forced[name] = state in ("on", "1")
    return forced
