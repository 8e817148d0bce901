"""The ZooKeeper client: how it connects, authenticates and waits, the ACL of what it
creates, and the tree layout under the root path.

Tree under the root path of ``ZKFLAGS_URL``::

    <root>/flags/<name>   one JSON document per flag (the record an editor changes)
    <root>/environments   environment parents and hosts pegged to an environment
    <root>/snapshot       the head of the materialized view (what every process watches)
    <root>/shards/<k>     the view's flags, spread by a hash of their names (snapshot.py)
    <root>/changes/c-N    who changed what, written in the same multi() as the change and
                          deleted once the audit row is committed (see services)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.views.decorators.debug import sensitive_variables
from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoAuthError,
    NotReadOnlyCallError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from kazoo.security import OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, make_digest_acl

from .conf import ZooKeeperURL
from .exceptions import PermissionDenied, ZooKeeperUnavailable
from .redaction import install_log_filter, remember
from .rules import validate_name

FLAGS_DIR = "flags"
SNAPSHOT_NODE = "snapshot"
SHARDS_DIR = "shards"
ENVIRONMENTS_NODE = "environments"
CHANGES_DIR = "changes"

#: Errors that mean "ZooKeeper cannot be reached right now".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionLoss,
    ConnectionClosedError,
    SessionExpiredError,
    OperationTimeoutError,
    KazooTimeoutError,
)


@dataclass(frozen=True)
class Paths:
    """Where things are under one root."""

    root: str

    @property
    def flags(self) -> str:
        return f"{self.root}/{FLAGS_DIR}"

    @property
    def snapshot(self) -> str:
        return f"{self.root}/{SNAPSHOT_NODE}"

    @property
    def shards(self) -> str:
        return f"{self.root}/{SHARDS_DIR}"

    def shard(self, index: int) -> str:
        return f"{self.root}/{SHARDS_DIR}/{index}"

    @property
    def environments(self) -> str:
        return f"{self.root}/{ENVIRONMENTS_NODE}"

    @property
    def changes(self) -> str:
        return f"{self.root}/{CHANGES_DIR}"

    def flag(self, name: str) -> str:
        return f"{self.root}/{FLAGS_DIR}/{validate_name(name)}"


def gevent_patched() -> bool:
    """Is this a gevent-patched process (kazoo needs its gevent handler there)?"""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def _handler() -> Any:
    """kazoo's gevent handler in a gevent-patched process, its threading one otherwise."""
    if gevent_patched():
        from kazoo.handlers.gevent import SequentialGeventHandler

        return SequentialGeventHandler()
    return None


@sensitive_variables()
def make_client(
    url: ZooKeeperURL, *, session_timeout: float, reconnect_max_delay: float, **kwargs: Any
) -> KazooClient:
    """A client that reconnects quickly forever and authenticates with the URL's identity.

    kazoo's default connection retry backs off towards an hour: after a long outage a
    process could stay disconnected for minutes after ZooKeeper is back.

    kazoo logs the credentials it sends (see :mod:`django_zkflags.redaction`): its loggers
    get a filter that masks them. All local variables here, and in kazoo's frames below,
    are hidden from Django's error reports (``sensitive_variables``).
    """
    remember(url.username, url.password)
    install_log_filter(kwargs.get("logger"))
    auth = [("digest", f"{url.username}:{url.password}")] if url.has_credentials else None
    return KazooClient(
        hosts=url.hosts,
        timeout=session_timeout,
        connection_retry=KazooRetry(
            max_tries=-1, delay=0.05, backoff=2, max_delay=reconnect_max_delay
        ),
        command_retry=None,
        auth_data=auth,
        handler=kwargs.pop("handler", None) or _handler(),
        **kwargs,
    )


@sensitive_variables()
def acl_for(url: ZooKeeperURL) -> list[Any]:
    """With credentials, only that identity may write; everybody may read. ACLs are not
    inherited in ZooKeeper: this goes on every node the app creates."""
    if not url.has_credentials:
        return list(OPEN_ACL_UNSAFE)
    assert url.username is not None and url.password is not None
    return [make_digest_acl(url.username, url.password, all=True), *READ_ACL_UNSAFE]


_budget_ends: ContextVar[float | None] = ContextVar("zkflags_budget_ends", default=None)


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Every ZooKeeper request made inside the block shares one time budget: a person
    waiting on a page that reads ZooKeeper several times (the form, its history, its
    schedules) waits at most about ``seconds`` in all when ZooKeeper does not answer, not
    once per read."""
    ends = time.monotonic() + seconds
    outer = _budget_ends.get()
    token = _budget_ends.set(ends if outer is None else min(outer, ends))
    try:
        yield
    finally:
        _budget_ends.reset(token)


class Requests:
    """kazoo requests made with a time bound, their errors turned into ours."""

    def __init__(self, client: KazooClient, url: ZooKeeperURL, timeout: float) -> None:
        self.client = client
        self.url = url
        self.timeout = timeout

    def _wait(self) -> float:
        """This request's bound: the timeout, or what is left of the time budget."""
        ends = _budget_ends.get()
        if ends is None:
            return self.timeout
        return max(0.0, min(self.timeout, ends - time.monotonic()))

    def wait_connected(self) -> None:
        wait = self._wait()
        deadline = time.monotonic() + wait
        while not self.client.connected:
            if time.monotonic() >= deadline:
                raise ZooKeeperUnavailable(
                    f"ZooKeeper is unreachable ({self.url.hosts}, waited {wait:g}s)"
                )
            time.sleep(0.02)

    def result(self, async_result: Any, *, raw: bool = False) -> Any:
        """Wait for a request; unless ``raw``, a connection error becomes
        :class:`ZooKeeperUnavailable` (with ``raw`` it is raised as kazoo's)."""
        wait = self._wait()
        try:
            try:
                return async_result.get(timeout=wait)
            except self.client.handler.timeout_exception as exc:  # threading or gevent
                raise ConnectionLoss(f"no answer within {wait:g}s") from exc
        except NotReadOnlyCallError:
            raise ZooKeeperUnavailable("ZooKeeper is read-only (no quorum)") from None
        except NoAuthError:
            raise PermissionDenied(
                "ZooKeeper refused the request (ACL): check the credentials in ZKFLAGS_URL"
            ) from None
        except UNAVAILABLE_ERRORS as exc:
            if raw:
                raise
            raise ZooKeeperUnavailable(
                f"ZooKeeper is unreachable ({self.url.hosts}): {exc!r}"
            ) from exc
