"""One flag check: ``flag_is_active(request, name)`` (without ``request.flags``, memoised
with it, and the first check of a new ``RequestFlags``), ``explain``, the async checks, and
waffle on LocMem and Redis, against two floors measured in the same rounds: a plain dict
lookup and a function call, ``def f(d, k): return d.get(k)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..context import Bench
from ..harness import Variant, log, measure, ratio


def call_floor(d: dict[str, Any], k: str) -> Any:
    """The function-call floor of a check: one call and a ``dict.get``."""
    return d.get(k)


def run(bench: Bench) -> None:
    import django_zkflags
    from django_zkflags.evaluation import RequestFlags

    log("one flag check")
    user = bench.users["user"]
    rules = {"boolean": "bool", "percent": "pct", "user_group": "grp"}
    rules_doc = {
        "boolean": "everyone=True",
        "percent": "percent=50, authenticated user (answers differ by design: zkflags "
        "hashes the user into a bucket, waffle draws at random and memoises it in "
        "request.waffles)",
        "user_group": "users=[another user], groups=[a group the user is in]; zkflags "
        "caches the group ids on request.user (warmed); waffle queries them per check",
    }
    afia = django_zkflags.aflag_is_active
    out: dict[str, Any] = {}
    for label, name in rules.items():
        request_plain = bench.make_request(user)
        request_mw = bench.make_request(user)
        request_mw.flags = RequestFlags(request_mw)
        request_first = bench.make_request(user)
        # Warm request.user as a real request's would be after its first group check.
        django_zkflags.flag_is_active(request_plain, name)
        base = {"name": name, "fia": django_zkflags.flag_is_active}
        variants = [
            Variant("dict", "d[name]", {"d": {name: True}, "name": name}),
            Variant("call", "f(d, name)", {"f": call_floor, "d": {name: True}, "name": name}),
            Variant("zkflags", "fia(req, name)", {**base, "req": request_plain}),
            Variant("zkflags_request_flags", "fia(req, name)", {**base, "req": request_mw}),
            Variant(
                "zkflags_first_check",
                "req.flags = RF(req); fia(req, name)",
                {**base, "req": request_first, "RF": RequestFlags},
            ),
            # Why it is on (explain walks the rule again, beside the checks), on the
            # same request as the check without request.flags.
            Variant(
                "zkflags_explain",
                "ex(req, name)",
                {"name": name, "ex": django_zkflags.explain, "req": request_plain},
            ),
        ]
        # await aflag_is_active(...) in an async view, on a request whose user is loaded
        # by request.auser(). The user's group ids are warmed like request_plain's.
        request_async = bench.make_async_request(user)
        request_async_mw = bench.make_async_request(user)
        request_async_mw.flags = RequestFlags(request_async_mw)
        request_async_first = bench.make_async_request(user)
        drive(afia(request_async, name))
        abase = {"name": name, "afia": afia, "drive": drive}
        variants += [
            Variant(
                "zkflags_async",
                "drive(checks(_it, afia, req, name))",
                {**abase, "checks": async_checks, "req": request_async},
            ),
            Variant(
                "zkflags_async_request_flags",
                "drive(checks(_it, afia, req, name))",
                {**abase, "checks": async_checks, "req": request_async_mw},
            ),
            Variant(
                "zkflags_async_first_check",
                "drive(checks(_it, afia, req, name, RF))",
                {
                    **abase,
                    "checks": async_first_checks,
                    "req": request_async_first,
                    "RF": RequestFlags,
                },
            ),
        ]
        if bench.have_waffle:
            import waffle

            for key, cache in bench.waffle_caches():
                request_w = bench.make_request(user)
                variants.append(
                    Variant(
                        key,
                        "wfia(req, name)",
                        {"wfia": waffle.flag_is_active, "req": request_w, "name": name},
                        before=bench.set_waffle_cache(cache),
                    )
                )
        # Same answers from every implementation, or the comparison is meaningless; and
        # what one check costs in I/O (SQL queries, Redis commands).
        answers: dict[str, Any] = {}
        io: dict[str, Any] = {}
        for v in variants[2:]:  # not the floors
            answers[v.name], io[v.name] = bench.probe(
                v,
                "fia(req, name)",
                "wfia(req, name)",
                "drive(afia(req, name))",
                "ex(req, name).active",
            )
        if answers["zkflags_explain"] != answers["zkflags"]:
            raise RuntimeError(f"explain and the check disagree on {name}: {answers}")
        got = measure(variants, bench.plan.repeat, bench.plan.sample_seconds)
        zk = got["zkflags"]["median_ns"]
        slowest_zk = max(zk, got["zkflags_request_flags"]["median_ns"])
        entry: dict[str, Any] = {
            "flag": name,
            "rule": rules_doc[label],
            "answers": answers,
            "io_per_check": io,
            "variants": got,
        }
        entry["zkflags_worst_ns"] = slowest_zk
        entry["zkflags_over_dict"] = ratio(zk, got["dict"]["median_ns"])
        # The function-call floor, sampled in the same rounds: the target's ratio uses the
        # slower path, like the others.
        entry["zkflags_over_call"] = ratio(slowest_zk, got["call"]["median_ns"])
        for key, _cache in bench.waffle_caches():
            entry[f"{key}_over_zkflags"] = ratio(got[key]["median_ns"], slowest_zk)
        out[label] = entry
    bench.set_waffle_cache("default")()
    bench.results["flag_check"] = out


def drive(coroutine: Any) -> Any:
    """Run a coroutine that never waits (a flag check: no I/O) to its end; its value."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the check waited for I/O (a query?): not a hot-path figure")


async def async_checks(it: Iterable[Any], afia: Any, req: Any, name: str) -> None:
    """``await afia(req, name)`` once for the harness's item and once for each item left in
    its iterator ``it`` (the Loop's ``_it``, consumed here), so the whole sample is one
    coroutine: ``number`` awaits, with no per-check cost of driving a coroutine."""
    await afia(req, name)
    for _ in it:
        await afia(req, name)


async def async_first_checks(
    it: Iterable[Any], afia: Any, req: Any, name: str, new_flags: Any
) -> None:
    """As :func:`async_checks`, each check the first of a new ``RequestFlags`` (which has
    not loaded the user: ``request.auser()`` is awaited each time)."""
    req.flags = new_flags(req)
    await afia(req, name)
    for _ in it:
        req.flags = new_flags(req)
        await afia(req, name)
