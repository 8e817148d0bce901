"""Operator slips against a real ZooKeeper, with a second client (or Debian's zkCli.sh) in
the operator's hands: a watch dropped without an event, a deleted snapshot znode,
ZooKeeper losing its data, users and groups deleted behind the flags' back.

Each test prints what docs/reliability.md quotes (``pytest -s``).
"""

from __future__ import annotations

import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection
from kazoo.client import KazooClient
from kazoo.security import ACL, OPEN_ACL_UNSAFE, Id, Permissions, make_digest_acl

from django_zkflags import conf, runtime, services
from django_zkflags.cache import store
from django_zkflags.client import Paths, Requests
from django_zkflags.exceptions import FlagTooLarge, InvalidFlag
from django_zkflags.models import Flag
from django_zkflags.reader import read_view
from django_zkflags.rules import FlagRule
from django_zkflags.signals import flag_changed
from django_zkflags.snapshot import decode_file_payload
from django_zkflags.writer import FlagWriter
from tests.support.operator import zkcli

from ..conftest import audit, wait_until

pytestmark = pytest.mark.django_db


def command(*args: str) -> str:
    out = StringIO()
    call_command("zkflags", *args, stdout=out)
    return out.getvalue()


def served(name: str) -> Any:
    rule = store.base.flags.get(name)
    return None if rule is None else rule.to_document()


@pytest.fixture
def operator(zk_server: Any) -> Any:
    client = KazooClient(hosts=zk_server.hosts, auth_data=[("digest", "operator:secret")])
    client.start(timeout=15)
    yield client
    client.stop()
    client.close()


# -- 1: a watch ZooKeeper drops without telling --------------------------------------------


def test_a_watch_dropped_without_an_event_is_noticed_and_rearmed(zkflags, operator):
    """While the snapshot's ACL denies this client READ, a change to it is not notified to
    this client's watch, and the watch is gone. The periodic check of the snapshot's mzxid
    notices, says why it cannot read, and serves the change once the ACL is back."""
    zkflags.write("acl-flag", everyone=True)
    watch = zkflags.runtime.watch
    assert watch is not None and watch.verify_interval == 1.0  # tests/settings.py
    snapshot = f"{zkflags.root}/snapshot"
    world_without_read = ACL(Permissions.WRITE | Permissions.ADMIN, Id("world", "anyone"))
    operator.set_acls(
        snapshot, [make_digest_acl("operator", "secret", all=True), world_without_read]
    )
    # The operator (who may read) changes the flag through a writer of its own.
    url = conf.get_url()
    as_operator = FlagWriter(Requests(operator, url, 5.0), Paths(url.root), list(OPEN_ACL_UNSAFE))
    as_operator.write_flag(FlagRule("acl-flag", everyone=False), 0)

    wait_until(lambda: watch.missed_changes >= 1, timeout=15)
    wait_until(lambda: "NoAuth" in str(runtime.status()["last_error"]), timeout=15)
    assert served("acl-flag")["everyone"] is True  # it cannot read the change yet
    operator.set_acls(snapshot, list(OPEN_ACL_UNSAFE))
    restored_at = time.monotonic()
    wait_until(lambda: served("acl-flag")["everyone"] is False, timeout=15)
    healed = time.monotonic() - restored_at
    wait_until(lambda: runtime.status()["last_error"] is None)
    # And the watch is armed again: the next change arrives without another check.
    before = watch.missed_changes
    zkflags.write("acl-flag", everyone=True)
    assert watch.missed_changes == before
    print(
        f"\n[lost watch] noticed by the periodic check; served {healed:.2f} s after the ACL came back"
    )


# -- 3: the snapshot znode deleted by hand ------------------------------------------------


@pytest.fixture
def with_disk_copy(zkflags: Any, settings: Any, tmp_path: Path) -> Path:
    path = tmp_path / "flags.snapshot"
    runtime.stop()
    settings.ZKFLAGS = {**settings.ZKFLAGS, "SNAPSHOT_FILE": str(path)}
    runtime.start(wait=10.0)
    return path


def test_a_deleted_snapshot_is_not_no_flags(zkflags, zk_server, with_disk_copy):
    services.save_environments(
        {"parents": {"production": None}, "hosts": {}}, expected_version=None, source="test"
    )
    services.save_flag(FlagRule("kept-on", everyone=True), expected_version=None, source="test")
    services.save_flag(FlagRule("kept-pct", percent=10.0), expected_version=None, source="test")
    zkflags.wait_version("kept-pct", 0)
    wait_until(lambda: with_disk_copy.exists() and "kept-pct" in _on_disk(with_disk_copy))
    disk_before = with_disk_copy.read_bytes()

    zkcli(zk_server.hosts, "delete", f"{zkflags.root}/snapshot")
    deleted_at = time.monotonic()
    wait_until(lambda: "missing" in str(runtime.status()["last_error"]), timeout=15)
    noticed = time.monotonic() - deleted_at
    assert served("kept-on")["everyone"] is True
    assert served("kept-pct")["percent"] == 10.0
    assert with_disk_copy.read_bytes() == disk_before  # the disk copy is not emptied either
    assert any("snapshot znode is missing" in what for _name, what in services.check().problems)

    # The next write rebuilds the snapshot from the flag znodes: nothing is lost.
    services.save_flag(FlagRule("written-next", staff=True), expected_version=None, source="test")
    zkflags.wait_version("written-next", 0)
    payload = read_view(zkflags.runtime.client, zkflags.root)
    assert sorted(payload["flags"]) == ["kept-on", "kept-pct", "written-next"]
    assert payload["environments"]["parents"] == {"production": None}
    assert served("kept-on")["everyone"] is True
    assert runtime.status()["last_error"] is None
    print(f"\n[snapshot deleted] noticed {noticed:.2f} s after zkCli.sh returned; 2 flags kept")


def _on_disk(path: Path) -> dict[str, Any]:
    """The flags of a disk copy."""
    return decode_file_payload(path.read_bytes().partition(b"\n")[2])["flags"]


# -- 4: ZooKeeper lost its data (deleteall of the root) ----------------------------------


def test_zookeeper_losing_its_data_is_told_apart_from_drift_and_restored(zkflags, zk_server):
    for name, rule in (
        ("alpha", {"everyone": True}),
        ("beta", {"percent": 30.0}),
        ("gamma", {"staff": True}),
    ):
        services.save_flag(FlagRule(name, **rule), expected_version=None, source="test")
    zkflags.wait_version("gamma", 0)
    assert "agree" in command("check")

    zkcli(zk_server.hosts, "deleteall", zkflags.root)
    wait_until(lambda: "missing" in str(runtime.status()["last_error"]), timeout=15)
    assert served("alpha")["everyone"] is True  # still serving what it had

    out = StringIO()
    with pytest.raises(CommandError, match="restore"):
        call_command("zkflags", "check", stdout=out)
    assert "lost its data" in out.getvalue()
    with pytest.raises(CommandError, match="lost its data"):
        command("repair")
    assert Flag.objects.count() == 3  # nothing deleted on ZooKeeper's say-so
    # A write now would publish a snapshot with one flag: every other flag off everywhere.
    with pytest.raises(services.ZooKeeperLostData, match="restore"):
        services.save_flag(FlagRule("delta", everyone=True), expected_version=None, source="test")
    assert zkflags.runtime.client.exists(f"{zkflags.root}/snapshot") is None

    seen: list[list[str]] = []

    def on_change(sender: Any, names: Any, snapshot: Any, **kwargs: Any) -> None:
        seen.append(sorted(snapshot.flags))

    flag_changed.connect(on_change)
    try:
        out = command("restore")
        assert "Restored 3 flag(s)." in out
        wait_until(lambda: runtime.status()["last_error"] is None, timeout=15)
        # Barrier: the restored snapshot is the one served (by its zxid)...
        mzxid = zkflags.runtime.client.exists(f"{zkflags.root}/snapshot").mzxid
        wait_until(lambda: store.base.zxid == mzxid)
    finally:
        flag_changed.disconnect(on_change)
    # ...and no snapshot on the way there lacked a flag (it would have been announced).
    assert all(names == ["alpha", "beta", "gamma"] for names in seen), seen
    assert served("beta")["percent"] == 30.0 and served("gamma")["staff"] is True
    assert [c.action for c in audit("beta")] == ["created", "restored"]
    assert audit("beta")[-1].source == "restore"
    assert "agree" in command("check")
    # And this long-running process can write again (the layout is re-created).
    services.save_flag(FlagRule("delta", everyone=True), expected_version=None, source="test")
    zkflags.wait_version("delta", 0)


# -- 7: users and groups deleted ----------------------------------------------------------


def test_deleted_users_and_groups_leave_the_flags(zkflags):
    services.save_environments(
        {"parents": {"staging": None}, "hosts": {}}, expected_version=None, source="test"
    )
    kept, leaving, bypassed = (User.objects.create_user(n) for n in ("kept", "leaving", "bypassed"))
    team = Group.objects.create(name="team")
    rule = FlagRule(
        "members",
        users=[kept.pk, leaving.pk, bypassed.pk],
        groups=[team.pk],
        environments={"staging": {"users": [leaving.pk]}},
    )
    services.save_flag(rule, expected_version=None, source="test")

    leaving_pk = leaving.pk
    leaving.delete()
    doc, version = zkflags.read("members")
    assert doc["users"] == sorted([kept.pk, bypassed.pk])
    assert doc["environments"]["staging"]["users"] == []
    assert audit("members")[-1].source == "user deleted"
    team.delete()
    assert zkflags.read("members")[0]["groups"] == []
    assert audit("members")[-1].source == "group deleted"
    assert "agree" in command("check")

    # A delete that sends no signal (SQL, a bulk _raw_delete): check finds it, repair
    # takes it out, and the next check agrees (no endless drift).
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Flag.users.through._meta.db_table} WHERE user_id = %s", [bypassed.pk]
        )
        cursor.execute("DELETE FROM auth_user WHERE id = %s", [bypassed.pk])
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("zkflags", "check", stdout=out)
    assert f"members: lists deleted users [{bypassed.pk}]" in out.getvalue()
    command("repair")
    assert zkflags.read("members")[0]["users"] == [kept.pk]
    assert audit("members")[-1].source == "repair"
    assert "agree" in command("check")
    assert "Repaired 0 row(s)." in command("repair")
    zkflags.wait_version("members", zkflags.read("members")[1])
    assert store.base.flags["members"].users == frozenset({kept.pk})
    assert leaving_pk not in store.base.flags["members"].users


# -- 10 (a, b): small slips -----------------------------------------------------------------


def test_an_orm_percent_the_row_cannot_keep_is_refused(zkflags):
    """The row keeps one decimal: 33.333333 would go to ZooKeeper and be lost in the row
    (endless drift). It is refused before anything is written, as the command refuses it."""
    with pytest.raises(InvalidFlag, match="at most one decimal"):
        Flag.objects.create(name="thirds", percent=33.333333)
    assert zkflags.read("thirds") == (None, None)
    assert not Flag.objects.filter(name="thirds").exists()
    flag = Flag.objects.create(name="thirds", percent=33.3)
    assert zkflags.read("thirds")[0]["percent"] == 33.3
    flag.percent = "12.34"
    with pytest.raises(InvalidFlag, match="at most one decimal"):
        flag.save()
    assert zkflags.read("thirds") == (zkflags.read("thirds")[0], 0)
    assert "agree" in command("check")


def test_an_oversized_value_is_refused_naming_the_flag_document(zkflags):
    big = "x" * 1_500_000
    with pytest.raises(FlagTooLarge) as info:
        services.save_flag(FlagRule("huge", value=big), expected_version=None, source="test")
    message = str(info.value)
    assert "The document of 'huge' is 1500" in message and "bytes as JSON" in message
    assert "snapshot" not in message  # it is the flag document that is too large
    assert zkflags.read("huge") == (None, None)
    assert not Flag.objects.filter(name="huge").exists()
