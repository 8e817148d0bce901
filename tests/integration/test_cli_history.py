"""``manage.py zkflags history | revert | show | delete`` against a real ZooKeeper: their
output, what reaches ZooKeeper, the row and the audit log (every change audited with the
operating system's user and source "command")."""

from __future__ import annotations

import io
import sys

import pytest
from django.contrib.auth.models import User
from django.core.management.base import CommandError
from django.utils import timezone

from django_zkflags import services
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import FlagRule

from ..conftest import audit, flag_doc, row_state, served_version, wait_until, zkflags_command

pytestmark = pytest.mark.django_db


def save(name: str, actor: object = "alice", source: str = "admin", **fields: object) -> int:
    """Create or change a flag through services, as an editor would; its new version."""
    stored = services.read_flag(name)
    doc = {**(stored.document() or flag_doc(name)), **fields}
    change = services.save_flag(
        FlagRule.from_document(doc), expected_version=stored.version, actor=actor, source=source
    )
    assert change is not None
    return change.zk_version


def test_history_newest_first_with_diffs_who_and_time_zone(zkflags, settings):
    settings.TIME_ZONE = "Asia/Kathmandu"
    bob = User.objects.create_user("bob")
    save("cli-flag", percent=10.0)
    save("cli-flag", actor="carol", source="command", percent=25.0, users=[bob.pk])
    save("cli-flag", value={"limit": 3})
    save("other", everyone=True)  # not this flag's history

    out = zkflags_command("history", "cli-flag")
    lines = out.splitlines()
    assert lines[0] == "cli-flag: 3 change(s), newest first (times in Asia/Kathmandu)"
    changes = audit("cli-flag")[::-1]
    at = timezone.localtime(changes[1].at).strftime("%Y-%m-%d %H:%M:%S")
    assert lines[1].startswith("v2  ") and lines[1].endswith("changed by alice (admin)")
    assert lines[2] == '    value: null → {"limit":3}'
    assert lines[3] == f"v1  {at} Asia/Kathmandu  changed by carol (command)"
    assert lines[4:6] == ["    percent: 10 → 25", "    users: +bob"]
    assert lines[6].startswith("v0  ") and lines[6].endswith("created by alice (admin)")
    assert lines[7:] == ["    percent: 10"]

    limited = zkflags_command("history", "cli-flag", "--limit", "1").splitlines()
    assert limited[-1] == "... 2 older change(s): --limit 0 shows all."
    assert zkflags_command("history", "never-was") == "never-was: no audited change.\n"


def test_revert_restores_a_version_as_a_new_one_audited_with_the_os_user(zkflags):
    save("rolled", percent=10.0, note="first")
    v0, _ = zkflags.read("rolled")
    save("rolled", percent=50.0, everyone=True)
    save("rolled", note="third")
    v2, _ = zkflags.read("rolled")

    out = zkflags_command("revert", "rolled", "--version", "0")
    assert out == "rolled: restored as it was at version 0; now version 3\n"
    assert zkflags.read("rolled") == (v0, 3)
    assert row_state("rolled") == (v0, 3)
    wait_until(lambda: served_version("rolled") == 3)
    change = audit("rolled")[-1]
    assert (change.action, change.before, change.after) == (FlagChange.REVERTED, v2, v0)
    assert (change.username, change.user, change.source) == (
        services.command_actor(),
        None,
        "command",
    )
    assert change.username  # the OS user, never empty here

    out = zkflags_command("revert", "rolled", "--version", "0")
    assert out == "rolled: already as it was at version 0 (now version 3); nothing written\n"
    assert len(audit("rolled")) == 4


def test_revert_refuses_unknown_versions_and_a_flag_that_moved(zkflags):
    save("steady", percent=10.0)
    save("steady", percent=20.0)
    with pytest.raises(CommandError, match="no audited version 7"):
        zkflags_command("revert", "steady", "--version", "7")
    with pytest.raises(CommandError, match="was at version 0 then, and is now at version 1"):
        zkflags_command("revert", "steady", "--version", "0", "--expected-version", "0")
    doc, version = zkflags.read("steady")
    assert (doc["percent"], version) == (20.0, 1)
    assert len(audit("steady")) == 2


def test_delete_asks_then_deletes_versioned_and_audited(zkflags, monkeypatch):
    save("doomed", percent=10.0)
    before, _ = zkflags.read("doomed")

    monkeypatch.setattr(sys, "stdin", io.StringIO("no\n"))
    with pytest.raises(CommandError, match="Not deleted"):
        zkflags_command("delete", "doomed")
    assert zkflags.read("doomed") == (before, 0)

    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    out = zkflags_command("delete", "doomed")
    assert out.splitlines() == [
        "Delete flag doomed (version 0: 10%)? Type 'yes' to delete:",
        "doomed: deleted (was version 0). To bring it back: "
        "'manage.py zkflags revert doomed --version 0'",
    ]
    assert zkflags.read("doomed") == (None, None)
    assert not Flag.objects.filter(name="doomed").exists()
    wait_until(lambda: served_version("doomed") is None)
    change = audit("doomed")[-1]
    assert (change.action, change.before, change.after) == (FlagChange.DELETED, before, None)
    assert (change.username, change.source) == (services.command_actor(), "command")

    # What it says to do brings the flag back, as a new flag.
    zkflags_command("revert", "doomed", "--version", "0")
    assert zkflags.read("doomed") == (before, 0)
    assert row_state("doomed") == (before, 0)
    assert audit("doomed")[-1].action == FlagChange.REVERTED


def test_delete_without_asking_and_of_nothing(zkflags):
    for option in ("--yes", "--noinput"):
        save("quick", everyone=True)
        out = zkflags_command("delete", "quick", option)
        assert out.startswith("quick: deleted (was version 0)")
        assert zkflags.read("quick") == (None, None)
    assert [c.action for c in audit("quick")] == ["created", "deleted"] * 2
    with pytest.raises(CommandError, match="No flag 'nothing'"):
        zkflags_command("delete", "nothing", "--yes")


def test_delete_of_a_flag_changed_meanwhile_is_refused(zkflags, monkeypatch):
    save("moving", percent=10.0)

    class Meanwhile(io.StringIO):
        def readline(self, *args: object) -> str:  # someone saves while the prompt waits
            save("moving", actor="bob", percent=20.0)
            return "yes\n"

    monkeypatch.setattr(sys, "stdin", Meanwhile())
    with pytest.raises(CommandError, match="changed by someone else"):
        zkflags_command("delete", "moving")
    doc, version = zkflags.read("moving")
    assert (doc["percent"], version) == (20.0, 1)
    assert audit("moving")[-1].action == FlagChange.CHANGED


def test_show_the_flag_in_zookeeper_and_what_this_process_serves(zkflags):
    alice = User.objects.create_user("alice")
    version = save(
        "shown",
        percent=12.5,
        users=[alice.pk, 999],
        note="the shown flag",
        value={"limit": 3},
        environments={"staging": {"everyone": True}},
    )
    zkflags.wait_version("shown", version)
    out = zkflags_command("show", "shown")
    lines = out.splitlines()
    assert lines[0] == "shown: version 0"
    assert "  rule:      2 user(s), 12.5%" in lines
    assert "  percent:   12.5" in lines
    assert "  users:     alice, #999 (deleted)" in lines
    assert '  value:     {"limit":3}' in lines
    assert "  note:      the shown flag" in lines
    assert lines[lines.index("  overrides:") + 1] == '    staging: {"everyone":true}'
    [served] = [line for line in lines if line.startswith("  served:")]
    assert served.startswith("  served:    version 0 by this process (environment none")
    assert "from zookeeper" in served
    assert "anonymous visitors: off" in served and 'value: {"limit":3}' in served

    services.delete_flag("shown", expected_version=0, actor="alice", source="admin")
    zkflags.wait_version("shown", None)
    out = zkflags_command("show", "shown")
    assert out.splitlines()[0] == "shown: not in ZooKeeper"
    assert "deleted " in out and "by alice" in out
    assert "not served by this process" in out
