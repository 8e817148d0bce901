"""A full request through Django's test client with and without ``FlagMiddleware`` and
``@flag_required``; and the middleware and decorator alone."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..context import Bench
from ..django_app import MIDDLEWARE_FLAGS, MIDDLEWARE_PLAIN, URLCONF, URLCONF_PLAIN
from ..harness import Variant, log, measure, paired_difference


def run(bench: Bench) -> None:
    from django.conf import settings
    from django.contrib.auth.models import AnonymousUser
    from django.test import Client, RequestFactory

    from django_zkflags.middleware import FlagMiddleware

    log("full request through the middleware stack")

    def stack(middleware: list[str], urlconf: str) -> Callable[[], None]:
        def before() -> None:
            settings.MIDDLEWARE = middleware
            settings.ROOT_URLCONF = urlconf

        return before

    # A test client loads its middleware chain on its first request and keeps it.
    with_flags_stack = stack(MIDDLEWARE_FLAGS, URLCONF)
    plain_stack = stack(MIDDLEWARE_PLAIN, URLCONF_PLAIN)
    with_flags_stack()
    with_flags = Client()
    plain_stack()
    without = Client()
    for client, before, middleware in (
        (with_flags, with_flags_stack, MIDDLEWARE_FLAGS),
        (without, plain_stack, MIDDLEWARE_PLAIN),
    ):
        before()
        response = client.get("/page/")
        if response.status_code != 200 or (
            hasattr(response.wsgi_request, "flags") != (middleware is MIDDLEWARE_FLAGS)
        ):
            raise RuntimeError("the request benchmark's set-up is wrong")
    urls = sys.modules[URLCONF]
    request = RequestFactory().get("/page/")
    request.user = AnonymousUser()
    variants = [
        Variant("plain_stack", "c.get('/page/')", {"c": without}, before=plain_stack),
        Variant("flag_stack", "c.get('/page/')", {"c": with_flags}, before=with_flags_stack),
        Variant("plain_view_only", "view(req)", {"view": urls.plain_view, "req": request}),
        Variant(
            "flag_middleware_and_decorator_only",
            "mw(req)",
            {"mw": FlagMiddleware(urls.flagged_view), "req": request},
        ),
    ]
    got = measure(variants, bench.plan.request_repeat, bench.plan.request_sample_seconds)
    with_flags_stack()
    # The difference round by round (the two were sampled back to back), then the
    # median: less noisy than a difference of medians.
    e2e = paired_difference(got["flag_stack"], got["plain_stack"])
    isolated = paired_difference(got["flag_middleware_and_decorator_only"], got["plain_view_only"])
    bench.results["request"] = {
        "variants": got,
        "overhead_ns": e2e,
        "overhead_isolated_ns": isolated,
        "overhead_of_medians_ns": got["flag_stack"]["median_ns"] - got["plain_stack"]["median_ns"],
        "overhead_cpu_ns": paired_difference(
            got["flag_stack"], got["plain_stack"], "cpu_samples_ns"
        ),
        "user": "anonymous",
        "middleware_with_flags": MIDDLEWARE_FLAGS,
        "middleware_plain": MIDDLEWARE_PLAIN,
    }
