"""The write path (django_zkflags/services.py) through the ORM and the command: every
change reaches ZooKeeper and leaves one audit row.

``Flag.objects.create``, ``save()``, many-to-many edits from either side, ``delete()`` and
``manage.py zkflags set`` all write the flag znode (and the snapshot) first; a write that
ZooKeeper refuses (a stale version here; no ZooKeeper at all in
tests/system/test_services.py) leaves the database as it was and records nothing.
``manage.py zkflags check`` finds drift and ``repair`` removes it.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from django_zkflags.cache import store
from django_zkflags.exceptions import FlagConflict
from django_zkflags.models import Flag, FlagChange
from django_zkflags.reader import read_view
from django_zkflags.services import acting_as
from django_zkflags.snapshot import encode_document

from ..conftest import audit, row_state, wait_until, zkflags_command
from ..conftest import flag_doc as doc_of

pytestmark = pytest.mark.django_db


def zk(zkflags: Any, name: str) -> tuple[dict[str, Any] | None, int | None]:
    return zkflags.read(name)


# -- ORM writes ---------------------------------------------------------------------------


def test_create_and_save_reach_zookeeper_with_audit(zkflags, people):
    users, _groups = people
    flag = Flag.objects.create(name="orm-flag", staff=True, note="made in code")
    want = doc_of("orm-flag", staff=True, note="made in code")
    assert zk(zkflags, "orm-flag") == (want, 0)
    assert flag.zk_version == 0
    assert Flag.objects.get(pk=flag.pk).zk_version == 0
    zkflags.wait_version("orm-flag", 0)
    assert store.base.flags["orm-flag"].to_document() == want
    [created] = audit("orm-flag")
    assert (created.action, created.user, created.username) == ("created", None, "")
    assert (created.before, created.after, created.zk_version) == (None, want, 0)
    assert created.source == "orm"

    flag.everyone = True
    flag.percent = 7
    with acting_as(users[0]):
        flag.save()
    changed = doc_of("orm-flag", staff=True, note="made in code", everyone=True, percent=7.0)
    assert zk(zkflags, "orm-flag") == (changed, 1)
    assert row_state("orm-flag") == (changed, 1)
    zkflags.wait_version("orm-flag", 1)
    last = audit("orm-flag")[-1]
    assert (last.action, last.user, last.username) == ("changed", users[0], "person0")
    assert (last.before, last.after, last.zk_version) == (want, changed, 1)
    assert len(audit("orm-flag")) == 2

    # save(update_fields=...) goes the same way.
    flag.note = "only the note"
    flag.save(update_fields=["note"])
    assert zk(zkflags, "orm-flag")[0]["note"] == "only the note"
    assert zk(zkflags, "orm-flag")[1] == 2
    assert row_state("orm-flag")[1] == 2
    assert len(audit("orm-flag")) == 3


def test_forward_many_to_many_edits_reach_zookeeper(zkflags, people):
    users, groups = people
    flag = Flag.objects.create(name="members")
    flag.users.add(users[0], users[1])
    assert zk(zkflags, "members") == (doc_of("members", users=[users[0].pk, users[1].pk]), 1)
    flag.users.remove(users[0])
    assert zk(zkflags, "members") == (doc_of("members", users=[users[1].pk]), 2)
    flag.groups.add(groups[1])
    assert zk(zkflags, "members") == (
        doc_of("members", users=[users[1].pk], groups=[groups[1].pk]),
        3,
    )
    flag.users.clear()
    assert zk(zkflags, "members") == (doc_of("members", groups=[groups[1].pk]), 4)
    assert row_state("members") == (doc_of("members", groups=[groups[1].pk]), 4)
    # No-ops (removing someone who is not there, clearing nothing) write nothing.
    flag.users.remove(users[2])
    flag.users.clear()
    flag.users.add()
    assert zk(zkflags, "members")[1] == 4

    changes = audit("members")
    assert [c.action for c in changes] == ["created"] + ["changed"] * 4
    assert [c.zk_version for c in changes] == [0, 1, 2, 3, 4]
    assert all(c.source == "orm m2m" for c in changes[1:])
    assert changes[2].before["users"] == [users[0].pk, users[1].pk]
    assert changes[2].after["users"] == [users[1].pk]
    assert [c.changed_fields() for c in changes[1:]] == [
        ["users"],
        ["users"],
        ["groups"],
        ["users"],
    ]
    zkflags.wait_version("members", 4)
    assert store.base.flags["members"].groups == frozenset({groups[1].pk})


def test_reverse_many_to_many_edits_reach_zookeeper(zkflags, people):
    users, groups = people
    one = Flag.objects.create(name="rev-one")
    two = Flag.objects.create(name="rev-two")
    user = users[2]

    user.zkflags.add(one, two)
    for name in ("rev-one", "rev-two"):
        assert zk(zkflags, name) == (doc_of(name, users=[user.pk]), 1)
        assert row_state(name) == (doc_of(name, users=[user.pk]), 1)
    user.zkflags.remove(one)
    assert zk(zkflags, "rev-one") == (doc_of("rev-one"), 2)
    assert zk(zkflags, "rev-two")[1] == 1
    groups[0].zkflags.add(one)
    assert zk(zkflags, "rev-one") == (doc_of("rev-one", groups=[groups[0].pk]), 3)
    user.zkflags.remove(one)  # not linked any more: nothing to write
    assert zk(zkflags, "rev-one")[1] == 3
    user.zkflags.clear()
    assert zk(zkflags, "rev-two") == (doc_of("rev-two"), 2)
    users[0].zkflags.clear()  # had no flags
    assert zk(zkflags, "rev-one")[1] == 3  # was not the user's flag any more

    assert [c.zk_version for c in audit("rev-one")] == [0, 1, 2, 3]
    assert [c.zk_version for c in audit("rev-two")] == [0, 1, 2]
    assert audit("rev-two")[-1].before["users"] == [user.pk]
    assert audit("rev-two")[-1].after["users"] == []
    zkflags.wait_version("rev-two", 2)
    assert store.base.flags["rev-two"].users == frozenset()


def test_delete_reaches_zookeeper_with_audit(zkflags, people):
    users, _groups = people
    flag = Flag.objects.create(name="goner", authenticated=True)
    flag.users.add(users[0])
    zkflags.wait_version("goner", 1)
    with acting_as(users[1]):
        flag.delete()
    assert zk(zkflags, "goner") == (None, None)
    assert not Flag.objects.filter(name="goner").exists()
    wait_until(lambda: "goner" not in store.base.flags)
    deleted = audit("goner")[-1]
    assert (deleted.action, deleted.user, deleted.after) == ("deleted", users[1], None)
    assert deleted.before == doc_of("goner", authenticated=True, users=[users[0].pk])
    assert len(audit("goner")) == 3


def test_rename_is_refused(zkflags):
    flag = Flag.objects.create(name="fixed-name")
    flag.name = "new-name"
    with pytest.raises(ValidationError, match="cannot be renamed"):
        flag.save()
    with pytest.raises(ValidationError, match="cannot be renamed"):
        flag.full_clean()
    assert zk(zkflags, "new-name") == (None, None)
    assert zk(zkflags, "fixed-name")[1] == 0
    assert list(Flag.objects.values_list("name", flat=True)) == ["fixed-name"]
    assert FlagChange.objects.count() == 1


def test_command_set_reaches_zookeeper_row_and_audit(zkflags):
    out = zkflags_command("set", "from-cli", "--on")
    assert "version 0" in out
    assert zk(zkflags, "from-cli") == (doc_of("from-cli", everyone=True), 0)
    assert row_state("from-cli") == (doc_of("from-cli", everyone=True), 0)
    [created] = audit("from-cli")
    assert (created.action, created.source, created.zk_version) == ("created", "command", 0)
    assert created.after == doc_of("from-cli", everyone=True)

    zkflags_command("set", "from-cli", "--rules", "--percent", "30", "--note", "half-way")
    want = doc_of("from-cli", percent=30.0, note="half-way")
    assert zk(zkflags, "from-cli") == (want, 1)
    assert row_state("from-cli") == (want, 1)
    changed = audit("from-cli")[-1]
    assert (changed.action, changed.before["everyone"], changed.after) == ("changed", True, want)
    zkflags.wait_version("from-cli", 1)
    assert store.base.flags["from-cli"].percent == 30.0

    with pytest.raises(CommandError):
        zkflags_command("set", "bad name", "--on")
    with pytest.raises(CommandError):
        zkflags_command("set", "from-cli", "--percent", "101")
    # Two decimals: ZooKeeper could hold it, but the admin's row could not mirror it.
    with pytest.raises(CommandError, match="one decimal"):
        zkflags_command("set", "from-cli", "--percent", "12.34")
    assert zk(zkflags, "from-cli")[1] == 1
    assert FlagChange.objects.count() == 2

    # One decimal round-trips through the row exactly: no drift.
    zkflags_command("set", "from-cli", "--percent", "12.3")
    assert zk(zkflags, "from-cli")[0]["percent"] == 12.3
    assert row_state("from-cli")[0]["percent"] == 12.3
    assert "agree" in zkflags_command("check")


# -- refused writes record nothing --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_conflicting_orm_writes_are_refused_and_change_nothing(zkflags, people):
    users, _groups = people
    flag = Flag.objects.create(name="raced", note="mine")
    # Someone changes the znode: the row's zk_version (0) is stale now.
    zkflags.write("raced", note="theirs", everyone=False)
    theirs = zk(zkflags, "raced")
    assert theirs[1] == 1
    before = row_state("raced")

    flag.note = "mine again"
    with pytest.raises(FlagConflict, match="changed by someone else"):
        flag.save()
    with pytest.raises(FlagConflict):
        flag.users.add(users[0])
    with pytest.raises(FlagConflict):
        users[1].zkflags.add(Flag.objects.get(name="raced"))
    with pytest.raises(FlagConflict):
        flag.delete()

    assert zk(zkflags, "raced") == theirs
    assert row_state("raced") == before
    assert Flag.objects.get(name="raced").note == "mine"
    assert Flag.users.through.objects.count() == 0
    assert [c.action for c in audit("raced")] == ["created"]

    # Creating a flag that already exists in ZooKeeper (no row here) is a conflict too.
    zkflags.write("elsewhere", everyone=True)
    with pytest.raises(FlagConflict, match="already exists"):
        Flag.objects.create(name="elsewhere")
    assert not Flag.objects.filter(name="elsewhere").exists()
    assert zk(zkflags, "elsewhere")[1] == 0
    assert audit("elsewhere") == []


# -- check and repair ---------------------------------------------------------------------


def write_znode_by_hand(zkflags: Any, name: str, doc: dict[str, Any]) -> int:
    """Write a flag znode the way an operator with zkCli would: the snapshot is not told."""
    client = zkflags.runtime.client
    path = f"{zkflags.root}/flags/{name}"
    if client.exists(path):
        return client.set(path, encode_document(doc)).version
    client.create(path, encode_document(doc))
    return 0


def snapshot_entries(zkflags: Any) -> dict[str, Any]:
    return read_view(zkflags.runtime.client, zkflags.root)["flags"]


def test_check_and_repair_fix_a_znode_written_by_hand(zkflags, people):
    users, _groups = people
    Flag.objects.create(name="tidy", staff=True)
    Flag.objects.create(name="edited-by-hand", note="admin")
    assert "agree" in zkflags_command("check")

    hand = doc_of("edited-by-hand", note="zkCli", everyone=True, users=[users[0].pk])
    assert write_znode_by_hand(zkflags, "edited-by-hand", hand) == 1
    stray = doc_of("stray", authenticated=True)
    write_znode_by_hand(zkflags, "stray", stray)
    # The snapshot (and so every process) does not know.
    assert snapshot_entries(zkflags)["edited-by-hand"]["version"] == 0
    assert "stray" not in snapshot_entries(zkflags)

    out = StringIO()
    with pytest.raises(CommandError, match="problem"):
        call_command("zkflags", "check", stdout=out)
    report = out.getvalue()
    assert "edited-by-hand: snapshot differs from the flag znode" in report
    assert "edited-by-hand: admin row (v0) differs from ZooKeeper (v1)" in report
    assert "stray: snapshot differs from the flag znode" in report
    assert "stray: in ZooKeeper but has no admin row" in report
    assert "tidy" not in report

    out = zkflags_command("repair")
    assert "Repaired 2 row(s)." in out
    assert snapshot_entries(zkflags)["edited-by-hand"] == {**hand, "version": 1}
    assert snapshot_entries(zkflags)["stray"] == {**stray, "version": 0}
    assert row_state("edited-by-hand") == (hand, 1)
    assert row_state("stray") == (stray, 0)
    repaired = audit("edited-by-hand")[-1]
    assert (repaired.action, repaired.source, repaired.zk_version) == ("repaired", "repair", 1)
    assert repaired.before == doc_of("edited-by-hand", note="admin")
    assert repaired.after == hand
    assert [c.action for c in audit("stray")] == ["repaired"]
    assert [c.action for c in audit("tidy")] == ["created"]
    # Every process now serves what the znodes hold.
    zkflags.wait_version("edited-by-hand", 1)
    zkflags.wait_version("stray", 0)
    assert store.base.flags["edited-by-hand"].everyone is True

    assert "agree" in zkflags_command("check")
    assert "Repaired 0 row(s)." in zkflags_command("repair")


def test_check_and_repair_fix_rows_changed_behind_the_orm(zkflags, people):
    users, _groups = people
    flag = Flag.objects.create(name="bypassed", percent=20)
    flag.users.add(users[0])
    want = doc_of("bypassed", percent=20.0, users=[users[0].pk])
    Flag.objects.filter(pk=flag.pk).update(note="QuerySet.update", everyone=True)
    Flag.users.through.objects.filter(flag=flag).delete()  # no m2m_changed signal
    Flag.objects.bulk_create([Flag(name="ghost")])  # no save(): never reached ZooKeeper
    assert zk(zkflags, "ghost") == (None, None)

    out = StringIO()
    with pytest.raises(CommandError):
        call_command("zkflags", "check", stdout=out)
    report = out.getvalue()
    assert "bypassed: admin row (v1) differs from ZooKeeper (v1)" in report
    assert "ghost: admin row but not in ZooKeeper" in report

    out = zkflags_command("repair")
    assert row_state("bypassed") == (want, 1)
    assert zk(zkflags, "bypassed") == (want, 1)  # ZooKeeper is the truth: not touched
    repaired = audit("bypassed")[-1]
    assert repaired.action == "repaired"
    assert repaired.before == doc_of(
        "bypassed", percent=20.0, note="QuerySet.update", everyone=True
    )
    assert repaired.after == want
    # A row without a znode is not deleted on ZooKeeper's say-so: only when asked.
    assert "ghost: row kept" in out
    assert Flag.objects.filter(name="ghost").exists() and audit("ghost") == []
    assert "ghost: row deleted" in zkflags_command("repair", "--delete-orphan-rows")
    assert not Flag.objects.filter(name="ghost").exists()
    ghost = audit("ghost")
    assert [(c.action, c.after) for c in ghost] == [("repaired", None)]
    assert "agree" in zkflags_command("check")


def test_repair_settles_on_a_two_decimal_percent_written_by_hand(zkflags):
    """The row keeps one decimal; ZooKeeper keeps what was written. check must settle."""
    Flag.objects.create(name="precise", percent=10)
    write_znode_by_hand(zkflags, "precise", doc_of("precise", percent=12.34))
    with pytest.raises(CommandError):
        call_command("zkflags", "check", stdout=StringIO())
    assert "Repaired 1 row(s)." in zkflags_command("repair")
    assert "agree" in zkflags_command("check")
    assert "Repaired 0 row(s)." in zkflags_command("repair")
    assert str(Flag.objects.get(name="precise").percent) == "12.3"
    assert snapshot_entries(zkflags)["precise"]["percent"] == 12.34


@pytest.mark.django_db(transaction=True)
def test_save_failing_after_zookeeper_is_reported_and_repaired(zkflags, monkeypatch):
    """The database fails after ZooKeeper accepted the write (the one window the design
    cannot close): ZooKeeper keeps the change, the row and audit log roll back, and the
    disagreement is reported by check and closed by repair, not left silent."""
    from django.db import DatabaseError

    from django_zkflags import services

    flag = Flag.objects.create(name="half-way", percent=10)
    real_record = services._record

    def failing_record(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("disk full")

    monkeypatch.setattr(services, "_record", failing_record)
    flag.percent = 50
    with pytest.raises(DatabaseError):
        flag.save()
    monkeypatch.setattr(services, "_record", real_record)

    assert zk(zkflags, "half-way") == (doc_of("half-way", percent=50.0), 1)  # ZooKeeper has it
    assert row_state("half-way") == (doc_of("half-way", percent=10.0), 0)  # the row rolled back
    assert [c.action for c in audit("half-way")] == ["created"]
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("zkflags", "check", stdout=out)
    assert "half-way: admin row (v0) differs from ZooKeeper (v1)" in out.getvalue()
    assert "Repaired 1 row(s)." in zkflags_command("repair")
    assert row_state("half-way") == (doc_of("half-way", percent=50.0), 1)
    repaired = audit("half-way")[-1]
    assert (repaired.action, repaired.before["percent"], repaired.after["percent"]) == (
        "repaired",
        10.0,
        50.0,
    )
    assert "agree" in zkflags_command("check")
