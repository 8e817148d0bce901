"""The steward in one process, against a real ZooKeeper (django_zkflags/steward.py): the
election, scheduled changes run once through the services (audited with source
"schedule" and how late), refused when the flag moved (kept with the reason) unless
forced, stepped rollouts with pause, resume and abort, and hand edits of the flag znodes
healed. With real processes (SIGKILL, zkCli.sh, a web process): tests/system/test_steward.py.

The steward's thread writes audit rows: these tests use committed transactions, and wait
on ZooKeeper (the change record of a change is deleted once its audit row is committed:
:func:`audited`) before they read the database, which SQLite's shared in-memory database
would otherwise lock under the steward's write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kazoo.client import KazooClient

from django_zkflags import runtime, schedules, services
from django_zkflags.client import acl_for
from django_zkflags.conf import parse_url
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import FlagRule
from django_zkflags.schedules import HALTED, PAUSED, REFUSED, RUNNING, ScheduleError
from django_zkflags.steward import Steward, contenders
from django_zkflags.writer import AlsoOp, AlsoOpFailed

from ..conftest import audit, flag_doc, row_state, served_version, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

#: Bounds that only catch hangs (a steward acts within milliseconds of an event).
BOUND = 15.0


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def stewards(zkflags: Any) -> Iterator[Callable[..., Steward]]:
    """Start stewards of the test's root (on the runtime's client unless given another);
    each is stopped at the end."""
    started: list[Steward] = []
    url = parse_url(zkflags.url)

    def start(client: KazooClient | None = None, identifier: str | None = None) -> Steward:
        steward = Steward(
            client or runtime.get_runtime().client,
            url.root,
            acl_for(url),
            identifier=identifier or f"test-{len(started)}",
            timeout=5.0,
            rescan_interval=2.0,
        )
        steward.start()
        started.append(steward)
        return steward

    yield start
    for steward in started:
        steward.stop()


def schedule(name: str, at: datetime, change: dict[str, Any], **kwargs: Any) -> Any:
    kwargs.setdefault("actor", "alice")
    kwargs.setdefault("source", "command")
    return schedules.schedule_change(name, at, change, **kwargs)


def scheduled_rows(name: str) -> list[FlagChange]:
    return [row for row in audit(name) if row.source == "schedule"]


def gone(zkflags: Any, sid: str) -> bool:
    return schedules.store().schedule(sid) is None


def audited(zkflags: Any) -> None:
    """Wait until every change live in ZooKeeper has its audit row committed (no change
    record left), reading ZooKeeper only."""
    client = zkflags.runtime.client
    wait_until(
        lambda: (
            not client.exists(f"{zkflags.root}/changes")
            or not client.get_children(f"{zkflags.root}/changes")
        ),
        BOUND,
        interval=0.02,
        what="every change audited",
    )


# -- the election ----------------------------------------------------------------------------


def test_one_of_two_stewards_acts_and_the_other_takes_over_when_it_stops(
    zkflags, stewards, kazoo_clients
):
    first = stewards(identifier="first")
    wait_until(lambda: first.acting, BOUND, what="the first steward acts")
    second = stewards(kazoo_clients(zkflags.server.hosts), identifier="second")
    wait_until(lambda: contenders(zkflags.runtime.requests(), zkflags.root) == ["first", "second"])
    assert first.acting and not second.acting

    first.stop()
    wait_until(lambda: second.acting, BOUND, what="the second steward acts")
    assert contenders(zkflags.runtime.requests(), zkflags.root) == ["second"]
    assert (first.status.terms, second.status.terms) == (1, 1)
    second.stop()


def test_a_steward_in_process_and_the_status_command(zkflags, settings):
    """ZKFLAGS["STEWARD"]: AppConfig.ready calls start_in_process(), on the runtime's
    client; it is started once, and stopping it leaves the election at once."""
    from django_zkflags import steward as steward_module

    from ..conftest import zkflags_command

    running = steward_module.start_in_process()
    try:
        assert steward_module.start_in_process() is running
        wait_until(lambda: running.acting, BOUND)
        assert running.client is zkflags.runtime.client
        out = zkflags_command("steward", "--status")
        assert f"{running.status.identifier}\tacting" in out
        assert "(1 acts)" not in out and f"({running.status.identifier} acts)" in out
    finally:
        steward_module.stop_in_process()
    assert steward_module.in_process() is None
    assert contenders(zkflags.runtime.requests(), zkflags.root) == []
    assert "none is running" in zkflags_command("steward", "--status")


def test_contender_nodes_carry_the_apps_acl(zkflags, stewards, direct):
    steward = stewards(identifier="acl")
    wait_until(lambda: steward.acting, BOUND)
    [node] = direct.get_children(f"{zkflags.root}/steward")
    acl, _stat = direct.get_acls(f"{zkflags.root}/steward/{node}")
    assert acl == acl_for(parse_url(zkflags.url))


# -- scheduled changes -----------------------------------------------------------------------


def test_a_schedule_runs_once_at_its_time_audited_as_schedule(zkflags, stewards):
    zkflags.write("launch", everyone=False)
    services.repair()  # the row and the audit start from what ZooKeeper holds
    steward = stewards()
    wait_until(lambda: steward.acting, BOUND)
    due = now() + timedelta(seconds=1)
    sid = schedule("launch", due, schedules.on_change(True)).id

    wait_until(lambda: served_version("launch") == 1, BOUND, what="the change is served")
    audited(zkflags)
    ran = now()
    [row] = scheduled_rows("launch")
    assert (row.action, row.username, row.zk_version) == ("changed", "alice", 1)
    assert (row.before["everyone"], row.after["everyone"]) == (False, True)
    assert row.scheduled_for == due
    assert timedelta(0) <= row.late_by < timedelta(seconds=2)
    assert row.at <= ran
    assert row_state("launch") == (flag_doc("launch", everyone=True), 1)
    assert gone(zkflags, sid)
    assert steward.status.executed == [sid]


def test_a_schedule_missed_while_no_steward_ran_runs_late_and_says_how_late(zkflags, stewards):
    due = now() - timedelta(minutes=5)
    sid = schedule("late", due, schedules.percent_change(20)).id  # creates the flag
    steward = stewards()
    wait_until(lambda: served_version("late") == 0, BOUND)
    audited(zkflags)
    [row] = scheduled_rows("late")
    assert (row.action, row.after["percent"], row.after["everyone"]) == ("created", 20.0, None)
    assert row.late_by >= timedelta(minutes=5)
    assert steward.status.executed == [sid]


def test_a_hand_change_after_the_schedule_refuses_it_with_the_reason_kept(zkflags, stewards):
    zkflags.write("guarded", everyone=False)
    sid = schedule("guarded", now() + timedelta(seconds=1), schedules.on_change(True)).id
    services.update_flag("guarded", lambda d: {**d, "note": "by hand"}, actor="bob", source="admin")
    steward = stewards()

    wait_until(lambda: steward.status.refused == [sid], BOUND, what="the refusal")
    kept = schedules.store().schedule(sid)
    assert kept is not None and kept.state == REFUSED
    assert "moved since the schedule was set: it was at version 0, it now is at version 1" in (
        kept.reason
    )
    assert "changed by bob from admin" in kept.reason
    assert zkflags.read("guarded")[1] == 1  # not overwritten
    assert scheduled_rows("guarded") == []

    # --list shows it; --cancel removes it.
    from ..conftest import zkflags_command

    listing = zkflags_command("schedule", "--list")
    assert "Refused (kept until cancelled" in listing and sid in listing
    assert "changed by bob from admin" in listing
    zkflags_command("schedule", "--cancel", sid)
    assert gone(zkflags, sid)


def test_a_forced_schedule_runs_over_a_hand_change(zkflags, stewards):
    zkflags.write("forced", everyone=False)
    sid = schedule("forced", now(), schedules.value_change({"colour": "red"}), force=True).id
    services.update_flag("forced", lambda d: {**d, "note": "by hand"}, actor="bob", source="admin")
    steward = stewards()
    wait_until(lambda: steward.status.executed == [sid], BOUND)
    audited(zkflags)
    doc, version = zkflags.read("forced")
    assert (doc["value"], doc["note"], version) == ({"colour": "red"}, "by hand", 2)


def test_a_consumed_schedule_cannot_change_anything_again(zkflags):
    """The heart of exactly once: the change and the delete of its schedule znode are one
    multi(). A second attempt from the same reads (a steward that raced, or came back
    after being cut off) fails whole: no version, no audit row, no change record."""
    zkflags.write("once", everyone=False)
    sid = schedule("once", now() + timedelta(hours=1), schedules.on_change(True)).id
    found = schedules.store().schedule(sid)
    assert found is not None
    consume = [AlsoOp(schedules.store().schedule_path(sid), found.version)]
    rule = FlagRule.from_document({**flag_doc("once"), "everyone": True})
    services.save_flag(rule, expected_version=0, actor="alice", source="schedule", also=consume)
    with pytest.raises(AlsoOpFailed):
        services.save_flag(rule, expected_version=1, actor="alice", source="schedule", also=consume)
    assert zkflags.read("once")[1] == 1
    audited(zkflags)
    assert len(scheduled_rows("once")) == 1


def test_a_read_back_counts_a_change_with_also_ops_as_ours_only_with_our_record(zkflags):
    """After a connection lost mid-commit, the flag's document cannot say whose multi()
    applied (two stewards write the same change from the same version): the writer's read
    back also looks for the change record of its own note."""
    zkflags.write("mine", everyone=False)
    sid = schedule("mine", now() + timedelta(hours=1), schedules.on_change(True)).id
    found = schedules.store().schedule(sid)
    assert found is not None
    note = services._note("alice", "schedule")
    writer = zkflags.writer
    rule = FlagRule.from_document({**flag_doc("mine"), "everyone": True})
    writer.write_flag(rule, 0, note, [AlsoOp(schedules.store().schedule_path(sid), found.version)])
    assert writer._recorded(note.id) is True
    assert writer._recorded(services._note("alice", "schedule").id) is False


def test_the_command_schedules_lists_and_validates(zkflags):
    from django.core.management import CommandError

    from ..conftest import zkflags_command

    zkflags.write("cmd", everyone=False)
    out = zkflags_command("schedule", "cmd", "--at", "+1h", "--percent", "5")
    assert "Scheduled " in out and "cmd: 5% (the rules)" in out and "expects v0" in out
    assert "none is running" in out  # no steward yet: it says so
    listing = json.loads(zkflags_command("schedule", "--list", "--json"))
    [entry] = listing["schedules"]
    assert (entry["flag"], entry["change"], entry["expected_version"]) == (
        "cmd",
        {"everyone": None, "percent": 5.0},
        0,
    )
    with pytest.raises(CommandError, match="one of --on, --off"):
        zkflags_command("schedule", "cmd", "--at", "+1h", "--on", "--off")
    with pytest.raises(CommandError, match="ISO 8601"):
        zkflags_command("schedule", "cmd", "--at", "tomorrow", "--on")
    with pytest.raises(CommandError, match="at most one decimal"):
        zkflags_command("schedule", "cmd", "--at", "+1h", "--percent", "5.55")


# -- stepped rollouts ------------------------------------------------------------------------


def test_a_rollout_walks_its_steps_then_is_done(zkflags, stewards):
    zkflags.write("walk", everyone=False)
    stewards()
    rollout, steps = schedules.start_rollout(
        "walk", [10, 50, 100], 0.5, actor="carol", source="command"
    )
    assert [s.expected_version for s in steps] == [0, 1, 2]
    wait_until(lambda: schedules.store().rollout("walk").state == "done", BOUND)
    audited(zkflags)
    rows = scheduled_rows("walk")
    assert [(r.after["percent"], r.after["everyone"], r.zk_version) for r in rows] == [
        (10.0, None, 1),
        (50.0, None, 2),
        (100.0, None, 3),
    ]
    assert {r.username for r in rows} == {"carol"}
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(rows, rows[1:], strict=False)]
    assert all(gap >= 0.4 for gap in gaps), gaps


def test_a_rollout_pauses_resumes_and_aborts(zkflags, stewards):
    zkflags.write("paced", everyone=False)
    stewards()
    schedules.start_rollout("paced", [5, 25, 50, 100], 1.5, actor="carol", source="command")
    wait_until(lambda: zkflags.read("paced")[1] == 1, BOUND)
    paused = schedules.pause_rollout("paced")
    assert (paused.state, paused.next, paused.schedules) == (PAUSED, 1, {})
    assert 0 < paused.remaining <= 1.5
    pending = [s for s in schedules.store().schedules()[0] if s.flag == "paced"]
    assert pending == []

    # A hand change while paused is accepted by the resume (the person has seen it).
    audited(zkflags)
    services.update_flag("paced", lambda d: {**d, "note": "checked"}, actor="dan", source="admin")
    resumed, steps = schedules.resume_rollout("paced", actor="carol", source="command")
    assert resumed.state == RUNNING and [s.expected_version for s in steps] == [2, 3, 4]
    wait_until(lambda: zkflags.read("paced")[1] == 3, BOUND)
    aborted = schedules.abort_rollout("paced")
    assert aborted.state == "aborted"
    assert [s for s in schedules.store().schedules()[0] if s.flag == "paced"] == []
    assert zkflags.read("paced")[0]["percent"] == 25.0  # stays where the last step left it


def test_a_hand_change_halts_a_rollout(zkflags, stewards):
    zkflags.write("halts", everyone=False)
    steward = stewards()
    schedules.start_rollout("halts", [5, 50], 1.0, actor="carol", source="command")
    wait_until(lambda: zkflags.read("halts")[1] == 1, BOUND)
    audited(zkflags)
    services.update_flag("halts", lambda d: {**d, "percent": 1}, actor="dan", source="admin")
    wait_until(lambda: schedules.store().rollout("halts").state == HALTED, BOUND)
    rollout = schedules.store().rollout("halts")
    assert "step 2 refused" in rollout.reason and "changed by dan" in rollout.reason
    [refused] = steward.status.refused
    kept = schedules.store().schedule(refused)
    assert kept is not None and kept.state == REFUSED  # listed until the resume
    with pytest.raises(ScheduleError, match="already|needs it running"):
        schedules.pause_rollout("halts")
    schedules.resume_rollout("halts", actor="carol", source="command")
    wait_until(lambda: schedules.store().rollout("halts").state == "done", BOUND)
    assert zkflags.read("halts")[0]["percent"] == 50.0
    assert [s for s in schedules.store().schedules()[0] if s.flag == "halts"] == []


# -- hand edits ------------------------------------------------------------------------------


def hand_write(direct: KazooClient, root: str, name: str, doc: Any, version: int = -1) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    path = f"{root}/flags/{name}"
    if direct.exists(path):
        direct.set(path, data, version=version)
    else:
        direct.create(path, data)


def test_hand_edits_are_served_audited_and_mirrored(zkflags, stewards, direct):
    zkflags.write("edited", everyone=False)
    zkflags.write("doomed", everyone=True)
    services.repair()
    steward = stewards()
    wait_until(lambda: steward.acting, BOUND)

    hand_write(direct, zkflags.root, "edited", flag_doc("edited", everyone=True))
    wait_until(lambda: served_version("edited") == 1, BOUND, what="the hand edit is served")
    audited(zkflags)
    [row] = [r for r in audit("edited") if r.source == "zookeeper"]
    assert (row.action, row.before["everyone"], row.after["everyone"]) == ("changed", False, True)
    assert (row.username, row.zk_version) == ("", 1)
    assert row_state("edited") == (flag_doc("edited", everyone=True), 1)

    hand_write(direct, zkflags.root, "born", flag_doc("born", percent=30.0))
    wait_until(lambda: served_version("born") == 0, BOUND)
    audited(zkflags)
    assert [r.action for r in audit("born")] == ["created"]
    assert row_state("born") == (flag_doc("born", percent=30.0), 0)

    direct.delete(f"{zkflags.root}/flags/doomed")
    wait_until(lambda: served_version("doomed") is None, BOUND)
    audited(zkflags)
    assert audit("doomed")[-1].action == "deleted" and audit("doomed")[-1].source == "zookeeper"
    assert not Flag.objects.filter(name="doomed").exists()
    assert services.check().problems == []

    # An ordinary write is no hand edit: no rebuild, no "zookeeper" row.
    heals = steward.status.heals
    services.update_flag("edited", lambda d: {**d, "note": "admin"}, actor="eve", source="admin")
    hand_write(direct, zkflags.root, "sentinel", flag_doc("sentinel"))
    wait_until(lambda: served_version("sentinel") == 0, BOUND)  # the barrier
    audited(zkflags)
    assert steward.status.heals == heals + 1
    assert [r.source for r in audit("edited")][-1] == "admin"


def test_garbage_in_a_hand_edited_znode_keeps_the_last_good_rule(zkflags, stewards, direct):
    zkflags.write("garbled", everyone=True)
    steward = stewards()
    wait_until(lambda: steward.acting, BOUND)
    hand_write(direct, zkflags.root, "garbled", b"{not json")
    wait_until(lambda: "garbled" in steward.status.invalid, BOUND, what="reported")
    hand_write(direct, zkflags.root, "sentinel", flag_doc("sentinel"))
    wait_until(lambda: served_version("sentinel") == 0, BOUND)  # the barrier
    audited(zkflags)
    assert served_version("garbled") == 0  # its last good rule
    assert [r for r in audit("garbled") if r.source == "zookeeper"] == []

    hand_write(direct, zkflags.root, "garbled", flag_doc("garbled", everyone=False))
    wait_until(lambda: served_version("garbled") == 2, BOUND)
    wait_until(lambda: "garbled" not in steward.status.invalid, BOUND)


def test_an_edit_made_while_no_steward_ran_is_healed_when_one_acts(zkflags, stewards, direct):
    zkflags.write("offline", everyone=False)
    hand_write(direct, zkflags.root, "offline", flag_doc("offline", staff=True))
    stewards()
    wait_until(lambda: served_version("offline") == 1, BOUND)
    audited(zkflags)
    assert audit("offline")[-1].source == "zookeeper"
