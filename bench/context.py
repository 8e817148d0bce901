"""What the scenarios share: the benchmark's process (its ZooKeeper, Redis, Django site and
the rules written in both django-zkflags and waffle), the watching children, and trees of
many flags written fast (one root per size, shared by the "scale" and "changes" scenarios).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .harness import Children, Plan, RedisServer, Variant, log

#: Flag znodes created per round trip (pipelined ``create``\s) when writing a tree.
PIPELINED_CREATES = 1000


def mixed_rule(i: int) -> Any:
    """Flag ``i`` of a realistic mix: 60 % booleans, 20 % percentages, 10 % user lists, 10 %
    groups, each with a note."""
    from django_zkflags.rules import FlagRule

    kind = i % 10
    name = f"feature.area{i % 37}.flag-{i:06d}"
    if kind < 6:
        return FlagRule(name, everyone=(i % 3 == 0), note=f"release toggle #{i}")
    if kind < 8:
        return FlagRule(name, percent=float(i % 100), note=f"rollout of ticket {i}")
    if kind == 8:
        return FlagRule(name, users=(i, i + 1, i + 2), staff=True, note="beta testers")
    return FlagRule(name, groups=(i % 50, 7), authenticated=False, note="groups")


@dataclass
class Tree:
    """A root holding ``size`` flags, and a writer of the benchmark's process for it."""

    size: int
    root: str
    url: str
    names: list[str]
    writer: Any
    snapshot_bytes: int
    #: The head's size and the largest shard's: what a one-flag write adds to its multi().
    head_bytes: int
    largest_shard_bytes: int
    populate_seconds: float
    rebuild_seconds: float
    versions: dict[str, int] = field(default_factory=dict)  # as last written here
    everyone: dict[str, bool] = field(default_factory=dict)

    def toggle(self, name: str) -> tuple[int, bool, float, float]:
        """Write ``name`` on (then off, then on...) for everyone from the version last
        written; the new version, the value written, and ``time.monotonic()`` at the write's
        start and return. Each write changes the rule (never a no-op write)."""
        from django_zkflags.exceptions import FlagConflict
        from django_zkflags.rules import FlagRule

        everyone = not self.everyone.get(name, False)
        expected = self.versions.get(name, 0)
        for _ in range(3):
            t_start = time.monotonic()
            try:
                result = self.writer.write_flag(FlagRule(name, everyone=everyone), expected)
            except FlagConflict:
                expected = self.writer.reader.flag(name).version
                continue
            t_ret = time.monotonic()
            self.versions[name] = result.version
            self.everyone[name] = everyone
            return result.version, everyone, t_start, t_ret
        raise RuntimeError(f"could not write {name}: conflicts")

    def pick(self, rng: random.Random, count: int, skip: int = 1) -> list[str]:
        """``count`` distinct flags at random (the first ``skip`` left to other uses)."""
        pool = self.names[skip:] or self.names
        return rng.sample(pool, min(count, len(pool)))


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
    trees: dict[int, Tree | str] = field(default_factory=dict)
    _client: Any = None

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

    # ---- trees of many flags (scale, changes) ---------------------------------------

    @property
    def client(self) -> Any:
        """A kazoo client of this process for the bulk work (not the runtime's)."""
        if self._client is None:
            from kazoo.client import KazooClient

            self._client = KazooClient(hosts=self.zk.hosts, timeout=30)
            self._client.start(timeout=30)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client.close()
            self._client = None

    def tree(self, size: int) -> Tree:
        """The root holding ``size`` flags, written on first use (not measured): pipelined
        ``create``\\s of the flag znodes, then one ``FlagWriter.rebuild_snapshot()``. Raises
        RuntimeError (again on later calls) when it could not be written."""
        found = self.trees.get(size)
        if isinstance(found, Tree):
            return found
        if isinstance(found, str):
            raise RuntimeError(found)
        try:
            tree = self._write_tree(size)
        except Exception as exc:
            why = f"{size:,} flags could not be written: {type(exc).__name__}: {exc}"
            self.trees[size] = why[:500]
            raise RuntimeError(self.trees[size]) from exc
        self.trees[size] = tree
        return tree

    def _write_tree(self, size: int) -> Tree:
        from django_zkflags.client import Paths, Requests, acl_for
        from django_zkflags.conf import parse_url
        from django_zkflags.snapshot import encode_document
        from django_zkflags.writer import FlagWriter

        root = f"{self.root}-tree-{size}"
        url = f"zk://{self.zk.hosts}{root}"
        parsed = parse_url(url)
        client = self.client
        writer = FlagWriter(Requests(client, parsed, 60), Paths(parsed.root), acl_for(parsed))
        log(f"writing {size:,} flags")
        started = time.monotonic()
        writer.ensure_layout()
        names = []
        for start in range(0, size, PIPELINED_CREATES):
            pending = []
            for i in range(start, min(size, start + PIPELINED_CREATES)):
                rule = mixed_rule(i)
                names.append(rule.name)
                data = encode_document(rule.to_document())
                pending.append(client.create_async(writer.paths.flag(rule.name), data, writer.acl))
            for result in pending:
                result.get(timeout=60)
        populated = time.monotonic()
        invalid = writer.rebuild_snapshot()
        if invalid:
            raise RuntimeError(f"invalid flags in the rebuilt snapshot: {invalid}")
        rebuilt = time.monotonic()
        return Tree(
            size=size,
            root=root,
            url=url,
            names=names,
            writer=writer,
            **self.stored_bytes(writer.paths),
            populate_seconds=populated - started,
            rebuild_seconds=rebuilt - populated,
        )

    def stored_bytes(self, paths: Any) -> dict[str, int]:
        """The snapshot's size in ZooKeeper (its head and its shards), the head's and the
        largest shard's."""
        from kazoo.exceptions import NoNodeError

        client = self.client
        stat = client.exists(paths.snapshot)
        head = total = stat.dataLength if stat is not None else 0
        largest = 0
        shards_dir = getattr(paths, "shards", None)
        if shards_dir is not None:
            try:
                children = client.get_children(shards_dir)
            except NoNodeError:
                children = []
            pending = [client.exists_async(f"{shards_dir}/{child}") for child in children]
            sizes = [s.dataLength for s in (p.get(timeout=60) for p in pending) if s]
            total += sum(sizes)
            largest = max(sizes, default=0)
        return {"snapshot_bytes": total, "head_bytes": head, "largest_shard_bytes": largest}
