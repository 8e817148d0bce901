"""Tests of the local ZooKeeper helpers (tests.support.zookeeper) and the fault
injection proxy (tests.support.tcpproxy), against real ZooKeeper servers.

No Django needed: ``pytest tests/test_zkserver.py -p no:django``.

Without ZooKeeper installed these tests are skipped, except when ``CI=true``,
where they fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    ConnectionLoss,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.retry import KazooRetry

from tests.support import zookeeper as zkserver
from tests.support.tcpproxy import TcpProxy
from tests.support.zookeeper import (
    ZooKeeperEnsemble,
    ZooKeeperNotInstalled,
    ZooKeeperServer,
    ZooKeeperStartError,
    find_classpath,
    find_java,
    free_port,
)

from . import conftest

REPO_ROOT = Path(__file__).resolve().parents[1]


def require_zookeeper() -> None:
    """Skip without ZooKeeper -- but fail on CI (CI=true), where it must be installed."""
    try:
        find_classpath()
        find_java()
    except ZooKeeperNotInstalled as exc:
        conftest.require_zookeeper(exc)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


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


def fast_retry() -> KazooRetry:
    # kazoo's default connection retry backs off up to an hour; keep tests quick.
    return KazooRetry(max_tries=-1, delay=0.05, backoff=1.5, max_delay=0.3)


@pytest.fixture(scope="module")
def zk() -> Iterator[ZooKeeperServer]:
    require_zookeeper()
    server = ZooKeeperServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def make_client() -> Iterator[Callable[..., KazooClient]]:
    clients: list[KazooClient] = []

    def make(hosts: str, *, start: bool = True, **kwargs: object) -> KazooClient:
        kwargs.setdefault("connection_retry", fast_retry())
        client = KazooClient(hosts=hosts, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        if start:
            client.start(timeout=10)
        return client

    yield make
    for client in clients:
        client.stop()
        client.close()


# ---------------------------------------------------------------------------
# Installation


def test_zookeeper_is_installed() -> None:
    require_zookeeper()
    assert "zookeeper" in find_classpath().lower() or zkserver.CLASSPATH_ENV_VAR in os.environ


def test_missing_zookeeper_is_reported_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(zkserver.CLASSPATH_ENV_VAR, raising=False)
    monkeypatch.setattr(zkserver, "DEBIAN_JAR", str(tmp_path / "nope.jar"))
    with pytest.raises(ZooKeeperNotInstalled, match="apt-get install zookeeper"):
        find_classpath()
    monkeypatch.setenv(zkserver.CLASSPATH_ENV_VAR, "/opt/zk/lib/*:/opt/zk/conf")
    assert find_classpath() == "/opt/zk/lib/*:/opt/zk/conf"
    monkeypatch.setattr(zkserver.shutil, "which", lambda name: None)
    with pytest.raises(ZooKeeperNotInstalled, match="java"):
        find_java()
    assert isinstance(ZooKeeperNotInstalled("x"), RuntimeError)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# ---------------------------------------------------------------------------
# A single server


def test_server_answers_four_letter_words(zk: ZooKeeperServer) -> None:
    assert zk.is_running
    assert zk.hosts == f"127.0.0.1:{zk.port}"
    assert zk.four_letter("ruok") == "imok"
    assert zk.mode() == "standalone"
    assert "Mode: standalone" in zk.four_letter("stat")
    assert "zk_version" in zk.four_letter("mntr")
    assert (zk.data_dir / "zoo.cfg").read_text().count("admin.enableServer=false") == 1
    assert zk.last_start_duration is not None and zk.last_start_duration < 30


def test_kazoo_creates_znode_and_watches_show_up(
    zk: ZooKeeperServer, make_client: Callable[..., KazooClient]
) -> None:
    client = make_client(zk.hosts)
    client.create("/zkserver-test/a", b"hello", makepath=True)
    data, stat = client.get("/zkserver-test/a", watch=lambda event: None)
    assert data == b"hello" and stat.version == 0
    wchc = zk.four_letter("wchc")
    assert isinstance(wchc, str) and "/zkserver-test/a" in wchc
    assert "Total watches:1" in zk.four_letter("wchs")


@pytest.mark.slow
def test_stop_start_and_kill_keep_data(
    tmp_path: Path, make_client: Callable[..., KazooClient]
) -> None:
    require_zookeeper()
    server = ZooKeeperServer(tmp_path / "zk")
    try:
        server.start()
        port = server.port
        client = make_client(server.hosts)
        client.create("/persist", b"v1")
        client.stop()

        server.stop()
        assert not server.is_running
        assert server.four_letter("ruok") == ""  # connection refused -> ""
        assert server.mode() is None

        server.start()
        assert server.port == port
        client = make_client(server.hosts)
        assert client.get("/persist")[0] == b"v1"
        client.set("/persist", b"v2")
        client.stop()

        server.kill()  # crash: no clean shutdown
        assert not server.is_running
        server.start()
        client = make_client(server.hosts)
        assert client.get("/persist")[0] == b"v2"

        server.restart()
        assert server.mode() == "standalone"
    finally:
        server.cleanup()
    # It did not create the directory, so it keeps it.
    assert (tmp_path / "zk" / "data" / "version-2").is_dir()


def test_pause_and_resume(zk: ZooKeeperServer) -> None:
    zk.pause()
    try:
        assert zk.is_running and zk.is_paused
        with pytest.raises(TimeoutError):
            zk.four_letter("ruok", timeout=0.3)
        assert zk.mode(timeout=0.3) is None
    finally:
        zk.resume()
    assert zk.four_letter("ruok") == "imok"


def test_temp_dir_is_removed_by_cleanup_and_context_manager() -> None:
    require_zookeeper()
    with ZooKeeperServer() as server:
        directory = server.data_dir
        assert server.mode() == "standalone"
        assert (directory / "zookeeper.log").exists()
    assert not server.is_running
    assert not directory.exists()


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    require_zookeeper()
    # Something else already listens on the port.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = ZooKeeperServer(tmp_path / "busy", squatter.getsockname()[1])
        with pytest.raises(ZooKeeperStartError, match="in use"):
            server.start(timeout=5)
        assert not server.is_running
    # The JVM exits at once on a broken config: the error carries its log.
    server = ZooKeeperServer(tmp_path / "bad", extra_config={"tickTime": "not-a-number"})
    with pytest.raises(ZooKeeperStartError, match="exited") as excinfo:
        server.start(timeout=20)
    assert "not-a-number" in str(excinfo.value) or "NumberFormat" in str(excinfo.value)
    assert not server.is_running


# ---------------------------------------------------------------------------
# An ensemble


@pytest.mark.slow
def test_ensemble_elects_one_leader_and_survives_losing_it(
    make_client: Callable[..., KazooClient],
) -> None:
    require_zookeeper()
    with ZooKeeperEnsemble(3) as ensemble:
        assert len(ensemble.servers) == 3
        assert ensemble.hosts.count(",") == 2
        modes = ensemble.modes()
        assert modes.count("leader") == 1 and modes.count("follower") == 2, modes
        leader = ensemble.leader_index()
        assert leader is not None
        assert sorted(ensemble.follower_indexes()) == sorted({0, 1, 2} - {leader})

        client = make_client(ensemble.hosts, timeout=4.0)
        client.create("/ens/x", b"1", makepath=True)

        ensemble.stop_node(leader)
        new_leader = ensemble.wait_for_quorum(timeout=20)
        assert new_leader != leader
        retry = KazooRetry(max_tries=50, delay=0.1, max_delay=0.5)
        retry(client.set, "/ens/x", b"2")
        assert client.get("/ens/x")[0] == b"2"

        # The old leader comes back as a follower and has the new data.
        ensemble.start_node(leader)
        assert ensemble.wait_for_quorum(timeout=20) == new_leader
        assert ensemble.modes()[leader] == "follower"
        check = make_client(ensemble.servers[leader].hosts)
        check.sync("/ens/x")
        assert check.get("/ens/x")[0] == b"2"
        check.stop()

        # Two of three down: no quorum, writes fail.
        ensemble.stop_node(new_leader)
        ensemble.stop_node(leader)
        survivor = ({0, 1, 2} - {leader, new_leader}).pop()
        wait_until(
            lambda: ensemble.servers[survivor].mode(timeout=0.5) is None,
            10,
            "the survivor to stop serving",
        )
        with pytest.raises(TimeoutError):
            ensemble.wait_for_quorum(timeout=0.5)
        # kazoo queues a request made while disconnected: it neither fails
        # nor succeeds, the caller's wait times out (KazooTimeoutError).
        with pytest.raises((ConnectionLoss, SessionExpiredError, client.handler.timeout_exception)):
            client.create_async("/ens/y", b"").get(timeout=2)
        assert client.state == KazooState.SUSPENDED


# ---------------------------------------------------------------------------
# The TCP proxy, with a plain echo server


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
            wait_until(lambda: proxy.connection_count == 1, 10, "one connection")

            proxy.pause()
            sock.sendall(b"held")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(10)
            proxy.resume()
            sock.settimeout(2)
            assert sock.recv(10) == b"held"

            assert proxy.drop_all() == 1
            sock.settimeout(2)
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
        wait_until(lambda: proxy.connection_count == 0, 10, "no connections")

        proxy.block()
        with socket.create_connection(proxy.address) as sock:
            sock.settimeout(2)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                sock.sendall(b"x")
                sock.recv(10)
        proxy.unblock()
        with socket.create_connection(proxy.address) as sock:
            assert _roundtrip(sock, b"again") == b"again"
        # A clean close by the client is passed on and the pair goes away.
        wait_until(lambda: proxy.connection_count == 0, 10, "closed pair")
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
            sock.settimeout(2)
            try:
                data = sock.recv(10)
            except ConnectionResetError:
                data = b""
            assert data == b""
        wait_until(lambda: proxy.connection_count == 0, 10, "no connections")


# ---------------------------------------------------------------------------
# The TCP proxy between kazoo and ZooKeeper


def test_proxy_drop_all_makes_kazoo_suspend_then_reconnect(
    zk: ZooKeeperServer, make_client: Callable[..., KazooClient]
) -> None:
    with TcpProxy("127.0.0.1", zk.port) as proxy:
        states = StateRecorder()
        client = make_client(proxy.hosts, timeout=4.0)
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


@pytest.mark.slow
def test_proxy_pause_longer_than_session_timeout_expires_session(
    zk: ZooKeeperServer, make_client: Callable[..., KazooClient]
) -> None:
    with TcpProxy("127.0.0.1", zk.port) as proxy:
        states = StateRecorder()
        # tickTime=500 -> the server allows session timeouts from 1 s.
        client = make_client(proxy.hosts, timeout=2.0)
        client.add_listener(states)
        assert client._session_timeout == 2000  # negotiated
        old_session = client.client_id[0]
        client.create("/proxy-ephemeral", b"", ephemeral=True)
        direct = make_client(zk.hosts)  # around the proxy: sees when the session expires

        proxy.pause()
        states.wait_for(KazooState.SUSPENDED, 5)
        # Paused for longer than the session timeout: wait until the server has expired
        # the session (its ephemeral node is gone), however slow a loaded machine is.
        wait_until(lambda: direct.exists("/proxy-ephemeral") is None, 15, "session expiry")
        proxy.resume()

        lost = states.wait_for(KazooState.LOST, 10)
        states.wait_for(KazooState.CONNECTED, 10, start=lost)
        assert client.client_id[0] != old_session  # a new session
        with pytest.raises(NoNodeError):
            client.get("/proxy-ephemeral")  # its ephemeral node went with it


# ---------------------------------------------------------------------------
# The command line


@pytest.mark.slow
def test_cli_runs_a_detached_persistent_node(
    tmp_path: Path, make_client: Callable[..., KazooClient]
) -> None:
    require_zookeeper()
    directory = tmp_path / ".zk"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.support.zookeeper", *args, "--dir", str(directory)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    try:
        assert cli("status").returncode != 0
        started = cli("start", "--port", str(port))
        assert started.returncode == 0, started.stderr
        pid = int((directory / "zookeeper.pid").read_text())
        # The CLI process has exited; the server lives on.
        assert cli("status").returncode == 0
        again = cli("start", "--port", str(port))
        assert again.returncode == 0 and "already running" in again.stdout
        client = make_client(f"127.0.0.1:{port}")
        client.create("/cli", b"kept")
        client.stop()
        # A lost pid file is recovered from /proc.
        (directory / "zookeeper.pid").unlink()
        assert cli("status").returncode == 0

        stopped = cli("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not (directory / "zookeeper.pid").exists()
        assert cli("status").returncode != 0
        assert not zkserver._pid_is_our_server(pid, directory / "zoo.cfg")

        assert cli("start", "--port", str(port)).returncode == 0
        client = make_client(f"127.0.0.1:{port}")
        assert client.get("/cli")[0] == b"kept"
    finally:
        cli("stop")
