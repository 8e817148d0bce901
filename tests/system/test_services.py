"""The write path (django_zkflags/services.py) with the session's ZooKeeper server
stopped: ORM writes and the command are refused, and change nothing in the rows or the
audit log. The rest: tests/integration/test_services.py."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from django_zkflags.cache import store
from django_zkflags.exceptions import ZooKeeperUnavailable
from django_zkflags.models import Flag, FlagChange

from ..conftest import audit, row_state, wait_until, zkflags_command

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)
def test_zookeeper_stopped_orm_writes_change_nothing(zkflags, people):
    users, _groups = people
    flag = Flag.objects.create(name="offline", note="before")
    zkflags.wait_version("offline", 0)
    before = row_state("offline")
    server = zkflags.server
    server.stop()
    try:
        wait_until(lambda: not zkflags.runtime.client.connected, timeout=10)
        with pytest.raises(ZooKeeperUnavailable):
            Flag.objects.create(name="never-born")
        flag.note = "during"
        with pytest.raises(ZooKeeperUnavailable):
            flag.save()
        with pytest.raises(ZooKeeperUnavailable):
            flag.users.add(users[0])
        with pytest.raises(ZooKeeperUnavailable):
            flag.delete()
        with pytest.raises(CommandError, match="unreachable"):
            zkflags_command("set", "offline", "--on")

        assert not Flag.objects.filter(name="never-born").exists()
        assert row_state("offline") == before
        assert Flag.users.through.objects.count() == 0
        assert FlagChange.objects.count() == 1
        assert store.base.flags["offline"].version == 0  # still serving the last snapshot
    finally:
        server.start()

    wait_until(lambda: zkflags.runtime.client.connected, timeout=15)
    assert zkflags.read("offline") == (before[0], 0)
    assert zkflags.read("never-born") == (None, None)
    flag.refresh_from_db()
    flag.note = "after"
    flag.save()
    zkflags.wait_version("offline", 1, timeout=15)
    assert store.base.flags["offline"].note == "after"
    assert [c.action for c in audit("offline")] == ["created", "changed"]
