"""A template with 20 ``{% flag %}`` blocks, against ``{% if %}`` on context booleans and
waffle's ``{% flag %}``."""

from __future__ import annotations

from typing import Any

from ..context import Bench
from ..harness import Variant, log, measure, ratio


def run(bench: Bench) -> None:
    from django.template import Context, Engine

    from django_zkflags.evaluation import RequestFlags

    log("template with 20 flag blocks")
    engine = Engine.get_default()
    names = [f"t{i:02d}" for i in range(20)]

    def source(load: str, open_: str, close: str) -> str:
        body = "".join(
            f"<li>{open_.format(n=n)}<b>{n} on</b>{{% else %}}<i>{n} off</i>{close}</li>\n"
            for n in names
        )
        return f"{load}<ul>\n{body}</ul>\n"

    zk_tpl = engine.from_string(source("{% load zkflags %}", '{{% flag "{n}" %}}', "{% endflag %}"))
    plain_tpl = engine.from_string(source("", "{{% if {n} %}}", "{% endif %}"))
    user = bench.users["user"]
    req_plain = bench.make_request(user)
    req_mw = bench.make_request(user)
    expected = plain_tpl.render(
        Context({"request": req_plain, **{n: i % 2 == 0 for i, n in enumerate(names)}})
    )
    variants = [
        Variant(
            "plain_if",
            "tpl.render(ctx)",
            {
                "tpl": plain_tpl,
                "ctx": Context(
                    {"request": req_plain, **{n: i % 2 == 0 for i, n in enumerate(names)}}
                ),
            },
        ),
        Variant(
            "zkflags",
            "tpl.render(ctx)",
            {"tpl": zk_tpl, "ctx": Context({"request": req_plain})},
        ),
        Variant(
            "zkflags_request_flags",
            "req.flags = RF(req); tpl.render(ctx)",
            {"tpl": zk_tpl, "ctx": Context({"request": req_mw}), "req": req_mw},
        ),
    ]
    variants[2].env["RF"] = RequestFlags
    if bench.have_waffle:
        waffle_tpl = engine.from_string(
            source("{% load waffle_tags %}", '{{% flag "{n}" %}}', "{% endflag %}")
        )
        for key, cache in bench.waffle_caches():
            variants.append(
                Variant(
                    key,
                    "tpl.render(ctx)",
                    {"tpl": waffle_tpl, "ctx": Context({"request": bench.make_request(user)})},
                    before=bench.set_waffle_cache(cache),
                )
            )
    same = {}
    io = {}
    for v in variants:
        output, io[v.name] = bench.probe(v, "tpl.render(ctx)", calls=5)
        same[v.name] = output == expected
    got = measure(variants, bench.plan.repeat, bench.plan.sample_seconds)
    base = got["plain_if"]["median_ns"]
    zk = max(got["zkflags"]["median_ns"], got["zkflags_request_flags"]["median_ns"])
    out: dict[str, Any] = {
        "blocks": len(names),
        "same_output": same,
        "io_per_render": io,
        "variants": got,
        "zkflags_over_plain_if": ratio(zk, base),
    }
    for key, _cache in bench.waffle_caches():
        out[f"{key}_over_zkflags"] = ratio(got[key]["median_ns"], zk)
    bench.set_waffle_cache("default")()
    bench.results["template"] = out
