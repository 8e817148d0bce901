"""The fleet: which snapshot each running process serves.

``fleet/`` under the flag admin (view permission) lists the processes and the laggards;
the flag list's header says "applied by N of M processes". Both read the fleet's
ephemeral znodes (:mod:`django_zkflags.fleet`): one ``get_children`` and one ``get`` per
process, pipelined. The header's read is cached for :data:`SUMMARY_MAX_AGE` seconds per
process (failures too), and never waits for a connection: while ZooKeeper is away it
says "fleet unknown" and the list is drawn at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from .. import runtime
from ..exceptions import FlagWriteError, ZooKeeperUnavailable
from ..fleet import FleetReport, Member

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object

log = logging.getLogger("django_zkflags")

#: Seconds the list header's fleet read is reused.
SUMMARY_MAX_AGE = 2.0
#: Bound on one fleet read from a page (the requests are pipelined: about 2 round trips).
READ_TIMEOUT = 1.0

UNREACHABLE = _("ZooKeeper unreachable")


@dataclass(frozen=True)
class FleetSummary:
    """What the list header shows: a report, or why there is none."""

    report: FleetReport | None
    error: str | None = None

    @property
    def current(self) -> int:
        return len(self.report.current) if self.report else 0

    @property
    def total(self) -> int:
        return self.report.total if self.report else 0

    @property
    def laggards(self) -> int:
        return len(self.report.laggards) if self.report else 0


def read_fleet_summary() -> FleetSummary:
    """A fresh fleet read; never raises."""
    try:
        return FleetSummary(runtime.get_runtime().read_fleet(timeout=READ_TIMEOUT))
    except ZooKeeperUnavailable:
        return FleetSummary(None, str(UNREACHABLE))
    except FlagWriteError as exc:  # the ACL refused (PermissionDenied)
        return FleetSummary(None, str(exc))
    except Exception as exc:  # never a 500 for a header line
        log.warning("Reading the fleet failed", exc_info=True)
        return FleetSummary(None, f"{type(exc).__name__}: {exc}")


_cache_lock = threading.Lock()
_cache: tuple[Any, float, FleetSummary] | None = None


def cached_fleet_summary(max_age: float | None = None) -> FleetSummary:
    """:func:`read_fleet_summary`, reused for ``max_age`` seconds (:data:`SUMMARY_MAX_AGE`
    by default) per ZooKeeper location."""
    global _cache
    if max_age is None:
        max_age = SUMMARY_MAX_AGE
    key = runtime.get_runtime().url
    now = time.monotonic()
    with _cache_lock:
        cached = _cache
    if cached is not None and cached[0] == key and now - cached[1] < max_age:
        return cached[2]
    summary = read_fleet_summary()
    with _cache_lock:
        _cache = (key, time.monotonic(), summary)
    return summary


def clear_cache() -> None:
    global _cache
    with _cache_lock:
        _cache = None


@dataclass(frozen=True)
class Row:
    """One process on the Fleet page."""

    member: Member
    state: str
    applied_seconds_ago: float | None
    this_process: bool


class FleetMixin(AdminBase):
    """Adds ``fleet/`` to FlagAdmin's URLs and the fleet summary to the flag list."""

    def get_urls(self) -> list[Any]:
        urls = [
            path(
                "fleet/",
                self.admin_site.admin_view(self.fleet_view),
                name="django_zkflags_fleet",
            )
        ]
        return urls + super().get_urls()

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        extra_context = dict(extra_context or {})
        # A callable: the template calls it once, only when the list is drawn (an action's
        # redirect never reads the fleet).
        extra_context.setdefault("fleet_summary", cached_fleet_summary)
        return super().changelist_view(request, extra_context)

    def fleet_view(self, request: Any) -> Any:
        """Every registered process, laggards first."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        summary = read_fleet_summary()
        report = summary.report
        rows: list[Row] = []
        if report is not None:
            me = runtime.status().get("fleet_node") or ""
            for member in report.members:
                rows.append(
                    Row(
                        member,
                        report.state_of(member),
                        member.applied_seconds_ago(report.read_at),
                        bool(me) and me.endswith("/" + member.node),
                    )
                )
            order = {"behind": 0, "unreadable": 1, "current": 2}
            rows.sort(key=lambda row: order.get(row.state, 3))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Fleet"),
            "opts": self.model._meta,
            "summary": summary,
            "report": report,
            "rows": rows,
            "laggards": [row for row in rows if row.state == "behind"],
            "this_process": runtime.status(),
        }
        return TemplateResponse(request, "admin/django_zkflags/fleet.html", context)
