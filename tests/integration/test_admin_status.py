"""The admin's list page says when this process is not serving what ZooKeeper holds.
While disconnected: tests/system/test_admin_status.py."""

from __future__ import annotations

import pytest

from django_zkflags import runtime
from django_zkflags.snapshot import encode_entries
from tests.support.admin_pages import warnings_on_list

from ..conftest import wait_until

pytestmark = pytest.mark.django_db


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
