"""django-zkflags benchmark: checks, templates, requests, propagation and scale, side by side.

Run ``.venv/bin/python bench/run.py`` (``--smoke`` for a quick run with tiny sizes,
``--out DIR`` for where results.json / results.png go, default bench/results/).

It starts its own ZooKeeper (tests.support.zookeeper) and its own redis-server on free
loopback ports, configures Django in code (SQLite in a temp dir, migrations run), and
measures django-zkflags against a plain dict lookup and against django-waffle (LocMem and
Redis caches). Every figure is the median of repeated samples; micro-benchmarks are
``timeit`` loops of many iterations per sample, and competing variants are sampled in
turn (interleaved) so that drift of the machine hits all of them alike.

django-waffle, redis (the client and redis-server) and matplotlib are optional: what needs
them is reported as null / "n/a" when they are missing. The exit status is 0 whether
targets pass or fail; non-zero only if the benchmark itself crashed.

See docs/performance.md for what is compared, how, and the latest figures.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The ZooKeeper launcher and the watcher processes live with the tests (tests/support), not
# in the package.
sys.path.insert(0, str(HERE.parent))
from tests.support.children import Child, Children  # noqa: E402

URLCONF = "zkflags_bench_urls"  # /page/ -> the view with @flag_required
URLCONF_PLAIN = "zkflags_bench_urls_plain"  # /page/ -> the same view without it

MIDDLEWARE_PLAIN = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
MIDDLEWARE_FLAGS = [*MIDDLEWARE_PLAIN, "django_zkflags.middleware.FlagMiddleware"]


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run."""

    smoke: bool
    repeat: int  # samples per micro-benchmark variant
    sample_seconds: float  # target duration of one micro sample
    request_repeat: int
    request_sample_seconds: float
    watchers: tuple[int, ...]
    changes: int  # propagation: changes per watcher count
    scale_sizes: tuple[int, ...]
    scale_repeats: int  # cold starts per size
    scale_changes: int  # propagation of one change at size, repeated


FULL = Plan(
    smoke=False,
    repeat=15,
    sample_seconds=0.05,
    request_repeat=120,
    request_sample_seconds=0.02,
    watchers=(1, 4, 16),
    changes=300,
    scale_sizes=(100, 1_000, 10_000),
    scale_repeats=3,
    scale_changes=20,
)
SMOKE = Plan(
    smoke=True,
    repeat=3,
    sample_seconds=0.005,
    request_repeat=3,
    request_sample_seconds=0.01,
    watchers=(1, 4),
    changes=10,
    scale_sizes=(10, 100),
    scale_repeats=1,
    scale_changes=2,
)

SECTIONS = ("checks", "template", "request", "propagation", "scale")


# --------------------------------------------------------------------------------------
# small helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": len(samples),
    }


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    return {
        "count": len(values_ms),
        "p50_ms": percentile(values_ms, 50),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": max(values_ms) if values_ms else None,
        "min_ms": min(values_ms) if values_ms else None,
    }


def paired_difference(a: dict[str, Any], b: dict[str, Any], key: str = "samples_ns") -> float:
    """Median of the per-round differences of two variants measured in the same rounds."""
    return statistics.median(x - y for x, y in zip(a[key], b[key], strict=True))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ratio(slow: float | None, fast: float | None) -> float | None:
    if slow is None or fast is None or fast <= 0:
        return None
    return slow / fast


def version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------
# micro-benchmark harness


@dataclass
class Variant:
    name: str
    stmt: str
    env: dict[str, Any]
    before: Callable[[], None] | None = None  # run (untimed) before each sample
    number: int = 0


class Loop:
    """A ``timeit``-style loop of ``stmt`` (names from ``env``, like ``timeit``'s globals),
    timed with the wall clock and with this thread's CPU clock at once.

    The wall clock is the figure reported; the CPU clock is kept beside it because it does
    not count time this process spent waiting for a CPU (other load on the machine). It
    also does not count waiting for I/O (Redis), so it is no measure of those variants.
    """

    def __init__(self, stmt: str, env: dict[str, Any]) -> None:
        source = f"def _loop(_it):\n    for _ in _it:\n        {stmt}\n"
        namespace = env  # the statement's names are globals, as with timeit(globals=...)
        exec(compile(source, f"<bench {stmt!r}>", "exec"), namespace)
        self.fn = namespace.pop("_loop")

    def run(self, number: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds) for ``number`` iterations, gc off as in timeit."""
        it = itertools.repeat(None, number)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            c0 = time.thread_time()
            w0 = time.perf_counter()
            self.fn(it)
            w1 = time.perf_counter()
            c1 = time.thread_time()
        finally:
            if gc_was_enabled:
                gc.enable()
        return w1 - w0, c1 - c0


def calibrate(loop: Loop, target: float) -> int:
    number = 1
    while True:
        elapsed = loop.run(number)[0]
        if elapsed >= target / 10 or number >= 10**8:
            break
        number *= 10
    return max(1, int(number * target / max(elapsed, 1e-9)))


def measure(variants: list[Variant], repeat: int, target: float) -> dict[str, dict[str, Any]]:
    """ns per iteration of each variant: median (and min/max) over ``repeat`` samples.

    The variants are sampled in turn (one sample each per round), the order rotating each
    round, so that a slow spell of the machine hits them all alike.
    """
    loops = {}
    for v in variants:
        if v.before:
            v.before()
        loop = Loop(v.stmt, dict(v.env))
        loop.run(1)  # warm: caches, lazy attributes, first-use imports
        v.number = calibrate(loop, target)
        loops[v.name] = loop
    wall: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {v.name: [] for v in variants}
    for round_ in range(repeat):
        shift = round_ % len(variants)
        for v in variants[shift:] + variants[:shift]:
            if v.before:
                v.before()
            w, c = loops[v.name].run(v.number)
            wall[v.name].append(w / v.number * 1e9)
            cpu[v.name].append(c / v.number * 1e9)
    out = {}
    for v in variants:
        summary = summarize(wall[v.name])
        out[v.name] = {
            "median_ns": summary["median"],
            "min_ns": summary["min"],
            "max_ns": summary["max"],
            "cpu_median_ns": statistics.median(cpu[v.name]),
            "samples": summary["samples"],
            "iterations_per_sample": v.number,
            "samples_ns": wall[v.name],
            "cpu_samples_ns": cpu[v.name],
        }
    return out


# --------------------------------------------------------------------------------------
# services: ZooKeeper, redis-server


class RedisServer:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.version: str | None = None

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--logfile",
                os.path.join(self.directory, "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------
# watcher child processes: tests/support/flagwatcher.py, through tests.support.children

#: A watcher's STARTUP_TIMEOUT: how long its AppConfig.ready waits for the first snapshot.
WATCHER_STARTUP = 60.0


def spawn_watcher(children: Children, url: str, flag: str, snapshot_file: str) -> Child:
    """A minimal Django process watching ``flag`` (ready reported later: see wait_ready)."""
    return children.spawn(url, flag, snapshot_file=snapshot_file, startup_timeout=WATCHER_STARTUP)


def wait_ready(kid: Child) -> dict[str, Any]:
    """Its ``ready`` event, once it loaded a snapshot from ZooKeeper."""
    ready = kid.ready(timeout=WATCHER_STARTUP * 2)
    if ready["source"] != "zookeeper":
        raise RuntimeError(f"watcher child did not load a snapshot\n{kid.describe()}")
    return ready


def seen(version: int) -> Callable[[dict[str, Any]], bool]:
    """A watcher's report of ``version``, timed in its ``flag_changed`` receiver (CLOCK_MONOTONIC
    is system-wide on Linux: its ``t_mono`` compares with this process's time.monotonic())."""
    return lambda e: (
        e.get("event") == "value" and e.get("via") == "signal" and e.get("version") == version
    )


# --------------------------------------------------------------------------------------
# Django set-up


def configure_django(tmp: str, zk_url: str, redis_port: int | None, have_waffle: bool) -> None:
    import django
    from django.conf import settings

    caches: dict[str, Any] = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "zkflags-bench",
        }
    }
    if redis_port is not None:
        caches["redis"] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{redis_port}/0",
        }
    apps = [
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django_zkflags",
    ]
    if have_waffle:
        apps.insert(3, "waffle")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="zkflags-bench-" + uuid.uuid4().hex,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        INSTALLED_APPS=apps,
        MIDDLEWARE=MIDDLEWARE_FLAGS,
        ROOT_URLCONF=URLCONF,
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tmp, "bench.sqlite3"),
            }
        },
        CACHES=caches,
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {"context_processors": []},
            }
        ],
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        ZKFLAGS_URL=zk_url,
        ZKFLAGS={
            "AUTOSTART": False,
            "STARTUP_TIMEOUT": 15.0,
            "SNAPSHOT_FILE": os.path.join(tmp, "parent.snapshot"),
        },
        WAFFLE_CACHE_NAME="default",
    )
    install_urlconf()
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def install_urlconf() -> None:
    """The benchmark's URLconf: the same trivial view with and without @flag_required."""
    from django.http import HttpResponse
    from django.urls import path

    from django_zkflags.decorators import flag_required

    def plain_view(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    @flag_required("guarded")
    def flagged_view(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    # Two URLconfs of one pattern each, so that resolving costs the same in both.
    for name, view in ((URLCONF, flagged_view), (URLCONF_PLAIN, plain_view)):
        module = types.ModuleType(name)
        module.plain_view = plain_view  # type: ignore[attr-defined]
        module.flagged_view = flagged_view  # type: ignore[attr-defined]
        module.urlpatterns = [path("page/", view)]  # type: ignore[attr-defined]
        sys.modules[name] = module


# --------------------------------------------------------------------------------------
# the run


@dataclass
class Bench:
    plan: Plan
    tmp: str
    have_waffle: bool
    have_redis: bool
    zk: Any = None
    redis: RedisServer | None = None
    root: str = ""
    url: str = ""
    children: Children | None = None
    results: dict[str, Any] = field(default_factory=dict)
    users: dict[str, Any] = field(default_factory=dict)

    # ---- fixtures ------------------------------------------------------------------

    def write_flag(self, doc: dict[str, Any]) -> int:
        from django_zkflags import runtime
        from django_zkflags.rules import FlagRule

        writer = runtime.get_runtime().writer()
        version = writer.reader.flag(doc["name"]).version
        return writer.write_flag(FlagRule.from_document(doc), version).version

    def wait_seen(self, name: str, version: int, timeout: float = 10.0) -> None:
        from django_zkflags.cache import store

        deadline = time.monotonic() + timeout
        while True:
            rule = store.base.flags.get(name)
            if rule is not None and rule.version == version:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"this process did not see {name} v{version}")
            time.sleep(0.005)

    def populate(self) -> None:
        """The same rules in django-zkflags (through ZooKeeper) and in django-waffle."""
        from django.contrib.auth.models import Group, User

        user = User.objects.create_user("bench", password="x")
        other = User.objects.create_user("other", password="x")
        group = Group.objects.create(name="beta")
        user.groups.add(group)
        self.users = {"user": user, "other": other, "group": group}

        docs = [
            {"name": "bool", "everyone": True},
            {"name": "pct", "percent": 50},
            {"name": "grp", "users": [other.pk], "groups": [group.pk]},
            {"name": "guarded", "everyone": True},
            {"name": "prop", "everyone": False},
            *({"name": f"t{i:02d}", "everyone": i % 2 == 0} for i in range(20)),
        ]
        last = 0
        for doc in docs:
            last = self.write_flag(doc)
        self.wait_seen(docs[-1]["name"], last)

        if self.have_waffle:
            from decimal import Decimal

            from waffle.models import Flag

            Flag.objects.create(name="bool", everyone=True)
            Flag.objects.create(name="pct", percent=Decimal("50.0"), superusers=False)
            grp = Flag.objects.create(name="grp", superusers=False)
            grp.users.add(other)
            grp.groups.add(group)
            for i in range(20):
                Flag.objects.create(name=f"t{i:02d}", everyone=i % 2 == 0)

    def set_waffle_cache(self, name: str) -> Callable[[], None]:
        """A hook that points waffle at one cache (it reads the setting on every call)."""

        def before() -> None:
            from django.conf import settings

            settings.WAFFLE_CACHE_NAME = name

        return before

    def waffle_caches(self) -> list[tuple[str, str]]:
        if not self.have_waffle:
            return []
        out = [("waffle_locmem", "default")]
        if self.have_redis:
            out.append(("waffle_redis", "redis"))
        return out

    def redis_commands(self) -> int:
        if not self.have_redis:
            return 0
        from django.core.cache import caches

        info = caches["redis"]._cache.get_client().info("stats")
        return int(info["total_commands_processed"])

    def probe(self, v: Variant, *exprs: str, calls: int = 20) -> tuple[Any, dict[str, float]]:
        """Evaluate a variant's call outside the timing: its answer and I/O per call."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        expr = next(e for e in exprs if e.split("(")[0].split(".")[0] in v.env)
        if v.before:
            v.before()
        env = dict(v.env)
        answer = eval(expr, env)  # our own expression
        before = self.redis_commands()
        with CaptureQueriesContext(connection) as queries:
            for _ in range(calls):
                eval(expr, env)
        # INFO itself is one command.
        redis = max(0, self.redis_commands() - before - 1) if self.have_redis else None
        return answer, {"sql_queries": len(queries) / calls, "redis_commands": (redis or 0) / calls}

    def make_request(self, user: Any) -> Any:
        from django.test import RequestFactory

        rf = RequestFactory()
        rf.cookies["sessionid"] = "0123456789abcdef0123456789abcdef"
        request = rf.get(
            "/shop/checkout/?step=2",
            HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) bench",
            HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.9",
        )
        request.user = user
        return request

    # ---- one flag check --------------------------------------------------------------

    def make_async_request(self, user: Any) -> Any:
        """A request as an async view gets it: ``request.user`` lazy and never loaded (loading
        it would be a sync query), ``request.auser()`` answering the user (as Django's does
        once it has loaded it)."""
        from django.utils.functional import SimpleLazyObject

        async def auser() -> Any:
            return user

        request = self.make_request(user)
        request.user = SimpleLazyObject(lambda: user)
        request.auser = auser
        return request

    def bench_checks(self) -> None:
        import django_zkflags
        from django_zkflags.evaluation import RequestFlags

        log("one flag check")
        user = self.users["user"]
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
            request_plain = self.make_request(user)
            request_mw = self.make_request(user)
            request_mw.flags = RequestFlags(request_mw)
            request_first = self.make_request(user)
            # Warm request.user as a real request's would be after its first group check.
            django_zkflags.flag_is_active(request_plain, name)
            base = {"name": name, "fia": django_zkflags.flag_is_active}
            variants = [
                Variant("dict", "d[name]", {"d": {name: True}, "name": name}),
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
            request_async = self.make_async_request(user)
            request_async_mw = self.make_async_request(user)
            request_async_mw.flags = RequestFlags(request_async_mw)
            request_async_first = self.make_async_request(user)
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
            if self.have_waffle:
                import waffle

                for key, cache in self.waffle_caches():
                    request_w = self.make_request(user)
                    variants.append(
                        Variant(
                            key,
                            "wfia(req, name)",
                            {"wfia": waffle.flag_is_active, "req": request_w, "name": name},
                            before=self.set_waffle_cache(cache),
                        )
                    )
            # Same answers from every implementation, or the comparison is meaningless; and
            # what one check costs in I/O (SQL queries, Redis commands).
            answers: dict[str, Any] = {}
            io: dict[str, Any] = {}
            for v in variants[1:]:
                answers[v.name], io[v.name] = self.probe(
                    v,
                    "fia(req, name)",
                    "wfia(req, name)",
                    "drive(afia(req, name))",
                    "ex(req, name).active",
                )
            if answers["zkflags_explain"] != answers["zkflags"]:
                raise RuntimeError(f"explain and the check disagree on {name}: {answers}")
            got = measure(variants, self.plan.repeat, self.plan.sample_seconds)
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
            for key, _cache in self.waffle_caches():
                entry[f"{key}_over_zkflags"] = ratio(got[key]["median_ns"], slowest_zk)
            out[label] = entry
        self.set_waffle_cache("default")()
        self.results["flag_check"] = out

    # ---- a template with 20 flag blocks ----------------------------------------------

    def bench_template(self) -> None:
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

        zk_tpl = engine.from_string(
            source("{% load zkflags %}", '{{% flag "{n}" %}}', "{% endflag %}")
        )
        plain_tpl = engine.from_string(source("", "{{% if {n} %}}", "{% endif %}"))
        user = self.users["user"]
        req_plain = self.make_request(user)
        req_mw = self.make_request(user)
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
        if self.have_waffle:
            waffle_tpl = engine.from_string(
                source("{% load waffle_tags %}", '{{% flag "{n}" %}}', "{% endflag %}")
            )
            for key, cache in self.waffle_caches():
                variants.append(
                    Variant(
                        key,
                        "tpl.render(ctx)",
                        {"tpl": waffle_tpl, "ctx": Context({"request": self.make_request(user)})},
                        before=self.set_waffle_cache(cache),
                    )
                )
        same = {}
        io = {}
        for v in variants:
            output, io[v.name] = self.probe(v, "tpl.render(ctx)", calls=5)
            same[v.name] = output == expected
        got = measure(variants, self.plan.repeat, self.plan.sample_seconds)
        base = got["plain_if"]["median_ns"]
        zk = max(got["zkflags"]["median_ns"], got["zkflags_request_flags"]["median_ns"])
        out: dict[str, Any] = {
            "blocks": len(names),
            "same_output": same,
            "io_per_render": io,
            "variants": got,
            "zkflags_over_plain_if": ratio(zk, base),
        }
        for key, _cache in self.waffle_caches():
            out[f"{key}_over_zkflags"] = ratio(got[key]["median_ns"], zk)
        self.set_waffle_cache("default")()
        self.results["template"] = out

    # ---- a full request -----------------------------------------------------------------

    def bench_request(self) -> None:
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
        got = measure(variants, self.plan.request_repeat, self.plan.request_sample_seconds)
        with_flags_stack()
        # The difference round by round (the two were sampled back to back), then the
        # median: less noisy than a difference of medians.
        e2e = paired_difference(got["flag_stack"], got["plain_stack"])
        isolated = paired_difference(
            got["flag_middleware_and_decorator_only"], got["plain_view_only"]
        )
        self.results["request"] = {
            "variants": got,
            "overhead_ns": e2e,
            "overhead_isolated_ns": isolated,
            "overhead_of_medians_ns": got["flag_stack"]["median_ns"]
            - got["plain_stack"]["median_ns"],
            "overhead_cpu_ns": paired_difference(
                got["flag_stack"], got["plain_stack"], "cpu_samples_ns"
            ),
            "user": "anonymous",
            "middleware_with_flags": MIDDLEWARE_FLAGS,
            "middleware_plain": MIDDLEWARE_PLAIN,
        }

    # ---- propagation to N watching processes ---------------------------------------------

    def bench_propagation(self) -> None:
        from django_zkflags import runtime
        from django_zkflags.rules import FlagRule

        out: dict[str, Any] = {}
        assert self.children is not None
        writer = runtime.get_runtime().writer()
        shared_file = os.path.join(self.tmp, "watchers.snapshot")
        for n in self.plan.watchers:
            log(f"propagation to {n} watching process(es), {self.plan.changes} changes")
            kids = [spawn_watcher(self.children, self.url, "prop", shared_file) for _ in range(n)]
            try:
                for kid in kids:
                    wait_ready(kid)
                version = writer.reader.flag("prop").version
                everyone = False
                from_return: list[float] = []
                from_start: list[float] = []
                write_ms: list[float] = []
                missing = 0
                for _i in range(self.plan.changes):
                    time.sleep(random.uniform(0.002, 0.012))
                    everyone = not everyone
                    marks = [kid.mark() for kid in kids]
                    t_start = time.monotonic()
                    version = writer.write_flag(
                        FlagRule("prop", everyone=everyone), version
                    ).version
                    t_ret = time.monotonic()
                    write_ms.append((t_ret - t_start) * 1000)
                    deadline = t_ret + 10.0
                    for kid, mark in zip(kids, marks, strict=True):
                        event = kid.wait_or_none(
                            seen(version), max(0.0, deadline - time.monotonic()), after=mark
                        )
                        if event is None:
                            missing += 1
                            continue
                        from_return.append((event["t_mono"] - t_ret) * 1000)
                        from_start.append((event["t_mono"] - t_start) * 1000)
                # Every watcher must end on the final value.
                stale = 0
                for kid in kids:
                    state = kid.ask("state")
                    if state.get("version") != version or state.get("everyone") != everyone:
                        stale += 1
                entry = latency_summary(from_return)
                entry.update(
                    {
                        "watchers": n,
                        "changes": self.plan.changes,
                        "missed_within_10s": missing,
                        "stale_watchers": stale,
                        "from_write_start": latency_summary(from_start),
                        "write": latency_summary(write_ms),
                        "negative": sum(1 for x in from_return if x < 0),
                    }
                )
                out[str(n)] = entry
            finally:
                for kid in kids:
                    kid.close()
        self.results["propagation"] = out

    # ---- scale ------------------------------------------------------------------------

    def bulk_populate(self, client: Any, root: str, size: int) -> tuple[int, list[str]]:
        """Write ``size`` flag znodes and their snapshot in bulk (setup, not measured)."""
        from django_zkflags.rules import FlagRule
        from django_zkflags.snapshot import encode_document, encode_entries

        client.ensure_path(f"{root}/flags")
        docs = []
        for i in range(size):
            kind = i % 10
            name = f"feature.area{i % 37}.flag-{i:05d}"
            if kind < 6:
                rule = FlagRule(name, everyone=(i % 3 == 0), note=f"release toggle #{i}")
            elif kind < 8:
                rule = FlagRule(name, percent=float(i % 100), note=f"rollout of ticket {i}")
            elif kind == 8:
                rule = FlagRule(name, users=(i, i + 1, i + 2), staff=True, note="beta testers")
            else:
                rule = FlagRule(name, groups=(i % 50, 7), authenticated=False, note="groups")
            docs.append(rule.to_document())
        for start in range(0, size, 500):
            tx = client.transaction()
            for doc in docs[start : start + 500]:
                tx.create(f"{root}/flags/{doc['name']}", encode_document(doc))
            for result in tx.commit():
                if isinstance(result, Exception):
                    raise result
        payload = encode_entries({doc["name"]: {**doc, "version": 0} for doc in docs})
        client.create(f"{root}/snapshot", payload)
        return len(payload), [doc["name"] for doc in docs]

    def count_watches(self) -> dict[str, int]:
        """Watches per session, from the server's ``wchc``."""
        reply = self.zk.four_letter("wchc", timeout=10.0)
        counts: dict[str, int] = {}
        session = None
        for line in reply.splitlines():
            if line.startswith("0x"):
                session = line.strip()
                counts.setdefault(session, 0)
            elif line.strip() and session is not None:
                counts[session] += 1
        return counts

    def bench_scale(self) -> None:
        from kazoo.client import KazooClient

        from django_zkflags.client import Paths, Requests, acl_for
        from django_zkflags.conf import parse_url
        from django_zkflags.rules import FlagRule
        from django_zkflags.snapshot import compile_entries, decode_payload
        from django_zkflags.writer import FlagWriter

        assert self.children is not None
        client = KazooClient(hosts=self.zk.hosts, timeout=30)
        client.start(timeout=30)
        out: dict[str, Any] = {}
        try:
            sizes = (0, *self.plan.scale_sizes)
            for size in sizes:
                log(f"scale: {size} flags")
                root = f"{self.root}-scale-{size}"
                url = f"zk://{self.zk.hosts}{root}"
                snapshot_bytes, names = self.bulk_populate(client, root, size)
                probe = names[0] if names else None
                data, _stat = client.get(f"{root}/snapshot")
                t0 = time.perf_counter()
                compile_entries(decode_payload(data)["flags"])
                decode_ms = (time.perf_counter() - t0) * 1000
                cold: list[float] = []
                rss: list[int] = []
                watches: list[int] = []
                prop: list[float] = []
                write_ms: list[float] = []
                missed = stale = 0
                for r in range(self.plan.scale_repeats):
                    snap_file = os.path.join(self.tmp, f"scale-{size}-{r}.snapshot")
                    kid = spawn_watcher(self.children, url, probe or "absent", snap_file)
                    try:
                        ready = wait_ready(kid)
                        if ready["flags"] != size:
                            raise RuntimeError(f"child loaded {ready['flags']} flags, not {size}")
                        cold.append(ready["watcher_start_seconds"] * 1000)
                        rss.append(ready["rss_kb"])
                        counts = self.count_watches()
                        watches.append(counts.get(ready["session_id"], 0))
                        if r == 0 and probe is not None:
                            parsed = parse_url(url)
                            writer = FlagWriter(
                                Requests(client, parsed, 30), Paths(parsed.root), acl_for(parsed)
                            )
                            version = writer.reader.flag(probe).version
                            everyone = True
                            for _i in range(self.plan.scale_changes):
                                time.sleep(0.01)
                                everyone = not everyone
                                mark = kid.mark()
                                t_start = time.monotonic()
                                rule = FlagRule(probe, everyone=everyone)
                                version = writer.write_flag(rule, version).version
                                t_ret = time.monotonic()
                                write_ms.append((t_ret - t_start) * 1000)
                                event = kid.wait_or_none(seen(version), 30.0, after=mark)
                                if event is not None:
                                    prop.append((event["t_mono"] - t_ret) * 1000)
                                else:
                                    missed += 1
                            state = kid.ask("state")
                            if state["version"] != version or state["everyone"] != everyone:
                                stale += 1
                    finally:
                        kid.close()
                out[str(size)] = {
                    "flags": size,
                    "snapshot_bytes": snapshot_bytes,
                    "decode_compile_ms_in_parent": decode_ms,
                    "cold_start_ms": summarize(cold),
                    "rss_kb": summarize(rss),
                    "watches_per_process": watches,
                    "propagation": latency_summary(prop) if prop else None,
                    "propagation_missed_within_30s": missed,
                    "stale_watchers": stale,
                    "write": latency_summary(write_ms) if write_ms else None,
                }
            base_rss = out["0"]["rss_kb"]["median"]
            for size in sizes:
                out[str(size)]["rss_over_empty_mb"] = (
                    out[str(size)]["rss_kb"]["median"] - base_rss
                ) / 1024
        finally:
            client.stop()
            client.close()
        self.results["scale"] = out


# --------------------------------------------------------------------------------------
# async checks: ``await`` in a real coroutine, no event loop in the way


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


# --------------------------------------------------------------------------------------
# targets, table, plot


def evaluate_targets(results: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: Any, passed: bool | None, shown: str) -> None:
        targets.append({"target": name, "value": value, "pass": passed, "shown": shown})

    checks = results.get("flag_check")
    if checks:
        b = checks["boolean"]
        add(
            "boolean check <= 1 us (median)",
            b["zkflags_worst_ns"],
            b["zkflags_worst_ns"] <= 1000,
            f"{b['zkflags_worst_ns']:.0f} ns",
        )
        for key, need, label in (
            ("waffle_locmem_over_zkflags", 20, "waffle LocMem"),
            ("waffle_redis_over_zkflags", 100, "waffle Redis"),
        ):
            value = b.get(key)
            add(
                f"boolean check >= {need}x faster than {label}",
                value,
                None if value is None else value >= need,
                "n/a" if value is None else f"{value:.0f}x",
            )
        p = checks["percent"]
        add(
            "percent check <= 2 us (median)",
            p["zkflags_worst_ns"],
            p["zkflags_worst_ns"] <= 2000,
            f"{p['zkflags_worst_ns']:.0f} ns",
        )
    prop = results.get("propagation")
    if prop is not None:
        for n, limit in (("1", 20.0), ("16", 60.0)):
            entry = prop.get(n)
            value = entry["p99_ms"] if entry else None
            ok = None
            if entry:
                ok = value is not None and value <= limit and entry["stale_watchers"] == 0
            add(
                f"propagation p99 <= {limit:.0f} ms with {n} watcher(s), 0 stale",
                value,
                ok,
                "n/a" if value is None else f"{value:.1f} ms",
            )
    scale = results.get("scale")
    if scale is not None:
        big = scale.get("10000")
        cold = big["cold_start_ms"]["median"] if big else None
        add(
            "10,000 flags: cold start < 1 s",
            cold,
            None if cold is None else cold < 1000,
            "n/a" if cold is None else f"{cold:.0f} ms",
        )
        mem = big["rss_over_empty_mb"] if big else None
        add(
            "10,000 flags: <= 30 MB RSS over an empty app",
            mem,
            None if mem is None else mem <= 30,
            "n/a" if mem is None else f"{mem:.1f} MB",
        )
        per_size = {
            size: entry["watches_per_process"] for size, entry in scale.items() if size != "0"
        }
        flat = {w for ws in per_size.values() for w in ws}
        add(
            "constant number of watches per process",
            per_size,
            len(flat) == 1 and 0 not in flat,
            ", ".join(f"{s}: {sorted(set(w))}" for s, w in per_size.items()),
        )
    request = results.get("request")
    if request is not None:
        overhead = request["overhead_ns"]
        add(
            "middleware + decorator add <= 10 us per request",
            overhead,
            overhead <= 10_000,
            f"{overhead / 1000:.1f} us",
        )
    return targets


def fmt_ns(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100_000:
        return f"{value / 1000:,.0f} us"
    if value >= 10_000:
        return f"{value / 1000:.1f} us"
    return f"{value:,.0f} ns"


def fmt_x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}x"


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    meta = results["meta"]
    add(
        f"django-zkflags benchmark ({'smoke' if meta['smoke'] else 'full'} run), "
        f"{meta['cpu']} x{meta['cpus']}, Python {meta['python']}, Django {meta['django']}, "
        f"kazoo {meta['kazoo']}, waffle {meta['waffle']}"
    )
    start_load = meta["loadavg_start"][0]
    end_load = meta.get("loadavg_end", [0.0])[0]
    add(f"load average (1 min) at start / end: {start_load:.1f} / {end_load:.1f}")
    # At the start only: by the end the benchmark's own watcher processes weigh in.
    if start_load > 0.5 * (meta["cpus"] or 1):
        add(
            "WARNING: the machine was busy with other work; wall-clock figures are inflated "
            "(CPU-time figures are in results.json)"
        )
    checks = results.get("flag_check")
    if checks:
        add("")
        add("One flag check, ns per check (median)      boolean      percent   user+group")
        rows = [
            ("plain dict lookup (floor)", "dict"),
            ("zkflags, no request.flags", "zkflags"),
            ("zkflags, request.flags (memoised)", "zkflags_request_flags"),
            ("zkflags, RequestFlags() + first check", "zkflags_first_check"),
            ("zkflags explain(request, name)", "zkflags_explain"),
            ("zkflags async, no request.flags", "zkflags_async"),
            ("zkflags async, request.flags (memoised)", "zkflags_async_request_flags"),
            ("zkflags async, new RequestFlags + first", "zkflags_async_first_check"),
            ("waffle, LocMem cache", "waffle_locmem"),
            ("waffle, Redis cache", "waffle_redis"),
        ]
        for label, key in rows:
            cells = [
                fmt_ns(checks[rule]["variants"].get(key, {}).get("median_ns"))
                for rule in ("boolean", "percent", "user_group")
            ]
            add(f"  {label:<40}" + "".join(f"{c:>13}" for c in cells))
        for label, key in (
            ("waffle LocMem / zkflags (slower path)", "waffle_locmem_over_zkflags"),
            ("waffle Redis / zkflags (slower path)", "waffle_redis_over_zkflags"),
            ("zkflags / dict", "zkflags_over_dict"),
        ):
            cells = [fmt_x(checks[rule].get(key)) for rule in ("boolean", "percent", "user_group")]
            add(f"  {label:<40}" + "".join(f"{c:>13}" for c in cells))
    tpl = results.get("template")
    if tpl:
        add("")
        add(f"Template with {tpl['blocks']} flag blocks, per render (median)")
        for label, key in (
            ("plain {% if %} on context booleans", "plain_if"),
            ("zkflags {% flag %}, no request.flags", "zkflags"),
            ("zkflags {% flag %}, new RequestFlags", "zkflags_request_flags"),
            ("waffle {% flag %}, LocMem", "waffle_locmem"),
            ("waffle {% flag %}, Redis", "waffle_redis"),
        ):
            value = tpl["variants"].get(key, {}).get("median_ns")
            add(f"  {label:<40}{fmt_ns(value):>13}")
        add(f"  {'zkflags / plain if':<40}{fmt_x(tpl['zkflags_over_plain_if']):>13}")
        for key in ("waffle_locmem", "waffle_redis"):
            if f"{key}_over_zkflags" in tpl:
                add(f"  {key + ' / zkflags':<40}{fmt_x(tpl[key + '_over_zkflags']):>13}")
    req = results.get("request")
    if req:
        add("")
        add("Full request (test client, anonymous user), per request (median)")
        v = req["variants"]
        add(f"  {'stack without flags, plain view':<40}{fmt_ns(v['plain_stack']['median_ns']):>13}")
        add(
            f"  {'stack + FlagMiddleware, @flag_required':<40}"
            f"{fmt_ns(v['flag_stack']['median_ns']):>13}"
        )
        add(f"  {'overhead':<40}{fmt_ns(req['overhead_ns']):>13}")
        add(f"  {'overhead, CPU time':<40}{fmt_ns(req['overhead_cpu_ns']):>13}")
        add(
            f"  {'overhead, middleware+decorator alone':<40}"
            f"{fmt_ns(req['overhead_isolated_ns']):>13}"
        )
    prop = results.get("propagation")
    if prop:
        add("")
        add("Propagation to N watching processes: write returned -> visible in each watcher")
        add(
            "  watchers  changes      p50       p99       max   p99 from write start"
            "   stale watchers  missed"
        )
        for n, e in prop.items():
            add(
                f"  {n:>8}  {e['changes']:>7}  {fmt_ms(e['p50_ms']):>8}  {fmt_ms(e['p99_ms']):>8}"
                f"  {fmt_ms(e['max_ms']):>8}  {fmt_ms(e['from_write_start']['p99_ms']):>21}"
                f"  {e['stale_watchers']:>15}  {e['missed_within_10s']:>6}"
            )
    scale = results.get("scale")
    if scale:
        add("")
        add(
            "Scale        snapshot  cold start  RSS over empty  watches/process"
            "  change p50   change max"
        )
        for size, e in scale.items():
            p = e["propagation"] or {}
            add(
                f"  {int(size):>7,}  {e['snapshot_bytes'] / 1024:>7.0f} KB"
                f"  {fmt_ms(e['cold_start_ms']['median']):>10}"
                f"  {e['rss_over_empty_mb']:>11.1f} MB"
                f"  {str(sorted(set(e['watches_per_process']))):>15}"
                f"  {fmt_ms(p.get('p50_ms')):>10}  {fmt_ms(p.get('max_ms')):>11}"
            )
    targets = results.get("targets")
    if targets:
        add("")
        add("Targets")
        for t in targets:
            status = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
            add(f"  [{status}] {t['target']:<62} {t['shown']}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    checks = results.get("flag_check")
    ax = axes[0][0]
    if checks:
        keys = [
            "dict",
            "zkflags",
            "zkflags_request_flags",
            "zkflags_first_check",
            "waffle_locmem",
            "waffle_redis",
        ]
        rules = ["boolean", "percent", "user_group"]
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            values = [checks[r]["variants"].get(key, {}).get("median_ns") for r in rules]
            if all(v is None for v in values):
                continue
            xs = [j + i * width for j in range(len(rules))]
            ax.bar(xs, [v or 0 for v in values], width, label=key)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rules))], rules)
        ax.set_yscale("log")
        ax.set_ylabel("ns per check (log)")
        ax.set_title("One flag check")
        ax.legend(fontsize=7)
    tpl = results.get("template")
    ax = axes[0][1]
    if tpl:
        names = list(tpl["variants"])
        ax.bar(names, [tpl["variants"][n]["median_ns"] / 1000 for n in names])
        ax.set_ylabel("us per render")
        ax.set_yscale("log")
        ax.set_title(f"Template, {tpl['blocks']} flag blocks")
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    prop = results.get("propagation")
    ax = axes[1][0]
    if prop:
        ns = list(prop)
        for stat in ("p50_ms", "p99_ms", "max_ms"):
            ax.plot([int(n) for n in ns], [prop[n][stat] for n in ns], marker="o", label=stat)
        ax.set_xlabel("watching processes")
        ax.set_ylabel("ms, write returned -> visible")
        ax.set_title("Propagation")
        ax.legend()
    scale = results.get("scale")
    ax = axes[1][1]
    if scale:
        sizes = [s for s in scale if s != "0"]
        ax.plot(
            [int(s) for s in sizes],
            [scale[s]["cold_start_ms"]["median"] for s in sizes],
            marker="o",
            label="cold start (ms)",
        )
        ax.plot(
            [int(s) for s in sizes],
            [scale[s]["rss_over_empty_mb"] for s in sizes],
            marker="s",
            label="RSS over empty (MB)",
        )
        ax.set_xscale("log")
        ax.set_xlabel("flags")
        ax.set_title("Scale")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"Model name:\s*(.+)", text)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": version_of("django"),
        "kazoo": version_of("kazoo"),
        "waffle": version_of("django-waffle"),
        "redis_py": version_of("redis"),
        "matplotlib": version_of("matplotlib"),
    }


# --------------------------------------------------------------------------------------


def run(plan: Plan, out_dir: Path, only: Iterable[str]) -> dict[str, Any]:
    from tests.support.zookeeper import ZooKeeperServer

    only = set(only)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="zkflags-bench-")
    try:
        import waffle  # noqa: F401

        have_waffle = True
    except ImportError:
        have_waffle = False
    try:
        import redis  # noqa: F401

        have_redis_py = True
    except ImportError:
        have_redis_py = False
    bench = Bench(plan=plan, tmp=tmp, have_waffle=have_waffle, have_redis=False)
    meta = {
        **machine(),
        "smoke": plan.smoke,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg(),
    }
    bench.results["meta"] = meta
    try:
        log("starting ZooKeeper")
        bench.zk = ZooKeeperServer(data_dir=os.path.join(tmp, "zk"))
        bench.zk.start()
        srvr = bench.zk.four_letter("srvr")
        match = re.search(r"Zookeeper version: ([^,\s]+)", srvr)
        meta["zookeeper"] = match.group(1) if match else None
        if have_waffle and have_redis_py:
            try:
                bench.redis = RedisServer(os.path.join(tmp, "redis"))
                os.makedirs(bench.redis.directory)
                bench.redis.start()
                bench.have_redis = True
                meta["redis_server"] = bench.redis.version
            except (RuntimeError, OSError) as exc:
                log(f"no Redis: {exc}")
                bench.redis = None
        bench.root = f"/zkflags-bench-{uuid.uuid4().hex[:8]}"
        bench.url = f"zk://{bench.zk.hosts}{bench.root}"
        configure_django(
            tmp, bench.url, bench.redis.port if bench.have_redis else None, have_waffle
        )
        from django_zkflags import runtime

        runtime.start(wait=15.0)
        bench.children = Children(tmp)  # each watcher's stderr goes to a file there
        bench.populate()
        gc.collect()
        steps = {
            "checks": bench.bench_checks,
            "template": bench.bench_template,
            "request": bench.bench_request,
            "propagation": bench.bench_propagation,
            "scale": bench.bench_scale,
        }
        for name, step in steps.items():
            if not only or name in only:
                step()
    finally:
        if bench.children is not None:
            bench.children.close_all()
        try:
            from django_zkflags import runtime

            runtime.stop(timeout=2.0)
        except Exception:  # Django may not be configured yet
            pass
        if bench.redis is not None:
            bench.redis.stop()
        if bench.zk is not None:
            bench.zk.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results = bench.results
    results["targets"] = evaluate_targets(results, plan)
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    if plot(results, out_dir / "results.png"):
        print(f"\nwrote {out_dir / 'results.json'} and {out_dir / 'results.png'}")
    else:
        print(f"\nwrote {out_dir / 'results.json'} (matplotlib not installed: no plot)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few repeats")
    parser.add_argument("--out", default=str(HERE / "results"), help="output directory")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of sections ({', '.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    run(SMOKE if args.smoke else FULL, Path(args.out), only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
