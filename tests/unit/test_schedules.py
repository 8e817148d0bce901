"""django_zkflags/schedules.py without ZooKeeper: what a schedule asks, times, durations,
steps, the documents' round trip, and the versions the steps of a rollout expect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from django_zkflags.rules import InvalidFlag
from django_zkflags.schedules import (
    REFUSED,
    Rollout,
    Schedule,
    describe_change,
    describe_lateness,
    on_change,
    parse_duration,
    parse_steps,
    parse_time,
    percent_change,
    step_expected_version,
    validate_change,
    value_change,
)

NOW = datetime(2026, 12, 24, 22, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("0.5s", 0.5), ("1H", 3600)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "-5m", "0s", "1y", "5m30", "400d"])
def test_bad_durations(text):
    with pytest.raises(InvalidFlag):
        parse_duration(text)


def test_times_are_utc_from_an_offset_a_zone_or_from_now():
    assert parse_time("2026-12-24T23:00+01:00") == NOW
    assert parse_time("2026-12-24T22:00Z") == NOW
    assert parse_time("2026-12-24T23:00", tz=ZoneInfo("Europe/Paris")) == NOW
    assert parse_time("+30m", now=NOW) == NOW + timedelta(minutes=30)
    assert parse_time("now", now=NOW) == NOW
    with pytest.raises(InvalidFlag, match="no UTC offset"):
        parse_time("2026-12-24T23:00")
    with pytest.raises(InvalidFlag, match="ISO 8601"):
        parse_time("midnight", tz=timezone.utc)


def test_changes_and_steps():
    assert on_change(True) == {"everyone": True}
    assert percent_change(5) == {"everyone": None, "percent": 5.0}
    assert describe_change(percent_change(2.5)) == "2.5% (the rules)"
    assert describe_change(value_change({"a": 1})) == 'value = {"a": 1}'
    assert describe_change(on_change(False)) == "off for everyone"
    assert parse_steps("1, 5,25%,100") == [1.0, 5.0, 25.0, 100.0]
    for bad in ("", "1,x", "101", "5.55"):
        with pytest.raises(InvalidFlag):
            parse_steps(bad)
    with pytest.raises(InvalidFlag, match="A schedule changes"):
        validate_change("f", {"name": "f"}, {"staff": True})
    assert validate_change("f", {"name": "f", "everyone": True}, percent_change(50)).percent == 50


def test_a_schedule_and_a_rollout_survive_their_documents():
    schedule = Schedule(
        id="ab12cd34",
        flag="checkout",
        at=NOW,
        change=on_change(True),
        expected_version=3,
        force=True,
        username="alice",
        user_id=4,
        source="admin",
        state=REFUSED,
        reason="moved",
        refused_at=NOW.isoformat(),
        rollout="checkout",
        step=2,
        version=7,
    )
    doc = schedule.to_document()
    assert Schedule.from_document("ab12cd34", doc, 7) == schedule
    with pytest.raises(InvalidFlag):
        Schedule.from_document("x", {**doc, "change": {"users": [1]}})
    with pytest.raises(InvalidFlag):
        Schedule.from_document("x", {**doc, "expected_version": "3"})
    rollout = Rollout("checkout", (1.0, 5.0), 60.0, schedules={0: "a", 1: "b"}, version=2)
    assert Rollout.from_document(rollout.to_document(), 2) == rollout


def test_each_step_expects_the_version_the_step_before_leaves():
    assert [step_expected_version(3, i) for i in range(3)] == [3, 4, 5]
    assert [step_expected_version(None, i) for i in range(3)] == [None, 0, 1]


def test_lateness_for_people():
    assert describe_lateness(0.2) == "on time"
    assert describe_lateness(12.34) == "12.3 s late"
    assert describe_lateness(300) == "5 min late"
    assert describe_lateness(9000) == "2.5 h late"
