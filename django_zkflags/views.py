"""``health``: this process's flags, for load balancers and monitoring.

Include it with ``path("zkflags/", include("django_zkflags.urls"))``; it serves
``health/``, JSON about this process: ``serving``, ``connected``, ``version`` (the snapshot
znode's version served) and ``zxid``, ``last_heard_seconds_ago`` (0 while connected),
``confirmed_seconds_ago`` (when it last knew its snapshot was the latest), ``missed_changes``,
``invalid_flags``, and ``ok``/``problem`` (anything wrong, in words).

The status code, for a load balancer:

* **200 while the process serves a snapshot** -- from ZooKeeper, or its disk copy while
  ZooKeeper is away: a process that lost ZooKeeper keeps serving its last snapshot, and
  taking every server out of a pool because ZooKeeper is down would turn a ZooKeeper
  outage into a site outage;
* **503 when it has never loaded one** (it would answer every flag with its default);
* with ``ZKFLAGS["HEALTH_MAX_STALENESS"]`` set to a number of seconds, 503 too when the
  snapshot served was not confirmed current within that many seconds (None by default).

``?strict=1``, for a monitor that pages someone: 503 on any problem as well (disconnected,
an unreadable snapshot, or not confirmed current within ``2 × VERIFY_INTERVAL +
SESSION_TIMEOUT``). ``?strict=0`` is the default policy (before issue 9 strict was the
default; ``?strict=0`` keeps working as it did for a process that serves a snapshot).

The body never shows ZooKeeper's address or credentials.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from . import __version__, conf, runtime


def confirmed_limit() -> float:
    """How long a connected process may go without confirming its snapshot: two verify
    intervals and a session timeout."""
    return 2 * float(conf.get("VERIFY_INTERVAL") or 0) + float(conf.get("SESSION_TIMEOUT"))


def max_staleness() -> float | None:
    value = conf.get("HEALTH_MAX_STALENESS")
    return None if value is None else float(value)


def health_report() -> dict[str, Any]:
    """What ``health/`` answers, and ``status_code`` (200 or 503) and ``strict_status_code``
    (what ``?strict=1`` answers)."""
    status = runtime.status()
    confirmed = status.get("confirmed_seconds_ago")
    limit = confirmed_limit()
    staleness = max_staleness()
    serving = status.get("source") not in (None, "empty")
    problem = None
    if not serving:
        problem = "no snapshot loaded: every flag answers its default"
    elif not status.get("watching"):
        problem = "not watching ZooKeeper"
    elif not status.get("connected"):
        problem = "disconnected from ZooKeeper: serving the last snapshot"
    elif status.get("last_error"):
        problem = str(status["last_error"])
    elif confirmed is None or confirmed > limit:
        problem = "the snapshot has not been confirmed current recently"
    stale = staleness is not None and (confirmed is None or confirmed > staleness)
    status_code = 200 if serving and not stale else 503
    return {
        "ok": problem is None,
        "problem": problem,
        "status_code": status_code,
        "strict_status_code": 200 if problem is None and status_code == 200 else 503,
        "serving": serving,
        "source": status.get("source"),
        "flags": status.get("flags"),
        "version": status.get("version"),
        "zxid": status.get("zxid"),
        "environment": status.get("environment"),
        "connected": bool(status.get("connected")),
        "last_heard_seconds_ago": status.get("last_heard_seconds_ago"),
        "confirmed_seconds_ago": confirmed,
        "confirmed_limit_seconds": limit,
        "max_staleness_seconds": staleness,
        "missed_changes": status.get("missed_changes", 0),
        "invalid_flags": sorted(status.get("invalid_flags") or ()),
        "pid": status.get("pid"),
        "library": __version__,
    }


@never_cache
def health(request: Any) -> JsonResponse:
    report = health_report()
    strict = request.GET.get("strict", "0") not in ("0", "", "false", "no")
    code = report["strict_status_code"] if strict else report["status_code"]
    return JsonResponse(report, status=code)
