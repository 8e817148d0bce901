"""FlagMiddleware: one consistent view of the flags for each request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.functional import LazyObject

from . import conf
from .evaluation import ANONYMOUS_SALT, RequestFlags


class FlagMiddleware:
    """Sets ``request.flags`` (a :class:`~django_zkflags.api.RequestFlags`).

    Put it after AuthenticationMiddleware. Every check in the request, through the API, the
    template tag or the decorator, answers from the snapshot taken here, so a request never
    sees half of a change. It also sets the signed cookie that gives anonymous visitors a
    stable bucket, when a percentage flag needed one.

    On an async stack it runs as a coroutine (no thread hop), and ``request.auser()`` hands
    the user it loads to ``request.flags``, so that after ``await request.auser()`` a sync
    check (``flag_is_active``, ``{% flag %}``) never loads the lazy ``request.user``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        request.flags = flags = RequestFlags(request)
        response = self.get_response(request)
        if flags.new_anonymous_id:
            _set_cookie(response, flags.anonymous_id)
        _release_when_closed(response, flags)
        return response

    async def __acall__(self, request: Any) -> Any:
        request.flags = flags = RequestFlags(request)
        auser = getattr(request, "auser", None)
        if auser is not None:
            request.auser = partial(_auser_for_flags, auser, flags)
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        response = await get_response(request)
        if flags.new_anonymous_id:
            _set_cookie(response, flags.anonymous_id)
        _release_when_closed(response, flags)
        return response


async def _auser_for_flags(auser: Callable[[], Awaitable[Any]], flags: RequestFlags) -> Any:
    user = await auser()
    if isinstance(flags.user, LazyObject):
        flags.user = user
    return user


def _release_when_closed(response: Any, flags: RequestFlags) -> None:
    """``flags.release()`` when the server closes the response (Django runs a response's
    ``_resource_closers`` in ``close()``, since Django 3.0)."""
    closers = getattr(response, "_resource_closers", None)
    if isinstance(closers, list):
        closers.append(flags.release)


def _set_cookie(response: Any, anonymous_id: str | None) -> None:
    response.set_signed_cookie(
        conf.get("ANONYMOUS_COOKIE"),
        anonymous_id,
        salt=ANONYMOUS_SALT,
        max_age=conf.get("ANONYMOUS_COOKIE_AGE"),
        httponly=True,
        samesite="Lax",
    )
