"""The benchmark's scenarios, each a ``run(bench)`` that stores its results in
``bench.results``, in the order a run takes them (``--only`` picks some by name)."""

from __future__ import annotations

from collections.abc import Callable

from ..context import Bench
from . import changes, checks, propagation, request, scale, template

SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "checks": checks.run,
    "template": template.run,
    "request": request.run,
    "propagation": propagation.run,
    "scale": scale.run,
    "changes": changes.run,
}

__all__ = ["SCENARIOS"]
