"""The fault-injection proxy (tests/support/tcpproxy.py) between kazoo and a real
ZooKeeper: dropped connections, a partition, a stall longer than the session timeout."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import ConnectionLoss, NoNodeError

from tests.support.tcpproxy import TcpProxy
from tests.support.zookeeper import ZooKeeperServer

from ..conftest import wait_until


class StateRecorder:
    """A kazoo connection listener that records states and lets a test wait for them."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, state: str) -> None:  # runs on kazoo's thread: keep it tiny
        with self._cond:
            self.states.append(state)
            self._cond.notify_all()

    def wait_for(self, state: str, timeout: float, start: int = 0) -> int:
        """Wait for ``state`` at or after position ``start``; return its position."""
        with self._cond:
            ok = self._cond.wait_for(lambda: state in self.states[start:], timeout)
            assert ok, f"no {state} within {timeout} s; states seen: {self.states}"
            return self.states.index(state, start)


def test_proxy_drop_all_makes_kazoo_suspend_then_reconnect(
    private_zk_server: ZooKeeperServer, kazoo_clients: Callable[..., KazooClient]
) -> None:
    with TcpProxy("127.0.0.1", private_zk_server.port) as proxy:
        states = StateRecorder()
        client = kazoo_clients(proxy.hosts, timeout=4.0)
        client.add_listener(states)
        client.ensure_path("/proxy")
        assert proxy.connection_count == 1
        session_id = client.client_id[0]

        assert proxy.drop_all() == 1
        i = states.wait_for(KazooState.SUSPENDED, 5)
        states.wait_for(KazooState.CONNECTED, 5, start=i)
        assert KazooState.LOST not in states.states
        assert client.client_id[0] == session_id  # same session
        client.set("/proxy", b"after-drop")
        assert proxy.accepted_count >= 2

        # A partition: nothing gets through until unblock().
        mark = len(states.states)
        proxy.block()
        i = states.wait_for(KazooState.SUSPENDED, 5, start=mark)
        with pytest.raises((ConnectionLoss, client.handler.timeout_exception)):
            client.get_async("/proxy").get(timeout=0.5)
        proxy.unblock()
        states.wait_for(KazooState.CONNECTED, 10, start=i)
        assert client.get("/proxy")[0] == b"after-drop"


def test_proxy_pause_longer_than_session_timeout_expires_session(
    private_zk_server: ZooKeeperServer, kazoo_clients: Callable[..., KazooClient]
) -> None:
    with TcpProxy("127.0.0.1", private_zk_server.port) as proxy:
        states = StateRecorder()
        # tickTime=500 -> the server allows session timeouts from 1 s.
        client = kazoo_clients(proxy.hosts, timeout=2.0)
        client.add_listener(states)
        assert client._session_timeout == 2000  # negotiated
        old_session = client.client_id[0]
        client.create("/proxy-ephemeral", b"", ephemeral=True)
        direct = kazoo_clients(
            private_zk_server.hosts
        )  # around the proxy: sees when the session expires

        proxy.pause()
        states.wait_for(KazooState.SUSPENDED, 5)
        # Paused for longer than the session timeout: wait until the server has expired
        # the session (its ephemeral node is gone), however slow a loaded machine is.
        wait_until(lambda: direct.exists("/proxy-ephemeral") is None, 15, what="session expiry")
        proxy.resume()

        lost = states.wait_for(KazooState.LOST, 10)
        states.wait_for(KazooState.CONNECTED, 10, start=lost)
        assert client.client_id[0] != old_session  # a new session
        with pytest.raises(NoNodeError):
            client.get("/proxy-ephemeral")  # its ephemeral node went with it
