"""FlagWriter (django_zkflags/writer.py) cut off by the network: a TcpProxy between the
writer's client and the session's server. The rest: tests/integration/test_writer.py."""

from __future__ import annotations

import pytest

from django_zkflags import conf
from django_zkflags.client import make_client
from django_zkflags.exceptions import ZooKeeperUnavailable
from django_zkflags.reader import read_view
from django_zkflags.rules import FlagRule

from ..conftest import wait_until, writer_for


def test_write_not_sent_while_disconnected_is_never_applied_later(
    zkflags, proxy, direct, monkeypatch
):
    """kazoo queues requests while SUSPENDED and sends them on reconnect; a write reported
    as failed must not land later behind the editor's back."""
    url = conf.get_url()
    proxied = conf.parse_url(f"zk://{proxy.hosts}{url.root}")
    client = make_client(proxied, session_timeout=10, reconnect_max_delay=0.2)
    client.start(timeout=10)
    try:
        writer = writer_for(client, proxied, timeout=1.0)
        writer.write_flag(FlagRule("q", everyone=False), None)
        # The reads happened just before the network went: only the commit is left to send.
        before = writer.reader.flag("q")
        view = writer._view_for_write()
        monkeypatch.setattr(writer.reader, "flag", lambda name: before)
        monkeypatch.setattr(writer, "_view_for_write", lambda: view)
        monkeypatch.setattr(writer.requests, "wait_connected", lambda: None)
        monkeypatch.setattr(writer, "ensure_layout", lambda: None)
        proxy.block()
        wait_until(lambda: not client.connected, timeout=15)
        with pytest.raises(ZooKeeperUnavailable, match="nothing was saved"):
            writer.write_flag(FlagRule("q", everyone=True), 0)
        proxy.unblock()
        wait_until(lambda: client.connected, timeout=15)
        client.sync(f"{url.root}/flags/q")  # anything still queued has been sent by now
        direct.sync(f"{url.root}/flags/q")
        data, stat = direct.get(f"{url.root}/flags/q")
        assert stat.version == 0
        assert b'"everyone":false' in data
        snapshot = read_view(direct, url.root)
        assert snapshot["flags"]["q"]["everyone"] is False
    finally:
        client.stop()
        client.close()
