"""The admin while the session's ZooKeeper server is stopped: clean errors, nothing
changes anywhere, and the same edit goes through once it is back. The rest of the admin:
tests/integration/test_admin.py."""

from __future__ import annotations

import pytest

from django_zkflags.cache import store
from django_zkflags.models import Flag
from tests.support.admin_pages import (
    ADD_URL,
    UNREACHABLE_TEXT,
    change_url,
    data_from_page,
    form_data,
    make_flag,
    messages_of,
)

from ..conftest import audit, wait_until

pytestmark = pytest.mark.django_db


def non_field_errors(response):
    """A refused save comes back as the form, as typed, with the reason as its error."""
    return response.context["adminform"].form.non_field_errors()


def test_zookeeper_stopped_gives_clean_errors_and_changes_nothing(zkflags, admin_client):
    flag = make_flag(admin_client, "steady", note="before the outage")
    page = admin_client.get(change_url(flag))
    data = data_from_page(page, note="during the outage", everyone="True")
    zkflags.wait_version("steady", 0)
    server = zkflags.server
    server.stop()
    try:
        wait_until(lambda: not zkflags.runtime.client.connected, timeout=10)

        response = admin_client.post(ADD_URL, form_data("born-offline"), follow=True)
        assert response.status_code == 200
        assert any(UNREACHABLE_TEXT in e for e in non_field_errors(response))
        assert not Flag.objects.filter(name="born-offline").exists()
        assert audit("born-offline") == []

        response = admin_client.post(change_url(flag), data, follow=True)
        assert response.status_code == 200
        assert any(UNREACHABLE_TEXT in e for e in non_field_errors(response))
        flag.refresh_from_db()
        assert (flag.note, flag.everyone, flag.zk_version) == ("before the outage", None, 0)
        assert [c.action for c in audit("steady")] == ["created"]

        # The page itself still opens, from this process's snapshot, with a warning.
        response = admin_client.get(change_url(flag))
        assert response.status_code == 200
        assert any("showing what this process last saw" in m for m in messages_of(response))
        # This process kept serving its last snapshot meanwhile.
        assert store.base.flags["steady"].version == 0
    finally:
        server.start()

    # Back: the same edit goes through and the watcher sees it.
    wait_until(lambda: zkflags.runtime.client.connected, timeout=15)
    response = admin_client.post(change_url(flag), data)
    assert response.status_code == 302
    zkflags.wait_version("steady", 1, timeout=15)
    assert store.base.flags["steady"].everyone is True
    assert zkflags.read("steady")[0]["note"] == "during the outage"
    assert [c.action for c in audit("steady")] == ["created", "changed"]
