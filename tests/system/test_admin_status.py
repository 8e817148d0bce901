"""The admin's list page says when this process is not connected to ZooKeeper (the
session's server stopped). The other warnings: tests/integration/test_admin_status.py."""

from __future__ import annotations

import pytest

from django_zkflags import runtime
from tests.support.admin_pages import warnings_on_list

from ..conftest import wait_until

pytestmark = pytest.mark.django_db


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
