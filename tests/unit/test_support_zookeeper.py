"""The local ZooKeeper launcher (tests/support/zookeeper.py) without a server: how a
missing installation is reported, free ports. With servers:
tests/integration/test_support_zookeeper.py and tests/system/test_support_zookeeper.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import zookeeper as zkserver
from tests.support.zookeeper import ZooKeeperNotInstalled, find_classpath, find_java, free_port


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
