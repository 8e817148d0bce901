"""What ``path("zkflags/", include("django_zkflags.urls"))`` serves: ``health/`` (this
process's flags, for load balancers and monitoring) and ``flags.json`` (the public flags,
for front ends).

``flags.json``
--------------

The flags marked public (``"public": true``) and nothing else, evaluated for the request's
user (or anonymous visitor) by the one evaluator, through ``request.flags`` when
:class:`~django_zkflags.middleware.FlagMiddleware` is installed::

    {"flags": {"new-checkout": true, "dark-mode": false}, "values": {"dark-mode": "auto"}}

``values`` holds the live value of each public flag that has one (as ``get_value`` gives
it, whether the flag is on or not). An anonymous visitor who meets a percentage gets the
middleware's signed cookie (set here when the middleware is not installed), so its answers
stay stable. The answer is per visitor: ``Cache-Control: private, no-store`` and
``Vary: Cookie``. A public flag that requires a private one tells the visitor whether the
private one is on for them (no more: its name and value stay out).

``health``
----------

``health/`` answers JSON about this process: ``serving``, ``connected``, ``version`` (the snapshot
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
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import __version__, conf, runtime
from .evaluation import RequestFlags
from .middleware import _set_cookie
from .rules import thaw_value
from .snapshot import Snapshot


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


#: The public flag names of the last snapshot asked about: (its flags mapping, the names).
_public: tuple[object, tuple[str, ...]] = (None, ())


def public_names(snapshot: Snapshot) -> tuple[str, ...]:
    """The names of the public flags of ``snapshot``, found once per snapshot (a request
    then reads only those rules)."""
    global _public
    flags, names = _public
    if flags is not snapshot.flags:
        names = tuple(sorted(name for name, rule in snapshot.flags.items() if rule.public))
        _public = (snapshot.flags, names)
    return names


def public_flags(flags: RequestFlags) -> dict[str, Any]:
    """``{"flags": {name: on}, "values": {name: value}}`` of the public flags, for the
    request ``flags`` belongs to."""
    snapshot = flags.snapshot
    active: dict[str, bool] = {}
    values: dict[str, Any] = {}
    for name in public_names(snapshot):
        active[name] = flags.is_active(name)
        rule = snapshot.flags.get(name)
        if rule is not None and rule.value is not None:
            values[name] = thaw_value(rule.value)
    return {"flags": active, "values": values}


@require_safe
def flags_json(request: Any) -> JsonResponse:
    flags = getattr(request, "flags", None)
    own = not isinstance(flags, RequestFlags)
    if own:
        flags = RequestFlags(request)
    assert isinstance(flags, RequestFlags)
    response = JsonResponse(public_flags(flags))
    response["Cache-Control"] = "private, no-store"
    patch_vary_headers(response, ("Cookie",))
    if own and flags.new_anonymous_id:  # the middleware sets it itself
        _set_cookie(response, flags.anonymous_id)
    return response
