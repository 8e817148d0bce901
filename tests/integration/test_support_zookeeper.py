"""The local ZooKeeper launcher (tests/support/zookeeper.py) with real servers: one
server answering, paused and resumed, cleaned up, failing to start.

No Django needed: ``pytest tests/integration/test_support_zookeeper.py -p no:django``.
Without ZooKeeper installed these tests are skipped, except when ``CI=true``, where they
fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.support import zookeeper as zkserver
from tests.support.zookeeper import ZooKeeperServer, ZooKeeperStartError, find_classpath

from ..conftest import require_zookeeper_installed

# ---------------------------------------------------------------------------
# Installation


def test_zookeeper_is_installed() -> None:
    require_zookeeper_installed()
    assert "zookeeper" in find_classpath().lower() or zkserver.CLASSPATH_ENV_VAR in os.environ


# ---------------------------------------------------------------------------
# A single server


def test_server_answers_four_letter_words(private_zk_server: ZooKeeperServer) -> None:
    assert private_zk_server.is_running
    assert private_zk_server.hosts == f"127.0.0.1:{private_zk_server.port}"
    assert private_zk_server.four_letter("ruok") == "imok"
    assert private_zk_server.mode() == "standalone"
    assert "Mode: standalone" in private_zk_server.four_letter("stat")
    assert "zk_version" in private_zk_server.four_letter("mntr")
    assert (private_zk_server.data_dir / "zoo.cfg").read_text().count(
        "admin.enableServer=false"
    ) == 1
    assert (
        private_zk_server.last_start_duration is not None
        and private_zk_server.last_start_duration < 30
    )


def test_kazoo_creates_znode_and_watches_show_up(
    private_zk_server: ZooKeeperServer, kazoo_clients: Callable[..., KazooClient]
) -> None:
    client = kazoo_clients(private_zk_server.hosts)
    client.create("/zkserver-test/a", b"hello", makepath=True)
    data, stat = client.get("/zkserver-test/a", watch=lambda event: None)
    assert data == b"hello" and stat.version == 0
    wchc = private_zk_server.four_letter("wchc")
    assert isinstance(wchc, str) and "/zkserver-test/a" in wchc
    assert "Total watches:1" in private_zk_server.four_letter("wchs")


def test_pause_and_resume(private_zk_server: ZooKeeperServer) -> None:
    private_zk_server.pause()
    try:
        assert private_zk_server.is_running and private_zk_server.is_paused
        with pytest.raises(TimeoutError):
            private_zk_server.four_letter("ruok", timeout=0.3)
        assert private_zk_server.mode(timeout=0.3) is None
    finally:
        private_zk_server.resume()
    assert private_zk_server.four_letter("ruok") == "imok"


def test_temp_dir_is_removed_by_cleanup_and_context_manager() -> None:
    require_zookeeper_installed()
    with ZooKeeperServer() as server:
        directory = server.data_dir
        assert server.mode() == "standalone"
        assert (directory / "zookeeper.log").exists()
    assert not server.is_running
    assert not directory.exists()


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    require_zookeeper_installed()
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
