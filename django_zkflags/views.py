"""``health``: how current this process's flags are, for load balancers and monitoring.

Include it with ``path("zkflags/", include("django_zkflags.urls"))``. It answers 200 while
the process serves a snapshot it has confirmed within the limit, else 503 (with
``?strict=0``, always 200: a process that lost ZooKeeper keeps serving its last snapshot,
and taking every server out of a pool because ZooKeeper is down would turn a ZooKeeper
outage into a site outage). The body never shows ZooKeeper's address or credentials.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from . import conf, runtime


def health_report() -> dict[str, Any]:
    status = runtime.status()
    confirmed = status.get("confirmed_seconds_ago")
    limit = 2 * float(conf.get("VERIFY_INTERVAL") or 0) + float(conf.get("SESSION_TIMEOUT"))
    problem = None
    if not status.get("watching"):
        problem = "not watching ZooKeeper"
    elif not status.get("connected"):
        problem = "disconnected from ZooKeeper: serving the last snapshot"
    elif status.get("last_error"):
        problem = str(status["last_error"])
    elif confirmed is None or confirmed > limit:
        problem = "the snapshot has not been confirmed current recently"
    return {
        "ok": problem is None,
        "problem": problem,
        "source": status.get("source"),
        "flags": status.get("flags"),
        "zxid": status.get("zxid"),
        "connected": bool(status.get("connected")),
        "confirmed_seconds_ago": confirmed,
        "confirmed_limit_seconds": limit,
        "missed_changes": status.get("missed_changes", 0),
        "invalid_flags": sorted(status.get("invalid_flags") or ()),
    }


@never_cache
def health(request: Any) -> JsonResponse:
    report = health_report()
    strict = request.GET.get("strict", "1") != "0"
    return JsonResponse(report, status=200 if report["ok"] or not strict else 503)
