"""The local ZooKeeper launcher (tests/support/zookeeper.py): a server stopped, started
and killed, an ensemble losing its leader and its quorum, the command line's detached node.

No Django needed: ``pytest tests/system/test_support_zookeeper.py -p no:django``.
Without ZooKeeper installed these tests are skipped, except when ``CI=true``, where they
fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import ConnectionLoss, SessionExpiredError
from kazoo.retry import KazooRetry

from tests.support import zookeeper as zkserver
from tests.support.zookeeper import ZooKeeperEnsemble, ZooKeeperServer, free_port

from ..conftest import require_zookeeper_installed, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# A single server


def test_stop_start_and_kill_keep_data(
    tmp_path: Path, kazoo_clients: Callable[..., KazooClient]
) -> None:
    require_zookeeper_installed()
    server = ZooKeeperServer(tmp_path / "zk")
    try:
        server.start()
        port = server.port
        client = kazoo_clients(server.hosts)
        client.create("/persist", b"v1")
        client.stop()

        server.stop()
        assert not server.is_running
        assert server.four_letter("ruok") == ""  # connection refused -> ""
        assert server.mode() is None

        server.start()
        assert server.port == port
        client = kazoo_clients(server.hosts)
        assert client.get("/persist")[0] == b"v1"
        client.set("/persist", b"v2")
        client.stop()

        server.kill()  # crash: no clean shutdown
        assert not server.is_running
        server.start()
        client = kazoo_clients(server.hosts)
        assert client.get("/persist")[0] == b"v2"

        server.restart()
        assert server.mode() == "standalone"
    finally:
        server.cleanup()
    # It did not create the directory, so it keeps it.
    assert (tmp_path / "zk" / "data" / "version-2").is_dir()


# ---------------------------------------------------------------------------
# An ensemble


def test_ensemble_elects_one_leader_and_survives_losing_it(
    kazoo_clients: Callable[..., KazooClient],
) -> None:
    require_zookeeper_installed()
    with ZooKeeperEnsemble(3) as ensemble:
        assert len(ensemble.servers) == 3
        assert ensemble.hosts.count(",") == 2
        modes = ensemble.modes()
        assert modes.count("leader") == 1 and modes.count("follower") == 2, modes
        leader = ensemble.leader_index()
        assert leader is not None
        assert sorted(ensemble.follower_indexes()) == sorted({0, 1, 2} - {leader})

        client = kazoo_clients(ensemble.hosts, timeout=4.0)
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
        check = kazoo_clients(ensemble.servers[leader].hosts)
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
# The command line


def test_cli_runs_a_detached_persistent_node(
    tmp_path: Path, kazoo_clients: Callable[..., KazooClient]
) -> None:
    require_zookeeper_installed()
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
        client = kazoo_clients(f"127.0.0.1:{port}")
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
        client = kazoo_clients(f"127.0.0.1:{port}")
        assert client.get("/cli")[0] == b"kept"
    finally:
        cli("stop")
