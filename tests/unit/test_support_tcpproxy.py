"""The fault-injection proxy (tests/support/tcpproxy.py) with a plain echo server: no
ZooKeeper. Between kazoo and ZooKeeper: tests/system/test_support_tcpproxy.py."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.tcpproxy import TcpProxy
from tests.support.zookeeper import free_port

from ..conftest import wait_until


@pytest.fixture
def echo_server() -> Iterator[int]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stopping = threading.Event()
    handlers: list[threading.Thread] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            while not stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=echo, args=(conn,), daemon=True)
            handlers.append(thread)
            thread.start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    yield listener.getsockname()[1]
    stopping.set()
    acceptor.join(2)
    for thread in handlers:
        thread.join(2)
    listener.close()


def _roundtrip(sock: socket.socket, payload: bytes, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_proxy_forwards_pauses_blocks_and_stops_cleanly(echo_server: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_server).start()
    try:
        assert proxy.address == ("127.0.0.1", proxy.port)
        big = os.urandom(3 * 1024 * 1024)  # more than the per-direction buffer
        with socket.create_connection(proxy.address) as sock:
            assert _roundtrip(sock, b"ping") == b"ping"
            assert _roundtrip(sock, big, timeout=10) == big
            wait_until(lambda: proxy.connection_count == 1, 10, what="one connection")

            proxy.pause()
            sock.sendall(b"held")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(10)
            proxy.resume()
            sock.settimeout(10)  # generous bounds: they only catch hangs, on a loaded machine
            assert sock.recv(10) == b"held"

            assert proxy.drop_all() == 1
            sock.settimeout(10)
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
        wait_until(lambda: proxy.connection_count == 0, 10, what="no connections")

        proxy.block()
        with socket.create_connection(proxy.address) as sock:
            sock.settimeout(10)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                sock.sendall(b"x")
                sock.recv(10)
        proxy.unblock()
        with socket.create_connection(proxy.address) as sock:
            assert _roundtrip(sock, b"again") == b"again"
        # A clean close by the client is passed on and the pair goes away.
        wait_until(lambda: proxy.connection_count == 0, 10, what="closed pair")
    finally:
        proxy.stop()
    assert not proxy.is_running
    assert not any(t.name.startswith("TcpProxy") for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=1).close()
    # Restartable on the same port.
    port = proxy.port
    with proxy:
        assert proxy.port == port
        with socket.create_connection(proxy.address) as sock:
            assert _roundtrip(sock, b"back") == b"back"


def test_proxy_to_a_dead_target_resets_clients() -> None:
    with TcpProxy("127.0.0.1", free_port()) as proxy:
        with socket.create_connection(proxy.address) as sock:
            sock.settimeout(10)
            try:
                data = sock.recv(10)
            except ConnectionResetError:
                data = b""
            assert data == b""
        wait_until(lambda: proxy.connection_count == 0, 10, what="no connections")
