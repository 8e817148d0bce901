"""Fixtures and helpers shared by the three tiers (see tests/README.md).

A real ZooKeeper for the session and a fresh root per test (``zkflags``); a plain kazoo
client straight to a server, as another process or an operator with zkCli would have
(``direct``, ``kazoo_clients``); this process's runtime behind a TcpProxy
(``proxied_site``); and, for the unit tier, snapshots built in the test and published
into the store the way the watcher would (``publish``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from django_zkflags import runtime
from django_zkflags.cache import store
from django_zkflags.client import Paths, Requests, acl_for
from django_zkflags.conf import ZooKeeperURL, parse_url
from django_zkflags.reader import TreeReader, read_view
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import EMPTY, Snapshot
from django_zkflags.writer import FlagWriter, WriteResult
from tests.support.tcpproxy import TcpProxy
from tests.support.zookeeper import (
    ZooKeeperError,
    ZooKeeperNotInstalled,
    ZooKeeperServer,
    find_classpath,
    find_java,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: A bound on waits for something that happens in milliseconds: a hang catcher.
BOUND = 10.0

TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Mark each test with its tier (its directory); system tests are slow."""
    for item in items:
        parts = item.nodeid.split("/")
        tier = parts[1] if len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS else None
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
            if tier == "system":
                item.add_marker(pytest.mark.slow)


# -- ZooKeeper servers ------------------------------------------------------------------------


def require_zookeeper(exc: Exception) -> None:
    """No ZooKeeper here: a failure in CI, a skip (with the reason) on a laptop."""
    message = f"ZooKeeper is required for this test: {exc}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_zookeeper_installed() -> None:
    """ZooKeeper and Java are installed (else a skip, or a failure in CI)."""
    try:
        find_classpath()
        find_java()
    except ZooKeeperNotInstalled as exc:
        require_zookeeper(exc)


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer]:
    try:
        server = ZooKeeperServer()
        server.start()
    except ZooKeeperError as exc:
        require_zookeeper(exc)
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def private_zk_server() -> Iterator[ZooKeeperServer]:
    """A server of the test module's own, for tests that pause it or count its watches."""
    require_zookeeper_installed()
    server = ZooKeeperServer()
    server.start()
    yield server
    server.cleanup()


def fast_retry() -> KazooRetry:
    """A connection retry that keeps tests quick (kazoo's default backs off up to an hour)."""
    return KazooRetry(max_tries=-1, delay=0.05, backoff=1.5, max_delay=0.3)


@pytest.fixture
def kazoo_clients() -> Iterator[Callable[..., KazooClient]]:
    """Start plain kazoo clients (not the app's): ``make(hosts, auth=("user", "pw"), ...)``.

    They reconnect quickly (``fast_retry``) unless given another ``connection_retry``.
    Each is stopped and closed at the end of the test.
    """
    clients: list[KazooClient] = []

    def make(
        hosts: str, *, auth: tuple[str, str] | None = None, start: bool = True, **kwargs: Any
    ) -> KazooClient:
        kwargs.setdefault("timeout", 10.0)
        kwargs.setdefault("connection_retry", fast_retry())
        if auth is not None:
            kwargs["auth_data"] = [("digest", f"{auth[0]}:{auth[1]}")]
        client = KazooClient(hosts=hosts, **kwargs)
        clients.append(client)
        if start:
            client.start(timeout=15)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.stop()
            client.close()


@pytest.fixture
def direct(zk_server: ZooKeeperServer, kazoo_clients: Callable[..., KazooClient]) -> KazooClient:
    """A second client, straight to the session's server: another process, or an operator
    with zkCli and the same rights, writing behind this process's back."""
    return kazoo_clients(zk_server.hosts)


# -- helpers ---------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = BOUND,
    interval: float = 0.005,
    *,
    what: str = "condition",
) -> Any:
    """Poll until ``predicate()`` is truthy; a generous bound that only catches hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def flag_doc(name: str, **fields: Any) -> dict[str, Any]:
    """A complete flag document as ZooKeeper stores it (defaults, then ``fields``)."""
    doc = {
        "name": name,
        "everyone": None,
        "percent": None,
        "superusers": False,
        "staff": False,
        "authenticated": False,
        "users": [],
        "groups": [],
        "note": "",
    }
    doc.update(fields)
    return doc


def audit(name: str) -> list[Any]:
    """The audit rows of one flag, oldest first."""
    from django_zkflags.models import FlagChange

    return list(FlagChange.objects.filter(flag_name=name).order_by("pk"))


def row_state(name: str) -> tuple[Any, ...]:
    """The admin row of one flag: its rule document and the znode version it mirrors."""
    from django_zkflags.models import Flag

    flag = Flag.objects.get(name=name)
    return (flag.to_rule().to_document(), flag.zk_version)


def zkflags_command(*args: str) -> str:
    """``manage.py zkflags ...``, its output."""
    from django.core.management import call_command

    out = StringIO()
    call_command("zkflags", *args, stdout=out)
    return out.getvalue()


def served_version(name: str) -> int | None:
    """The version of flag ``name`` this process serves (None: it does not know the flag)."""
    rule = store.base.flags.get(name)
    return rule.version if rule is not None else None


def writer_for(client: KazooClient, url: ZooKeeperURL, timeout: float) -> FlagWriter:
    """A FlagWriter on ``client`` (not the runtime's) for the root of ``url``."""
    return FlagWriter(Requests(client, url, timeout), Paths(url.root), acl_for(url))


IF_ELSE = '{% flag "x" %}A{% else %}B{% endflag %}'


def render(source: str, context: dict | None = None, request: Any = None) -> str:
    """Render ``source`` with the zkflags template tags loaded."""
    from django.template import Context, RequestContext, Template

    template = Template("{% load zkflags %}" + source)
    if request is not None:
        return template.render(RequestContext(request, context or {}))
    return template.render(Context(context or {}))


# -- this process's flags, through a real ZooKeeper -------------------------------------------


class ZkFlags:
    """What a test needs to drive flags through a real ZooKeeper."""

    def __init__(self, server: ZooKeeperServer, url: str, root: str) -> None:
        self.server = server
        self.url = url
        self.root = root

    @property
    def runtime(self) -> runtime.FlagRuntime:
        return runtime.get_runtime()

    @property
    def writer(self) -> FlagWriter:
        return runtime.get_runtime().writer()

    @property
    def reader(self) -> TreeReader:
        return runtime.get_runtime().reader()

    def read(self, name: str) -> tuple[dict[str, Any] | None, int | None]:
        """The flag's document and znode version in ZooKeeper ((None, None): no znode)."""
        stored = self.reader.flag(name)
        return stored.document(), stored.version

    def put(self, doc: dict[str, Any], expected_version: int | None) -> WriteResult:
        """Write a flag document straight to ZooKeeper through the writer (no row, no audit)."""
        return self.writer.write_flag(FlagRule.from_document(doc), expected_version)

    def write(self, name: str, **rules: Any) -> int:
        """Create or update a flag straight in ZooKeeper and wait until this process sees it."""
        stored = self.reader.flag(name)
        base = stored.document() or {"name": name, "everyone": None}
        result = self.put({**base, **rules}, stored.version)
        assert result.version is not None
        self.wait_version(name, result.version)
        return result.version

    def wait_version(self, name: str, version: int | None, timeout: float = BOUND) -> None:
        wait_until(lambda: served_version(name) == version, timeout)


@pytest.fixture
def zkflags(zk_server: ZooKeeperServer, settings: Any) -> Iterator[ZkFlags]:
    root = f"/t-{uuid.uuid4().hex[:12]}"
    url = f"zk://{zk_server.hosts}{root}"
    settings.ZKFLAGS_URL = url
    runtime.start(wait=10.0)
    try:
        yield ZkFlags(zk_server, url, root)
    finally:
        runtime.stop()
        store.publish(EMPTY)


# -- this process's flags, behind a TcpProxy --------------------------------------------------


@pytest.fixture
def proxy(zk_server: ZooKeeperServer) -> Iterator[TcpProxy]:
    """A TcpProxy in front of the session's server, to cut, block or stall the network."""
    with TcpProxy(zk_server.host, zk_server.port) as the_proxy:
        yield the_proxy


class ProxiedSite:
    """This process's runtime, connected through ``proxy``; writes go around it."""

    def __init__(self, zk_server: ZooKeeperServer, proxy: TcpProxy, direct: KazooClient):
        self.proxy = proxy
        self.direct = direct
        self.root = f"/w-{uuid.uuid4().hex[:12]}"
        self.url = f"zk://{proxy.hosts}{self.root}"
        self.writer = writer_for(direct, parse_url(f"zk://{zk_server.hosts}{self.root}"), 5.0)
        self.states: list[str] = []
        self.runtime: runtime.FlagRuntime | None = None

    @property
    def snapshot_path(self) -> str:
        return f"{self.root}/snapshot"

    def start(self) -> runtime.FlagRuntime:
        self.runtime = runtime.start(wait=BOUND)
        assert self.runtime.loaded.is_set(), "no first snapshot from ZooKeeper"
        self.runtime.client.add_listener(self.states.append)
        return self.runtime

    def write(self, name: str, **rules: Any) -> int:
        stored = self.writer.reader.flag(name)
        base = stored.document() or {"name": name, "everyone": None}
        result = self.writer.write_flag(FlagRule.from_document({**base, **rules}), stored.version)
        assert result.version is not None
        return result.version

    def wait_version(self, name: str, version: int | None, timeout: float = BOUND) -> None:
        wait_until(lambda: served_version(name) == version, timeout)

    def write_and_wait(self, name: str, **rules: Any) -> int:
        version = self.write(name, **rules)
        self.wait_version(name, version)
        return version

    def wait_seen_around_the_proxy(self, name: str, version: int) -> None:
        """Barrier: a watcher connected straight to the server (not through the proxy) has
        received the snapshot holding ``name`` at ``version``. A process that could receive
        it would have had the same chance by now."""
        from django_zkflags.watcher import NodeWatch

        seen = threading.Event()

        def on_data(data: bytes | None, stat: Any) -> None:
            entry = read_view(self.direct, self.root)["flags"].get(name)
            if entry is not None and entry.get("version") == version:
                seen.set()

        watch = NodeWatch(self.direct, self.snapshot_path, on_data, name="barrier-watch")
        watch.start()
        try:
            assert seen.wait(BOUND), f"{name} v{version} not seen around the proxy"
        finally:
            watch.stop()

    def wait_states(self, *expected: str, timeout: float = BOUND) -> None:
        """``expected`` appear in this order among the states seen since the last clear."""

        def seen() -> bool:
            position = 0
            for state in self.states:
                if position < len(expected) and state == expected[position]:
                    position += 1
            return position == len(expected)

        try:
            wait_until(seen, timeout, interval=0.02)
        except AssertionError:
            raise AssertionError(f"states {expected} not seen; saw {self.states}") from None

    def assert_healthy(self) -> None:
        assert self.runtime is not None
        assert self.runtime.watch is not None and self.runtime.watch.alive
        status = runtime.status()
        assert status["watching"] is True
        assert status["connected"] is True


@pytest.fixture
def proxied_site_factory(
    zk_server: ZooKeeperServer, proxy: TcpProxy, direct: KazooClient, settings: Any
) -> Iterator[Callable[..., ProxiedSite]]:
    """Start this process's runtime behind ``proxy``, with ZKFLAGS ``options``."""

    def make(**options: Any) -> ProxiedSite:
        site = ProxiedSite(zk_server, proxy, direct)
        settings.ZKFLAGS = {**settings.ZKFLAGS, "STARTUP_TIMEOUT": BOUND, **options}
        settings.ZKFLAGS_URL = site.url
        site.start()
        return site

    try:
        yield make
    finally:
        runtime.stop()
        store.publish(EMPTY)


@pytest.fixture
def proxied_site(proxied_site_factory: Callable[..., ProxiedSite]) -> ProxiedSite:
    return proxied_site_factory()


# -- this process's flags, without ZooKeeper (the unit tier) ----------------------------------


@pytest.fixture
def publish() -> Iterator[Callable[..., Snapshot]]:
    """Serve the rules given, as if the watcher had published a snapshot holding them.

    No ZooKeeper: for tests whose behaviour does not cross it. The store is empty again
    at the end of the test.
    """

    def publish_rules(*rules: FlagRule) -> Snapshot:
        snapshot = Snapshot({rule.name: rule for rule in rules}, source="test")
        store.publish(snapshot)
        return snapshot

    try:
        yield publish_rules
    finally:
        store.publish(EMPTY)


@pytest.fixture
def changes() -> Iterator[list]:
    """The ``flag_changed`` signals sent during the test: ``(names, snapshot)`` pairs."""
    from django_zkflags.signals import flag_changed

    received: list = []
    lock = threading.Lock()

    def receiver(sender: Any, names: frozenset[str], snapshot: Snapshot, **kwargs: Any) -> None:
        with lock:
            received.append((names, snapshot))

    flag_changed.connect(receiver, weak=False, dispatch_uid="tests-changes")
    yield received
    flag_changed.disconnect(dispatch_uid="tests-changes")


@pytest.fixture
def no_middleware(settings: Any) -> None:
    """The project without FlagMiddleware."""
    from django_zkflags.checks import MIDDLEWARE_PATH

    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]


# -- people --------------------------------------------------------------------------------


@pytest.fixture
def people() -> tuple[list[Any], list[Any]]:
    """Three users (person0..2) and two groups (group0..1); the test needs the database."""
    from django.contrib.auth.models import Group, User

    users = [User.objects.create_user(f"person{i}") for i in range(3)]
    groups = [Group.objects.create(name=f"group{i}") for i in range(2)]
    return users, groups
