"""A long ZooKeeper outage, seen through a TCP proxy that refuses every connection.

kazoo's default connection back-off doubles up to an hour: after 20 s of failures its
next attempt is more than 10 s away. ``RECONNECT_MAX_DELAY`` (1 s) caps ours, so the
process is back within a couple of seconds of ZooKeeper. The outage outlasts the session
timeout (10 s), so the session has expired by then: the watch must be re-armed on the
new session. Meanwhile readers under steady load keep getting the last value.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient, KazooState

from django_zkflags import flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.client import Paths, Requests, acl_for, make_client
from django_zkflags.conf import parse_url
from django_zkflags.exceptions import ZooKeeperUnavailable
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import EMPTY
from django_zkflags.writer import FlagWriter
from tests.support.tcpproxy import TcpProxy

from ..conftest import served_version, wait_until

OUTAGE = 22.0  # seconds; longer than the 10 s session timeout

pytestmark = pytest.mark.slow


class Readers:
    """Threads checking flags in a tight loop, recording every change of answer."""

    def __init__(self, names: list[str], count: int = 4) -> None:
        self.names = names
        self.stop = threading.Event()
        self.counts: list[int] = []
        self.errors: list[BaseException] = []
        self.transitions: list[list[tuple[float, tuple[bool, ...]]]] = [[] for _ in range(count)]
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)
        ]

    def _run(self, index: int) -> None:
        seen = self.transitions[index]
        reads = 0
        while not self.stop.is_set():
            try:
                answer = tuple(flag_is_active_for_user(None, name) for name in self.names)
            except BaseException as exc:  # any exception at all is a failure
                self.errors.append(exc)
                return
            reads += 1
            if not seen or seen[-1][1] != answer:
                seen.append((time.monotonic(), answer))
        self.counts.append(reads)

    @property
    def reads(self) -> int:
        return sum(self.counts)

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def proxied(zk_server: Any, settings: Any) -> Iterator[dict[str, Any]]:
    proxy = TcpProxy("127.0.0.1", zk_server.port).start()
    root = f"/outage-{uuid.uuid4().hex[:10]}"
    settings.ZKFLAGS_URL = f"zk://{proxy.hosts}{root}"
    runtime.start(wait=10.0)
    direct_url = parse_url(f"zk://{zk_server.hosts}{root}")
    direct = make_client(direct_url, session_timeout=10.0, reconnect_max_delay=1.0)
    direct.start(timeout=10)
    try:
        other = FlagWriter(
            Requests(direct, direct_url, timeout=5.0), Paths(root), acl_for(direct_url)
        )
        yield {"proxy": proxy, "root": root, "direct": other}
    finally:
        proxy.unblock()
        runtime.stop()
        store.publish(EMPTY)
        direct.stop()
        direct.close()
        proxy.stop()


def test_long_outage_reconnects_fast_and_delivers_what_changed_meanwhile(proxied):
    proxy: TcpProxy = proxied["proxy"]
    other: FlagWriter = proxied["direct"]  # another writer, connected around the proxy
    rt = runtime.get_runtime()
    writer = rt.writer()
    for name in ("outage", "steady"):
        result = writer.write_flag(FlagRule(name, everyone=True), None)
        wait_until(lambda n=name, v=result.version: served_version(n) == v)

    states: list[tuple[float, str]] = []
    rt.client.add_listener(lambda state: states.append((time.monotonic(), state)))
    # The control: a plain kazoo client with kazoo's default back-off, same proxy.
    control = KazooClient(hosts=proxy.hosts, timeout=10.0)
    control.start(timeout=10)
    control_back: list[float] = []
    control.add_listener(
        lambda state: (
            control_back.append(time.monotonic()) if state == KazooState.CONNECTED else None
        )
    )
    try:
        with Readers(["outage", "steady"]) as readers:
            wait_until(lambda: all(readers.transitions), timeout=10)  # every reader runs
            blocked_at = time.monotonic()
            proxy.block()
            wait_until(lambda: not rt.client.connected, timeout=5)
            # The change made elsewhere while this process is cut off.
            changed = other.write_flag(FlagRule("outage", everyone=False), 0)
            # A write from the cut-off process is refused cleanly, within its timeout.
            started = time.monotonic()
            with pytest.raises(ZooKeeperUnavailable):
                writer.write_flag(FlagRule("steady", everyone=False), 0)
            refused_in = time.monotonic() - started
            assert refused_in < writer.requests.timeout + 2.0
            assert flag_is_active_for_user(None, "outage") is True  # still the last value
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - blocked_at)))
            assert not rt.client.connected and not control.connected
            assert flag_is_active_for_user(None, "outage") is True
            unblocked_at = time.monotonic()
            proxy.unblock()
            wait_until(lambda: rt.client.connected, timeout=15)
            reconnected_in = time.monotonic() - unblocked_at
            wait_until(lambda: served_version("outage") == changed.version, timeout=10)
            delivered_in = time.monotonic() - unblocked_at
            assert flag_is_active_for_user(None, "outage") is False
            # Every reader thread sees it too before the next change (on a loaded machine a
            # thread can wait a while for the CPU and would otherwise skip this value).
            wait_until(
                lambda: all(seen[-1][1] == (False, True) for seen in readers.transitions),
                timeout=10,
            )
            # The session expired during the outage; the watch lives on the new one:
            # a later change arrives through it, with no reconnection in between.
            assert KazooState.LOST in [state for _t, state in states]
            states_before = len(states)
            reads_before = rt.watch.reads
            again = other.write_flag(FlagRule("outage", everyone=True), changed.version)
            wait_until(lambda: served_version("outage") == again.version, timeout=5)
            assert flag_is_active_for_user(None, "outage") is True
            assert len(states) == states_before
            assert rt.watch.reads == reads_before + 1
            # Let every reader thread get the CPU once more (a loaded machine) and see it.
            wait_until(
                lambda: all(seen and seen[-1][1] == (True, True) for seen in readers.transitions),
                timeout=10,
            )
        control_state = (
            f"back after {control_back[-1] - unblocked_at:.1f} s"
            if control_back and control_back[-1] > unblocked_at
            else f"still disconnected {time.monotonic() - unblocked_at:.1f} s after"
        )
    finally:
        control.stop()
        control.close()

    assert readers.errors == []
    for seen in readers.transitions:
        answers = [answer for _t, answer in seen]
        # The last value until the change arrived, then the new one, then the later one.
        assert answers == [(True, True), (False, True), (True, True)], seen
        assert seen[1][0] > unblocked_at
    status = runtime.status()
    assert status["watching"] and status["connected"] and status["last_error"] is None
    print(
        f"\noutage {OUTAGE:.0f} s: {readers.reads} reads, 0 errors; write refused in "
        f"{refused_in:.2f} s; reconnected {reconnected_in:.2f} s after ZooKeeper came back "
        f"(session expired: new session), change made meanwhile applied after "
        f"{delivered_in:.2f} s; kazoo default back-off: {control_state}"
    )
