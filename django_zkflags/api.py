"""The public API, answered from the in-memory snapshot only (no network, no database
except a user's group ids, once per user object, for flags with group rules).

The ``a``-prefixed functions are for async code: they fetch the request's user and its group
ids with the async ORM, then answer through the same evaluator. :func:`explain` says why a
flag is on or off; checks pay nothing for it."""

from __future__ import annotations

from typing import Any

from django.utils.functional import LazyObject, SimpleLazyObject, empty

from .cache import store
from .evaluation import (
    Explanation,
    RequestFlags,
    aprepare,
    evaluate,
    evaluate_rule,
    explain_in,
    user_group_ids,
    value_in,
)
from .rules import _AUTHENTICATED
from .snapshot import Snapshot

__all__ = [
    "Explanation",
    "RequestFlags",
    "aexplain",
    "aflag_is_active",
    "aflag_is_active_for_user",
    "aget_value",
    "explain",
    "flag_is_active",
    "flag_is_active_for_user",
    "get_snapshot",
    "get_value",
]


def flag_is_active(request: Any, name: str) -> bool:
    """Is flag ``name`` on for this request?

    With :class:`~django_zkflags.middleware.FlagMiddleware` the answer comes from the
    snapshot frozen at the start of the request; without it, from the current snapshot.
    """
    flags = getattr(request, "flags", None)
    if flags is not None:
        if flags.__class__ is RequestFlags:
            answer = flags._answers.get(name)  # flags.is_active(name), its memo written out
            return flags.is_active(name) if answer is None else answer
        if isinstance(flags, RequestFlags):  # a subclass
            return flags.is_active(name)
    # evaluate(store.current, ...), written out: most flags are on or off for everyone,
    # and the request's user is then never read.
    snapshot = store.current
    rule = snapshot.flags.get(name)
    if rule is None:
        return snapshot.default_active
    constant = rule.constant
    if constant is not None:
        return constant
    user: Any = getattr(request, "user", None)
    if user.__class__ is SimpleLazyObject and user._wrapped is not empty:
        user = user._wrapped  # request.user, already loaded: no proxy per attribute
    if _AUTHENTICATED.get(user.__class__):
        # A signed-in user of Django's own classes: no anonymous id to find.
        return rule.is_active(user, None, user_group_ids)
    return evaluate_rule(rule, user, request)


def flag_is_active_for_user(user: Any, name: str) -> bool:
    """Is flag ``name`` on for ``user`` (for code outside a request)?"""
    # evaluate(store.current, name, user), written out: without a request there is no
    # anonymous id to find, and the hot path is spared a call.
    snapshot = store.current
    rule = snapshot.flags.get(name)
    if rule is None:
        return snapshot.default_active
    constant = rule.constant
    if constant is not None:
        return constant
    return rule.is_active(user, None, user_group_ids)


def get_value(name: str, default: Any = None, request: Any = None) -> Any:
    """The live configuration value of flag ``name`` in this process's environment, or
    ``default`` when the flag does not exist or has no value.

    Values are read-only (objects are mappings, lists are tuples). With ``request`` (and
    the middleware) the value comes from the request's snapshot.
    """
    flags = getattr(request, "flags", None) if request is not None else None
    snapshot = flags.snapshot if isinstance(flags, RequestFlags) else store.current
    return value_in(snapshot, name, default)


async def aflag_is_active(request: Any, name: str) -> bool:
    """:func:`flag_is_active` for async views: never raises ``SynchronousOnlyOperation``.

    The user comes from ``await request.auser()``; with the middleware it is kept on
    ``request.flags``, so later sync checks of the request (a template's ``{% flag %}``) use
    it too, and the answer is memoised like :func:`flag_is_active`'s.
    """
    flags = getattr(request, "flags", None)
    if isinstance(flags, RequestFlags):
        return await flags.ais_active(name)
    snapshot = store.current
    user = await aprepare(snapshot, name, getattr(request, "user", None), request)
    return evaluate(snapshot, name, user, request)


async def aflag_is_active_for_user(user: Any, name: str) -> bool:
    """:func:`flag_is_active_for_user` for async code (group ids fetched with the async
    ORM, once per user object)."""
    snapshot = store.current
    return evaluate(snapshot, name, await aprepare(snapshot, name, user))


async def aget_value(name: str, default: Any = None, request: Any = None) -> Any:
    """:func:`get_value` for async code (a value needs no user: nothing is fetched)."""
    return get_value(name, default, request)


def explain(user_or_request: Any, name: str, *, anonymous_id: str | None = None) -> Explanation:
    """Why flag ``name`` is on or off for a request (as :func:`flag_is_active` answers it)
    or a user (as :func:`flag_is_active_for_user`): an
    :class:`~django_zkflags.evaluation.Explanation` with ``active``, ``reason``, the
    environment the rule came from, the bucket and threshold of a percentage, the
    prerequisite that was off. ``anonymous_id`` asks for an anonymous visitor of that id.

    It walks the flag's rule again, apart from the checks, which pay nothing for it.
    """
    if _is_user(user_or_request):
        return explain_in(store.current, name, user_or_request, anonymous_id=anonymous_id)
    request = user_or_request
    flags = getattr(request, "flags", None)
    if isinstance(flags, RequestFlags):
        return explain_in(flags.snapshot, name, flags.user, request, flags, anonymous_id)
    user: Any = getattr(request, "user", None)
    return explain_in(store.current, name, user, request, anonymous_id=anonymous_id)


async def aexplain(
    user_or_request: Any, name: str, *, anonymous_id: str | None = None
) -> Explanation:
    """:func:`explain` for async code (the user and its group ids fetched with the async
    ORM first, as :func:`aflag_is_active` does)."""
    if _is_user(user_or_request):
        snapshot = store.current
        user = await aprepare(snapshot, name, user_or_request)
        return explain_in(snapshot, name, user, anonymous_id=anonymous_id)
    request = user_or_request
    flags = getattr(request, "flags", None)
    if isinstance(flags, RequestFlags):
        flags.user = await aprepare(flags.snapshot, name, flags.user, flags.request)
        return explain_in(flags.snapshot, name, flags.user, request, flags, anonymous_id)
    snapshot = store.current
    user = await aprepare(snapshot, name, getattr(request, "user", None), request)
    return explain_in(snapshot, name, user, request, anonymous_id=anonymous_id)


def _is_user(obj: Any) -> bool:
    """A user (or None, or a lazy user: never loaded here), not a request."""
    return obj is None or isinstance(obj, LazyObject) or hasattr(obj, "is_authenticated")


def get_snapshot() -> Snapshot:
    """The current snapshot (immutable), for code that wants several consistent answers."""
    return store.current
