"""Scheduled changes and stepped rollouts, as ZooKeeper holds them::

    <root>/schedules/<id>    one JSON document per scheduled change: pending, or refused
                             (kept with the reason until someone cancels it)
    <root>/rollouts/<flag>   one JSON document per stepped rollout of a flag; its pending
                             steps are schedules like any other

This module validates what a schedule asks, and reads and writes these documents (with the
app's ACL, every change from the version read). It changes no flag: only the steward
(:mod:`django_zkflags.steward`) executes a schedule, through
:func:`django_zkflags.services.save_flag`, consuming the schedule znode in the same
``multi()`` as the change (:meth:`ScheduleStore.consume`).
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.retry import ForceRetryError, KazooRetry, RetryFailedError

from .client import Requests
from .exceptions import FlagConflict, FlagWriteError, PermissionDenied
from .rules import FlagRule, InvalidFlag, validate_name, validate_percent
from .writer import AlsoOp

SCHEDULES_DIR = "schedules"
ROLLOUTS_DIR = "rollouts"

PENDING = "pending"
REFUSED = "refused"

RUNNING = "running"
PAUSED = "paused"
HALTED = "halted"  # a step was refused: the rest wait for a person
DONE = "done"
ABORTED = "aborted"
IN_PROGRESS = (RUNNING, PAUSED, HALTED)

#: A schedule document larger than this is not one of ours (a hand-written giant node).
MAX_DOCUMENT_BYTES = 64 * 1024
#: A rollout step that runs later than this re-times the steps after it (each ``every``
#: after the one before really ran).
RETIME_AFTER = 1.0


class ScheduleError(FlagWriteError):
    """A schedule or rollout request that cannot be done (the message says why)."""


# -- what a schedule asks ------------------------------------------------------------------


def on_change(everyone: bool) -> dict[str, Any]:
    """On (``True``) or off (``False``) for everyone."""
    return {"everyone": everyone}


def percent_change(percent: float) -> dict[str, Any]:
    """The rules at ``percent`` (and no on/off for everyone, which would hide them)."""
    value = validate_percent(percent)
    if value is None or round(value, 1) != value:
        raise InvalidFlag(f"A percentage from 0 to 100 with at most one decimal, got {percent}")
    return {"everyone": None, "percent": value}


def value_change(value: Any) -> dict[str, Any]:
    return {"value": value}


CHANGE_KEYS = frozenset({"everyone", "percent", "value"})


def describe_change(change: dict[str, Any]) -> str:
    """``on for everyone``, ``off for everyone``, ``25% (the rules)``, ``value = {...}``."""
    if "value" in change:
        return f"value = {json.dumps(change['value'], sort_keys=True)}"
    if change.get("everyone") is True:
        return "on for everyone"
    if change.get("everyone") is False:
        return "off for everyone"
    if "percent" in change:
        return f"{change['percent']:g}% (the rules)"
    return json.dumps(change, sort_keys=True)


def apply_change(doc: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    return {**doc, **change}


def validate_change(name: str, doc: dict[str, Any], change: Any) -> FlagRule:
    """The rule ``change`` makes of the flag document ``doc`` (raises InvalidFlag)."""
    if not isinstance(change, dict) or not change or set(change) - CHANGE_KEYS:
        raise InvalidFlag(f"A schedule changes {', '.join(sorted(CHANGE_KEYS))}; got {change!r}")
    return FlagRule.from_document(apply_change(doc, change), name=name)


# -- times -----------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``30m``, ``90s``, ``1h30m``, ``2d``: seconds (more than 0)."""
    compact = str(text).strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(f"{n}{u}" for n, u in parts).lower() != compact.lower():
        raise InvalidFlag(f"A duration such as 90s, 30m, 1h30m or 2d, got {text!r}")
    seconds = sum(float(number) * _UNITS[unit.lower()] for number, unit in parts)
    if not 0 < seconds < 366 * 86400:
        raise InvalidFlag(f"A duration more than 0 and less than a year, got {text!r}")
    return seconds


def parse_time(text: str, now: datetime | None = None, tz: Any = None) -> datetime:
    """When a schedule is due: ISO 8601 (``2026-12-24T23:00``, ``...T23:00:00+01:00``,
    ``...Z``), a time without an offset being in ``tz`` (the project's time zone); or
    ``+DURATION`` from ``now`` (``+30m``). Returned in UTC."""
    text = str(text).strip()
    now = now or datetime.now(timezone.utc)
    if text.startswith("+"):
        return now + timedelta(seconds=parse_duration(text[1:]))
    if text.lower() == "now":
        return now
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        raise InvalidFlag(
            f"A time in ISO 8601 (2026-12-24T23:00, with +01:00 or Z for an offset) or "
            f"+DURATION (+30m), got {text!r}"
        ) from None
    if at.tzinfo is None:
        if tz is None:
            raise InvalidFlag(f"{text!r} has no UTC offset (add Z or +HH:MM)")
        at = at.replace(tzinfo=tz)
    return at.astimezone(timezone.utc)


def parse_steps(text: str | Sequence[Any]) -> list[float]:
    """``1,5,25,50,100``: percentages, each 0 to 100 with at most one decimal."""
    items = text.split(",") if isinstance(text, str) else list(text)
    steps = []
    for item in items:
        try:
            number = float(str(item).strip().rstrip("%"))
        except ValueError:
            raise InvalidFlag(
                f"Steps are percentages such as 1,5,25,50,100; got {item!r}"
            ) from None
        steps.append(percent_change(number)["percent"])
    if not steps:
        raise InvalidFlag("A rollout needs at least one step")
    return steps


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat()


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidFlag(f"not a time: {value!r}")
    return parse_time(value)


# -- the documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One scheduled change of one flag: ``change`` (fields of its document) at ``at``,
    from ``expected_version`` (the flag's znode version when the schedule was set; None:
    the flag did not exist). Refused when the flag moved in between, unless ``force``."""

    id: str
    flag: str
    at: datetime
    change: dict[str, Any]
    expected_version: int | None
    force: bool = False
    username: str = ""
    user_id: Any = None
    source: str = ""
    created: str = ""
    state: str = PENDING
    reason: str = ""
    refused_at: str = ""
    rollout: str | None = None  # the rollout (its flag) whose step this is
    step: int | None = None
    version: int = -1  # the znode's version (not stored)

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    def due(self, now: datetime) -> bool:
        return self.pending and self.at <= now

    def describe(self) -> str:
        return describe_change(self.change)

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "flag": self.flag,
            "at": _iso(self.at),
            "change": self.change,
            "expected_version": self.expected_version,
            "force": self.force,
            "username": self.username,
            "user_id": self.user_id,
            "source": self.source,
            "created": self.created,
            "state": self.state,
        }
        if self.state == REFUSED:
            doc.update(reason=self.reason, refused_at=self.refused_at)
        if self.rollout is not None:
            doc.update(rollout=self.rollout, step=self.step)
        return doc

    def encode(self) -> bytes:
        return _encode(self.to_document())

    @classmethod
    def from_document(cls, id: str, doc: Any, version: int = -1) -> Schedule:
        """Raises InvalidFlag when ``doc`` is not a schedule."""
        if not isinstance(doc, dict):
            raise InvalidFlag("not a JSON object")
        try:
            flag = validate_name(doc["flag"])
            expected = doc.get("expected_version")
            if expected is not None and (
                isinstance(expected, bool) or not isinstance(expected, int)
            ):
                raise InvalidFlag(f"expected_version {expected!r}")
            change = doc["change"]
            validate_change(flag, FlagRule(flag).to_document(), change)
            state = doc.get("state", PENDING)
            if state not in (PENDING, REFUSED):
                raise InvalidFlag(f"state {state!r}")
            step = doc.get("step")
            return cls(
                id=id,
                flag=flag,
                at=_time(doc["at"]),
                change=change,
                expected_version=expected,
                force=bool(doc.get("force", False)),
                username=str(doc.get("username") or ""),
                user_id=doc.get("user_id"),
                source=str(doc.get("source") or ""),
                created=str(doc.get("created") or ""),
                state=state,
                reason=str(doc.get("reason") or ""),
                refused_at=str(doc.get("refused_at") or ""),
                rollout=doc.get("rollout"),
                step=step if isinstance(step, int) else None,
                version=version,
            )
        except KeyError as exc:
            raise InvalidFlag(f"no {exc.args[0]!r}") from None


@dataclass(frozen=True)
class Rollout:
    """A stepped rollout of ``flag``: the rules at each percentage of ``steps`` in turn,
    ``every`` seconds apart. ``next`` is the index of the step to run next; ``schedules``
    the schedule id of each pending step. Paused or halted, ``remaining`` is how long after
    a resume the next step runs."""

    flag: str
    steps: tuple[float, ...]
    every: float
    state: str = RUNNING
    next: int = 0
    schedules: dict[int, str] = field(default_factory=dict)
    remaining: float | None = None
    reason: str = ""
    username: str = ""
    user_id: Any = None
    source: str = ""
    created: str = ""
    updated: str = ""
    version: int = -1

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS

    def to_document(self) -> dict[str, Any]:
        return {
            "flag": self.flag,
            "steps": list(self.steps),
            "every": self.every,
            "state": self.state,
            "next": self.next,
            "schedules": {str(step): sid for step, sid in sorted(self.schedules.items())},
            "remaining": self.remaining,
            "reason": self.reason,
            "username": self.username,
            "user_id": self.user_id,
            "source": self.source,
            "created": self.created,
            "updated": self.updated,
        }

    def encode(self) -> bytes:
        return _encode(self.to_document())

    @classmethod
    def from_document(cls, doc: Any, version: int = -1) -> Rollout:
        if not isinstance(doc, dict):
            raise InvalidFlag("not a JSON object")
        try:
            return cls(
                flag=validate_name(doc["flag"]),
                steps=tuple(parse_steps(doc["steps"])),
                every=float(doc["every"]),
                state=str(doc.get("state") or RUNNING),
                next=int(doc.get("next") or 0),
                schedules={int(k): str(v) for k, v in (doc.get("schedules") or {}).items()},
                remaining=doc.get("remaining"),
                reason=str(doc.get("reason") or ""),
                username=str(doc.get("username") or ""),
                user_id=doc.get("user_id"),
                source=str(doc.get("source") or ""),
                created=str(doc.get("created") or ""),
                updated=str(doc.get("updated") or ""),
                version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidFlag(f"not a rollout: {exc!r}") from None


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _decode(data: bytes) -> Any:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidFlag(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise InvalidFlag(f"not JSON: {exc}") from None


def new_id() -> str:
    return secrets.token_hex(4)


def step_expected_version(base: int | None, index: int) -> int | None:
    """The flag's version step ``index`` of a rollout expects, when the rollout starts
    from version ``base`` (None: the flag does not exist, the first step creates it).
    Every step writes a new version, also one that changes nothing (its ``multi()``
    consumes its schedule), so the versions follow one another."""
    if base is None:
        return None if index == 0 else index - 1
    return base + index


# -- the store -------------------------------------------------------------------------------


class ScheduleStore:
    """Reads and versioned writes of ``<root>/schedules`` and ``<root>/rollouts``.

    A read-modify-write is one function run through ``KazooRetry``, raising
    ``ForceRetryError`` when something moved under it, as kazoo's recipes do."""

    RETRIES = 10

    def __init__(self, requests: Requests, root: str, acl: list[Any]) -> None:
        self.requests = requests
        self.client = requests.client
        self.root = root
        self.acl = acl
        self.schedules_path = f"{root}/{SCHEDULES_DIR}"
        self.rollouts_path = f"{root}/{ROLLOUTS_DIR}"

    def schedule_path(self, id: str) -> str:
        return f"{self.schedules_path}/{id}"

    def rollout_path(self, flag: str) -> str:
        return f"{self.rollouts_path}/{validate_name(flag)}"

    # -- reads ---------------------------------------------------------------------------

    def schedules(self) -> tuple[list[Schedule], dict[str, str]]:
        """Every schedule, by time (then id), and the znodes that hold no schedule (id ->
        what is wrong). One ``get_children``, then the ``get``\\s pipelined."""
        schedules, errors = self._read_all(self.schedules_path, self._schedule_of)
        schedules.sort(key=lambda schedule: (schedule.at, schedule.id))
        return schedules, errors

    def schedule(self, id: str) -> Schedule | None:
        found = self._get(self.schedule_path(_check_id(id)))
        if found is None:
            return None
        return self._schedule_of(id, *found)

    def rollouts(self) -> list[Rollout]:
        rollouts, _errors = self._read_all(self.rollouts_path, self._rollout_of)
        return sorted(rollouts, key=lambda rollout: rollout.flag)

    def rollout(self, flag: str) -> Rollout | None:
        found = self._get(self.rollout_path(flag))
        if found is None:
            return None
        return self._rollout_of(flag, *found)

    def _schedule_of(self, id: str, data: bytes, stat: Any) -> Schedule:
        return Schedule.from_document(id, _decode(data), stat.version)

    def _rollout_of(self, flag: str, data: bytes, stat: Any) -> Rollout:
        return Rollout.from_document(_decode(data), stat.version)

    def _get(self, path: str) -> tuple[bytes, Any] | None:
        self.requests.wait_connected()
        try:
            return self.requests.result(self.client.get_async(path))  # type: ignore[no-any-return]
        except NoNodeError:
            return None

    def _read_all(self, directory: str, parse: Any) -> tuple[list[Any], dict[str, str]]:
        self.requests.wait_connected()
        try:
            children = self.requests.result(self.client.get_children_async(directory))
        except NoNodeError:
            return [], {}
        pending = [(name, self.client.get_async(f"{directory}/{name}")) for name in children]
        found, errors = [], {}
        for name, result in pending:
            try:
                data, stat = self.requests.result(result)
            except NoNodeError:
                continue  # gone meanwhile
            try:
                found.append(parse(name, data, stat))
            except InvalidFlag as exc:
                errors[name] = str(exc)
        return found, errors

    # -- schedules -------------------------------------------------------------------------

    def add(self, schedule: Schedule) -> Schedule:
        """Create ``schedule`` under a new id."""
        self.ensure_layout()

        def attempt() -> Schedule:
            created = replace(schedule, id=new_id(), version=0)
            try:
                self.requests.result(
                    self.client.create_async(
                        self.schedule_path(created.id), created.encode(), acl=self.acl
                    )
                )
            except NodeExistsError:
                raise ForceRetryError() from None
            return created

        return self._retrying(attempt)

    def cancel(self, id: str) -> Schedule:
        """Delete a schedule (pending or refused) from the version read. A rollout's step
        is refused: pause or abort the rollout instead."""

        def attempt() -> Schedule:
            schedule = self.schedule(id)
            if schedule is None:
                raise ScheduleError(f"No schedule {id!r} (done, or cancelled already).")
            if schedule.rollout is not None and schedule.pending:
                raise ScheduleError(
                    f"Schedule {id} is step {(schedule.step or 0) + 1} of the rollout of "
                    f"{schedule.rollout}: pause or abort the rollout "
                    f"('zkflags rollout {schedule.rollout} --pause' or '--abort')."
                )
            try:
                self.requests.result(
                    self.client.delete_async(self.schedule_path(id), version=schedule.version)
                )
            except (BadVersionError, NoNodeError):
                raise ForceRetryError() from None
            return schedule

        return self._retrying(attempt)

    def consume(
        self, schedule: Schedule, rollout: Rollout | None, later: Sequence[Schedule], now: datetime
    ) -> list[AlsoOp]:
        """The operations that go in the ``multi()`` of the change ``schedule`` makes: its
        znode deleted from the version read (so that it runs once: a second steward's
        ``multi()``, or one after a cancel, fails whole); for a rollout step, the rollout
        document moved to the next step from its version (a pause meanwhile fails it too),
        and, when this step runs late, the ``later`` steps re-timed from now."""
        ops = [AlsoOp(self.schedule_path(schedule.id), schedule.version)]
        if rollout is None:
            return ops
        step = schedule.step or 0
        pending = {k: v for k, v in rollout.schedules.items() if k != step}
        last = step + 1 >= len(rollout.steps)
        ops.append(
            AlsoOp(
                self.rollout_path(rollout.flag),
                rollout.version,
                replace(
                    rollout,
                    next=step + 1,
                    schedules=pending,
                    state=DONE if last and not pending else rollout.state,
                    updated=_iso(now),
                ).encode(),
            )
        )
        if (now - schedule.at).total_seconds() > RETIME_AFTER:
            for other in later:
                if (
                    other.pending
                    and other.rollout == rollout.flag
                    and other.step is not None
                    and other.step > step
                ):
                    at = now + timedelta(seconds=rollout.every * (other.step - step))
                    ops.append(
                        AlsoOp(
                            self.schedule_path(other.id),
                            other.version,
                            replace(other, at=at).encode(),
                        )
                    )
        return ops

    def refuse(self, schedule: Schedule, reason: str, now: datetime) -> bool:
        """Keep ``schedule`` as refused, with ``reason`` (until someone cancels it). A
        rollout's step halts its rollout: the later steps are deleted with it, and wait for
        a person ('rollout NAME --resume' or '--abort'). False when the schedule moved
        since it was read (nothing is changed: look again)."""

        def attempt() -> bool:
            current = self.schedule(schedule.id)
            if current is None or not current.pending or current.version != schedule.version:
                return False
            refused = replace(current, state=REFUSED, reason=reason, refused_at=_iso(now))
            tx = self.client.transaction()
            tx.set_data(self.schedule_path(current.id), refused.encode(), version=current.version)
            rollout = self.rollout(current.rollout) if current.rollout else None
            if rollout is not None and rollout.in_progress:
                for sid in sorted(set(rollout.schedules.values()) - {current.id}):
                    other = self.schedule(sid)
                    if other is not None:
                        tx.delete(self.schedule_path(sid), version=other.version)
                tx.set_data(
                    self.rollout_path(rollout.flag),
                    replace(
                        rollout,
                        state=HALTED,
                        next=current.step or 0,
                        schedules={},
                        remaining=0.0,
                        reason=f"step {(current.step or 0) + 1} refused: {reason}",
                        updated=_iso(now),
                    ).encode(),
                    version=rollout.version,
                )
            self._commit(tx)
            return True

        return bool(self._retrying(attempt))

    # -- rollouts --------------------------------------------------------------------------

    def start_rollout(
        self, rollout: Rollout, flag_version: int | None, start: datetime, base: Schedule
    ) -> tuple[Rollout, list[Schedule]]:
        """Create the rollout and one schedule per step (the first at ``start``, then one
        every ``rollout.every`` seconds), in one ``multi()``. ``base`` gives who set it.
        Refused while another rollout of the flag is in progress."""
        self.ensure_layout()

        def attempt() -> tuple[Rollout, list[Schedule]]:
            existing = self.rollout(rollout.flag)
            if existing is not None and existing.in_progress:
                raise ScheduleError(
                    f"Flag {rollout.flag} has a rollout {existing.state} at step "
                    f"{existing.next + 1} of {len(existing.steps)}: abort it first "
                    f"('zkflags rollout {rollout.flag} --abort')."
                )
            steps = self._step_schedules(rollout, 0, flag_version, start, base)
            created = replace(rollout, state=RUNNING, next=0, schedules=_ids(steps))
            tx = self.client.transaction()
            self._put_rollout(tx, created, existing)
            for step in steps:
                tx.create(self.schedule_path(step.id), step.encode(), acl=self.acl)
            self._commit(tx)
            return replace(created, version=(existing.version + 1) if existing else 0), steps

        return self._retrying(attempt)

    def pause_rollout(self, flag: str, now: datetime) -> Rollout:
        """Stop the clock: the pending steps are deleted, and how long was left until the
        next one is kept for the resume."""

        def attempt() -> Rollout:
            rollout = self._in_progress(flag, RUNNING)
            steps = [s for s in (self.schedule(sid) for sid in rollout.schedules.values()) if s]
            next_at = min((s.at for s in steps), default=now)
            paused = replace(
                rollout,
                state=PAUSED,
                schedules={},
                remaining=max(0.0, (next_at - now).total_seconds()),
                reason="",
                updated=_iso(now),
            )
            tx = self.client.transaction()
            for step in steps:
                tx.delete(self.schedule_path(step.id), version=step.version)
            tx.set_data(self.rollout_path(flag), paused.encode(), version=rollout.version)
            self._commit(tx)
            return replace(paused, version=rollout.version + 1)

        return self._retrying(attempt)

    def resume_rollout(
        self, flag: str, flag_version: int | None, now: datetime, base: Schedule
    ) -> tuple[Rollout, list[Schedule]]:
        """Schedule the steps left, from the flag as it is now (``flag_version``): the
        next one ``remaining`` seconds from now, then one every ``every``. A halted
        rollout's refused step is deleted with it (it is scheduled again)."""

        def attempt() -> tuple[Rollout, list[Schedule]]:
            rollout = self._in_progress(flag, PAUSED, HALTED)
            start = now + timedelta(seconds=float(rollout.remaining or 0.0))
            steps = self._step_schedules(rollout, rollout.next, flag_version, start, base)
            resumed = replace(
                rollout,
                state=RUNNING,
                schedules=_ids(steps),
                remaining=None,
                reason="",
                updated=_iso(now),
            )
            tx = self.client.transaction()
            if rollout.state == HALTED:
                schedules, _errors = self.schedules()
                for old in schedules:
                    if old.rollout == flag and old.state == REFUSED:
                        tx.delete(self.schedule_path(old.id), version=old.version)
            for step in steps:
                tx.create(self.schedule_path(step.id), step.encode(), acl=self.acl)
            tx.set_data(self.rollout_path(flag), resumed.encode(), version=rollout.version)
            self._commit(tx)
            return replace(resumed, version=rollout.version + 1), steps

        return self._retrying(attempt)

    def abort_rollout(self, flag: str, now: datetime) -> Rollout:
        """The pending steps are deleted; the flag stays as the last step left it."""

        def attempt() -> Rollout:
            rollout = self._in_progress(flag, RUNNING, PAUSED, HALTED)
            steps = [s for s in (self.schedule(sid) for sid in rollout.schedules.values()) if s]
            aborted = replace(rollout, state=ABORTED, schedules={}, updated=_iso(now))
            tx = self.client.transaction()
            for step in steps:
                tx.delete(self.schedule_path(step.id), version=step.version)
            tx.set_data(self.rollout_path(flag), aborted.encode(), version=rollout.version)
            self._commit(tx)
            return replace(aborted, version=rollout.version + 1)

        return self._retrying(attempt)

    def _in_progress(self, flag: str, *states: str) -> Rollout:
        rollout = self.rollout(flag)
        if rollout is None:
            raise ScheduleError(f"Flag {flag} has no rollout.")
        if rollout.state not in states:
            raise ScheduleError(
                f"The rollout of {flag} is {rollout.state} (step {rollout.next} of "
                f"{len(rollout.steps)} done); this needs it {' or '.join(states)}."
            )
        return rollout

    def _step_schedules(
        self,
        rollout: Rollout,
        first: int,
        flag_version: int | None,
        start: datetime,
        base: Schedule,
    ) -> list[Schedule]:
        return [
            replace(
                base,
                id=new_id(),
                flag=rollout.flag,
                at=start + timedelta(seconds=rollout.every * (index - first)),
                change=percent_change(rollout.steps[index]),
                expected_version=step_expected_version(flag_version, index - first),
                force=False,
                rollout=rollout.flag,
                step=index,
                state=PENDING,
            )
            for index in range(first, len(rollout.steps))
        ]

    def _put_rollout(self, tx: Any, rollout: Rollout, existing: Rollout | None) -> None:
        if existing is None:
            tx.create(self.rollout_path(rollout.flag), rollout.encode(), acl=self.acl)
        else:
            tx.set_data(self.rollout_path(rollout.flag), rollout.encode(), version=existing.version)

    # -- plumbing --------------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create ``schedules/`` and ``rollouts/`` (and the root) with the app's ACL."""
        if self.requests.result(self.client.exists_async(self.rollouts_path)) is not None:
            return
        for directory in (self.schedules_path, self.rollouts_path):
            path = ""
            for part in directory.strip("/").split("/"):
                path += "/" + part
                try:
                    self.requests.result(self.client.create_async(path, b"", acl=self.acl))
                except NodeExistsError:
                    pass

    def _commit(self, tx: Any) -> list[Any]:
        """Commit a transaction; ForceRetryError when something moved since it was read."""
        results: list[Any] = self.requests.result(tx.commit_async())
        if any(isinstance(result, NoAuthError) for result in results):
            raise PermissionDenied(
                "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
            )
        failed = [r for r in results if isinstance(r, Exception)]
        if not failed:
            return results
        if all(
            isinstance(r, (BadVersionError, NoNodeError, NodeExistsError, RolledBackError))
            for r in failed
        ):
            raise ForceRetryError()
        raise FlagWriteError(f"ZooKeeper refused the write: {failed[0]!r}")

    def _retrying(self, attempt: Any) -> Any:
        retry = KazooRetry(
            max_tries=self.RETRIES, delay=0.01, backoff=1.5, max_delay=0.2, ignore_expire=False
        )
        try:
            return retry(attempt)
        except RetryFailedError:
            raise FlagConflict(
                "The schedules kept changing while this was done; nothing was changed. "
                "Look again and retry.",
                current=None,
                current_version=None,
            ) from None


def _ids(steps: Iterable[Schedule]) -> dict[int, str]:
    return {step.step: step.id for step in steps if step.step is not None}


def _check_id(id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{1,32}", str(id)):
        raise ScheduleError(f"Not a schedule id: {id!r}")
    return str(id)


def late_seconds(due: datetime, ran: datetime) -> float:
    return max(0.0, (ran - due).total_seconds())


def describe_lateness(seconds: float | None) -> str:
    """``on time`` (under a second), ``12.3 s late``, ``4 min late``, ``2.5 h late``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return "on time"
    if seconds < 60:
        return f"{seconds:.1f} s late"
    if seconds < 3600:
        return f"{math.floor(seconds / 60)} min late"
    return f"{seconds / 3600:.1f} h late"


# -- for people: the command and the admin ---------------------------------------------------


def store() -> ScheduleStore:
    """The store of this process's root, on its runtime's client."""
    from . import runtime
    from .client import acl_for

    rt = runtime.get_runtime()
    return ScheduleStore(rt.requests(), rt.url.root, acl_for(rt.url))


def _who(actor: Any) -> tuple[str, Any]:
    """(username, user id) of a Django user, or a name (a command's OS user)."""
    if isinstance(actor, str):
        return actor, None
    if actor is not None and getattr(actor, "is_authenticated", False):
        return str(actor.get_username()), actor.pk
    return "", None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _current_document(name: str) -> tuple[dict[str, Any], int | None]:
    """The flag's document as a change would start from it (a missing or invalid znode:
    the admin's row, else an empty rule), and its znode version."""
    from . import services
    from .models import Flag

    stored = services.read_flag(name)
    doc = stored.document()
    if doc is None:
        row = Flag.objects.filter(name=name).first()
        try:
            doc = (row.to_rule() if row is not None else FlagRule(name)).to_document()
        except InvalidFlag:
            doc = FlagRule(name).to_document()
    return doc, stored.version


def schedule_change(
    name: str,
    at: datetime,
    change: dict[str, Any],
    *,
    actor: Any = None,
    source: str,
    force: bool = False,
) -> Schedule:
    """Schedule ``change`` of flag ``name`` at ``at``, from the flag's version now: the
    steward refuses it if the flag moves in between (unless ``force``). Validated now
    against the flag as it is (raises InvalidFlag)."""
    validate_name(name)
    doc, version = _current_document(name)
    validate_change(name, doc, change)
    username, user_id = _who(actor)
    schedule = Schedule(
        id="",
        flag=name,
        at=at.astimezone(timezone.utc),
        change=change,
        expected_version=version,
        force=force,
        username=username,
        user_id=user_id,
        source=source,
        created=_iso(_now()),
    )
    return store().add(schedule)


def cancel_schedule(id: str) -> Schedule:
    return store().cancel(id)


def start_rollout(
    name: str,
    steps: Sequence[float],
    every: float,
    *,
    start: datetime | None = None,
    actor: Any = None,
    source: str,
) -> tuple[Rollout, list[Schedule]]:
    """A stepped rollout of flag ``name``: the rules at each percentage of ``steps``, the
    first at ``start`` (now), then one every ``every`` seconds; each step a schedule from
    the version the step before leaves."""
    validate_name(name)
    steps = parse_steps(list(steps))
    if every <= 0:
        raise InvalidFlag("--every must be more than 0")
    doc, version = _current_document(name)
    for percent in steps:
        validate_change(name, doc, percent_change(percent))
    username, user_id = _who(actor)
    now = _now()
    rollout = Rollout(
        flag=name,
        steps=tuple(steps),
        every=float(every),
        username=username,
        user_id=user_id,
        source=source,
        created=_iso(now),
        updated=_iso(now),
    )
    base = Schedule(
        id="",
        flag=name,
        at=now,
        change={},
        expected_version=version,
        username=username,
        user_id=user_id,
        source=source,
        created=_iso(now),
    )
    return store().start_rollout(rollout, version, (start or now).astimezone(timezone.utc), base)


def pause_rollout(name: str) -> Rollout:
    return store().pause_rollout(validate_name(name), _now())


def resume_rollout(name: str, *, actor: Any = None, source: str) -> tuple[Rollout, list[Schedule]]:
    """Go on from the flag as it is now (a hand edit while paused is accepted: the person
    resuming has seen it)."""
    validate_name(name)
    _doc, version = _current_document(name)
    username, user_id = _who(actor)
    now = _now()
    base = Schedule(
        id="",
        flag=name,
        at=now,
        change={},
        expected_version=version,
        username=username,
        user_id=user_id,
        source=source,
        created=_iso(now),
    )
    return store().resume_rollout(name, version, now, base)


def abort_rollout(name: str) -> Rollout:
    return store().abort_rollout(validate_name(name), _now())
