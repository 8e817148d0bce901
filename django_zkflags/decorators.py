"""Guard views with a flag: ``@flag_required`` and ``FlagRequiredMixin``, sync or async."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction
from django.http import Http404
from django.shortcuts import redirect

from .api import aflag_is_active, flag_is_active

View = TypeVar("View", bound=Callable[..., Any])


def flag_required(name: str, redirect_to: str | None = None) -> Callable[[View], View]:
    """Serve the view only when flag ``name`` is on; else 404, or redirect to ``redirect_to``
    (a URL, a URL name, or anything :func:`django.shortcuts.redirect` accepts).

    An ``async def`` view (or one marked with asgiref's ``markcoroutinefunction``) stays
    async: the flag is checked with :func:`~django_zkflags.api.aflag_is_active`.
    """

    def decorator(view: View) -> View:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def awrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
                if not await aflag_is_active(request, name):
                    return _refuse(name, redirect_to)
                return await view(request, *args, **kwargs)

            return awrapped  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
            if not flag_is_active(request, name):
                return _refuse(name, redirect_to)
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


class FlagRequiredMixin:
    """Class-based views: set ``flag_name`` (and optionally ``flag_redirect_to``).

    On a view whose handlers are ``async def`` (Django's ``view_is_async``), ``dispatch``
    returns a coroutine that checks the flag with
    :func:`~django_zkflags.api.aflag_is_active`.
    """

    flag_name: str | None = None
    flag_redirect_to: str | None = None

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if self.flag_name is None:
            raise TypeError(f"{type(self).__name__} needs a flag_name")
        if getattr(self, "view_is_async", False):
            return self._adispatch(self.flag_name, request, *args, **kwargs)
        if not flag_is_active(request, self.flag_name):
            return _refuse(self.flag_name, self.flag_redirect_to)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    async def _adispatch(self, name: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        if not await aflag_is_active(request, name):
            return _refuse(name, self.flag_redirect_to)
        return await super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


def _refuse(name: str, redirect_to: str | None) -> Any:
    if redirect_to:
        return redirect(redirect_to)
    raise Http404(f"Flag {name!r} is off")
