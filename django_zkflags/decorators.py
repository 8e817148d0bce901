"""Guard views with a flag: ``@flag_required`` and ``FlagRequiredMixin``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.http import Http404
from django.shortcuts import redirect

from .api import flag_is_active

View = TypeVar("View", bound=Callable[..., Any])


def flag_required(name: str, redirect_to: str | None = None) -> Callable[[View], View]:
    """Serve the view only when flag ``name`` is on; else 404, or redirect to ``redirect_to``
    (a URL, a URL name, or anything :func:`django.shortcuts.redirect` accepts)."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
            if not flag_is_active(request, name):
                return _refuse(name, redirect_to)
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


class FlagRequiredMixin:
    """Class-based views: set ``flag_name`` (and optionally ``flag_redirect_to``)."""

    flag_name: str | None = None
    flag_redirect_to: str | None = None

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if self.flag_name is None:
            raise TypeError(f"{type(self).__name__} needs a flag_name")
        if not flag_is_active(request, self.flag_name):
            return _refuse(self.flag_name, self.flag_redirect_to)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


def _refuse(name: str, redirect_to: str | None) -> Any:
    if redirect_to:
        return redirect(redirect_to)
    raise Http404(f"Flag {name!r} is off")
