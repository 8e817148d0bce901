"""The process runtime (FlagRuntime) when the network fails: a TcpProxy between this
process's client and the server drops the connection, blocks it, or stalls it past the
session timeout; the writes made "meanwhile" go through a second client straight to the
server. The rest of the watcher: tests/integration/test_watcher.py.
"""

from __future__ import annotations

import time

import pytest
from kazoo.client import KazooState

import django_zkflags
from django_zkflags import flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import SHARDS, shard_of
from django_zkflags.writer import BatchItem

from ..conftest import BOUND, wait_until


def test_connection_drop_and_a_change_made_while_disconnected(proxied_site):
    proxied_site.write_and_wait("drop", everyone=True)

    proxied_site.states.clear()
    assert proxied_site.proxy.drop_all() >= 1
    proxied_site.wait_states(KazooState.SUSPENDED, KazooState.CONNECTED)
    # The watch is armed again after the reconnection.
    version = proxied_site.write("drop", everyone=False)
    proxied_site.wait_version("drop", version)

    # Disconnected for a while: a change made meanwhile arrives after the reconnection.
    proxied_site.states.clear()
    proxied_site.proxy.block()
    proxied_site.wait_states(KazooState.SUSPENDED)
    version = proxied_site.write("drop", everyone=True)
    proxied_site.wait_seen_around_the_proxy("drop", version)  # delivered to connected watchers
    assert flag_is_active_for_user(None, "drop") is False  # still the last known value
    assert store.base.source == "zookeeper"
    proxied_site.proxy.unblock()
    proxied_site.wait_states(KazooState.SUSPENDED, KazooState.CONNECTED)
    proxied_site.wait_version("drop", version)
    assert flag_is_active_for_user(None, "drop") is True
    proxied_site.assert_healthy()


def test_a_reconnected_process_catches_up_by_reading_only_the_shards_that_moved(proxied_site):
    """Catch-up after a reconnect is one round trip: the head, then the shards it moved
    meanwhile (two here), not the 1,024 of the view."""
    items = [BatchItem(f"many-{i:04d}", FlagRule(f"many-{i:04d}"), None) for i in range(1500)]
    proxied_site.writer.write_flags(items)
    proxied_site.wait_version("many-1499", 0)
    first = "many-0001"
    second = next(
        item.name for item in items if shard_of(item.name, SHARDS) != shard_of(first, SHARDS)
    )
    apply = proxied_site.runtime.status()["apply"]
    proxied_site.states.clear()
    proxied_site.proxy.block()
    proxied_site.wait_states(KazooState.SUSPENDED)
    versions = {name: proxied_site.write(name, everyone=True) for name in (first, second)}
    proxied_site.wait_seen_around_the_proxy(second, versions[second])
    proxied_site.proxy.unblock()
    for name, version in versions.items():
        proxied_site.wait_version(name, version)
    after = proxied_site.runtime.status()["apply"]
    assert after["shards_read"] - apply["shards_read"] == 2
    assert after["count"] - apply["count"] == 1  # both changes in one apply
    assert len(store.base.flags) == 1500
    proxied_site.assert_healthy()


def test_session_expiry_rearms_the_watch(proxied_site_factory):
    proxied_site = proxied_site_factory(SESSION_TIMEOUT=2.0)
    client = proxied_site.runtime.client
    proxied_site.write_and_wait("expiry", everyone=True)
    old_session = client.client_id
    # An ephemeral node of this session tells us when the server expired it.
    probe = client.create(f"{proxied_site.root}/probe", ephemeral=True, makepath=True)

    proxied_site.states.clear()
    proxied_site.proxy.pause()
    try:
        wait_until(lambda: proxied_site.direct.exists(probe) is None, timeout=15.0, interval=0.05)
        during = proxied_site.write("expiry", everyone=False)  # made while the session is gone
        proxied_site.wait_seen_around_the_proxy("expiry", during)
        assert flag_is_active_for_user(None, "expiry") is True
    finally:
        proxied_site.proxy.resume()
    proxied_site.wait_states(KazooState.LOST, KazooState.CONNECTED, timeout=15.0)
    assert client.client_id != old_session
    proxied_site.wait_version("expiry", during)
    assert flag_is_active_for_user(None, "expiry") is False

    after = proxied_site.write("expiry", everyone=True)  # the watch is armed in the new session
    proxied_site.wait_version("expiry", after)
    assert flag_is_active_for_user(None, "expiry") is True
    proxied_site.assert_healthy()


@pytest.mark.parametrize("fault", ["block", "pause"])
def test_stop_returns_promptly_when_zookeeper_is_unreachable(proxied_site, fault):
    proxied_site.write_and_wait("stop", everyone=True)
    watch = proxied_site.runtime.watch
    if fault == "block":
        proxied_site.proxy.block()  # refused: the client keeps reconnecting
        wait_until(lambda: not proxied_site.runtime.client.connected, BOUND)
    else:
        proxied_site.proxy.pause()  # stalled: nothing answers, not even the close request
    started = time.monotonic()
    runtime.stop()
    assert time.monotonic() - started < 5.0
    assert django_zkflags.status()["watching"] is False
    wait_until(lambda: not watch.alive, BOUND)
    assert flag_is_active_for_user(None, "stop") is True  # still served from memory
    proxied_site.proxy.resume()
    proxied_site.proxy.unblock()
