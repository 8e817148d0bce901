"""The admin's list page says when this process is not serving what ZooKeeper holds."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from django_zkflags import runtime
from django_zkflags.snapshot import encode_entries

from .conftest import wait_until

pytestmark = pytest.mark.django_db

LIST = "/admin/django_zkflags/flag/"


def warnings_on_list(admin_client) -> list[str]:
    response = admin_client.get(LIST)
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_no_warning_when_all_is_well(zkflags, admin_client):
    zkflags.write("fine", everyone=True)
    assert warnings_on_list(admin_client) == []


def test_invalid_entry_and_unreadable_snapshot_are_shown(zkflags, admin_client):
    zkflags.write("good", everyone=True)
    client = zkflags.runtime.client
    snapshot = f"{zkflags.root}/snapshot"
    bad = {
        "good": {"name": "good", "everyone": True, "version": 0},
        "broken": {"name": "broken", "percent": 500},
    }
    client.set(snapshot, encode_entries(bad))
    wait_until(lambda: "broken" in runtime.status()["invalid_flags"])
    (message,) = warnings_on_list(admin_client)
    assert "Invalid data in ZooKeeper for broken" in message
    client.set(snapshot, b"garbage")
    wait_until(lambda: runtime.status()["last_error"])
    assert any("unreadable snapshot" in m for m in warnings_on_list(admin_client))


def test_disconnection_is_shown(zkflags, admin_client):
    zkflags.write("kept", everyone=True)
    zkflags.server.stop()
    try:
        wait_until(lambda: not runtime.status()["connected"], timeout=30)
        messages = warnings_on_list(admin_client)
        assert any("Not connected to ZooKeeper" in m for m in messages)
    finally:
        zkflags.server.start()
    wait_until(lambda: runtime.status()["connected"], timeout=30)
    assert warnings_on_list(admin_client) == []
