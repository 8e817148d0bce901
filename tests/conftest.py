"""Fixtures: a real ZooKeeper for the session, a fresh root path per test."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_zkflags import runtime
from django_zkflags.cache import store
from django_zkflags.reader import TreeReader
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import EMPTY
from django_zkflags.writer import FlagWriter, WriteResult
from tests.support.zookeeper import ZooKeeperError, ZooKeeperServer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


def require_zookeeper(exc: Exception) -> None:
    """No ZooKeeper here: a failure in CI, a skip (with the reason) on a laptop."""
    message = f"ZooKeeper is required for this test: {exc}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer]:
    try:
        server = ZooKeeperServer()
        server.start()
    except ZooKeeperError as exc:
        require_zookeeper(exc)
    yield server
    server.cleanup()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005) -> Any:
    """Poll until ``predicate()`` is truthy; a generous bound that only catches hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
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

    def wait_version(self, name: str, version: int | None, timeout: float = 10.0) -> None:
        def seen() -> bool:
            rule = store.base.flags.get(name)
            return (rule.version if rule else None) == version

        wait_until(seen, timeout)


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
