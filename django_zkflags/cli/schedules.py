"""What must happen once across the fleet: schedule, rollout, steward.

A schedule or rollout is stored in ZooKeeper and run by the steward (see docs/steward.md),
through :mod:`django_zkflags.services`, audited with source "schedule" and the person who
set it (here: the operating system's user). Times are shown in the project's time zone.
"""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from .. import runtime, schedules, services, steward
from ..models import FlagChange
from ..rules import InvalidFlag, validate_name
from ..schedules import (
    REFUSED,
    Rollout,
    Schedule,
    describe_lateness,
    parse_duration,
    parse_steps,
    parse_time,
)
from .base import Subcommand


def when(at: datetime) -> str:
    local = timezone.localtime(at)
    return f"{local:%Y-%m-%d %H:%M:%S}"


def relative(at: datetime, now: datetime | None = None) -> str:
    now = now or datetime.now(dt_timezone.utc)
    seconds = (at - now).total_seconds()
    if seconds <= 0:
        return "due now"
    if seconds < 60:
        return f"in {seconds:.0f} s"
    if seconds < 3600:
        return f"in {seconds / 60:.0f} min"
    if seconds < 86400:
        return f"in {seconds / 3600:.1f} h"
    return f"in {seconds / 86400:.1f} d"


def describe_schedule(schedule: Schedule) -> str:
    expects = "creates it" if schedule.expected_version is None else f"v{schedule.expected_version}"
    step = f", rollout step {(schedule.step or 0) + 1}" if schedule.rollout is not None else ""
    force = ", --force" if schedule.force else ""
    return (
        f"{schedule.id}  {schedule.flag}: {schedule.describe()} at {when(schedule.at)} "
        f"(expects {expects}{force}{step}; set by {schedule.username or '-'} "
        f"from {schedule.source or '-'})"
    )


def describe_rollout(rollout: Rollout) -> str:
    steps = " → ".join(
        f"[{p:g}%]" if i == rollout.next and rollout.in_progress else f"{p:g}%"
        for i, p in enumerate(rollout.steps)
    )
    every = describe_seconds(rollout.every)
    state = rollout.state
    if rollout.state in (schedules.PAUSED, schedules.HALTED) and rollout.remaining is not None:
        state += (
            f" (resuming runs the next step {describe_seconds(rollout.remaining, 'at once')} after)"
        )
    reason = f": {rollout.reason}" if rollout.reason else ""
    return (
        f"{rollout.flag}: {state}{reason}; {rollout.next} of {len(rollout.steps)} step(s) done; "
        f"{steps}, every {every} (set by {rollout.username or '-'})"
    )


def describe_seconds(seconds: float, zero: str = "0 s") -> str:
    if seconds <= 0:
        return zero
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def steward_line() -> str:
    rt = runtime.get_runtime()
    try:
        names = steward.contenders(rt.requests(), rt.url.root)
    except Exception as exc:  # a listing must not fail for this line
        return f"Stewards: unknown ({exc})"
    if not names:
        return (
            f"Stewards: none is running for {rt.url.root}: schedules wait until one starts "
            "('manage.py zkflags steward')."
        )
    return f"Stewards: {len(names)} ({names[0]} acts)."


def _change_from(options: dict[str, Any]) -> dict[str, Any]:
    chosen = [
        key for key in ("on", "off", "percent", "value") if options.get(key) not in (None, False)
    ]
    if len(chosen) != 1:
        raise CommandError("Say what to change: one of --on, --off, --percent N, --value JSON")
    if options.get("on"):
        return schedules.on_change(True)
    if options.get("off"):
        return schedules.on_change(False)
    if options.get("percent") is not None:
        return schedules.percent_change(float(options["percent"]))
    try:
        value = json.loads(options["value"])
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"--value must be JSON: {exc}") from None
    return schedules.value_change(value)


class ScheduleCommand(Subcommand):
    name = "schedule"
    help = "Change a flag at a given time (run once by the steward); --list, --cancel ID."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("flag", nargs="?", help="the flag to change (with --list: only it)")
        parser.add_argument(
            "--at",
            help="when: ISO 8601 (2026-12-24T23:00, in the project's time zone unless it "
            "has an offset or Z), or +DURATION (+30m, +1h30m)",
        )
        parser.add_argument("--on", action="store_true", help="on for everyone")
        parser.add_argument("--off", action="store_true", help="off for everyone")
        parser.add_argument(
            "--percent", type=float, help="the rules at N percent (clears on/off for everyone)"
        )
        parser.add_argument("--value", help="the live configuration value, as JSON")
        parser.add_argument(
            "--force",
            action="store_true",
            help="run even if the flag changed after the schedule was set",
        )
        parser.add_argument("--list", action="store_true", help="the schedules and rollouts")
        parser.add_argument("--json", dest="as_json", action="store_true", help="with --list")
        parser.add_argument("--cancel", metavar="ID", help="delete a schedule (or its refusal)")

    def handle(self, flag: str | None = None, **options: Any) -> None:
        if options.get("cancel"):
            cancelled = schedules.cancel_schedule(options["cancel"])
            self.stdout.write(f"Cancelled {describe_schedule(cancelled)}")
            return
        if options.get("list"):
            self.list(flag, bool(options.get("as_json")))
            return
        if not flag:
            raise CommandError("Name the flag to schedule (or use --list, --cancel ID)")
        if not options.get("at"):
            raise CommandError("Say when with --at (ISO 8601, or +30m)")
        try:
            validate_name(flag)
            at = parse_time(options["at"], tz=timezone.get_current_timezone())
            change = _change_from(options)
        except InvalidFlag as exc:
            raise CommandError(str(exc)) from None
        created = schedules.schedule_change(
            flag,
            at,
            change,
            actor=services.command_actor(),
            source="command",
            force=bool(options.get("force")),
        )
        self.stdout.write(f"Scheduled {describe_schedule(created)}, {relative(created.at)}.")
        self.stdout.write(steward_line())

    def list(self, flag: str | None, as_json: bool) -> None:
        store = schedules.store()
        found, errors = store.schedules()
        rollouts = store.rollouts()
        if flag:
            found = [s for s in found if s.flag == flag]
            rollouts = [r for r in rollouts if r.flag == flag]
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "schedules": [{"id": s.id, **s.to_document()} for s in found],
                        "invalid": errors,
                        "rollouts": [r.to_document() for r in rollouts],
                    },
                    indent=2,
                )
            )
            return
        tz = timezone.get_current_timezone_name()
        pending = [s for s in found if s.pending]
        refused = [s for s in found if s.state == REFUSED]
        self.stdout.write(f"Scheduled changes (times in {tz}):")
        for schedule in pending:
            self.stdout.write(f"  {describe_schedule(schedule)}, {relative(schedule.at)}")
        if not pending:
            self.stdout.write("  none")
        if refused:
            self.stdout.write("Refused (kept until cancelled with --cancel ID):")
            for schedule in refused:
                self.stdout.write(f"  {describe_schedule(schedule)}")
                self.stdout.write(f"      refused: {schedule.reason}")
        for sid, error in sorted(errors.items()):
            self.stdout.write(f"  {sid}: not a schedule ({error}); left alone")
        if rollouts:
            self.stdout.write("Rollouts:")
            for rollout in rollouts:
                self.stdout.write(f"  {describe_rollout(rollout)}")
        ran = FlagChange.objects.filter(source="schedule")
        if flag:
            ran = ran.filter(flag_name=flag)
        recent = list(ran.order_by("-at", "-pk")[:10])
        if recent:
            self.stdout.write("Recently run (from the audit log):")
            for change in recent:
                late = change.late_by
                lateness = describe_lateness(late.total_seconds()) if late is not None else ""
                self.stdout.write(
                    f"  {change.flag_name} v{change.zk_version} at {when(change.at)} "
                    f"(due {when(change.scheduled_for) if change.scheduled_for else '-'}, "
                    f"{lateness or '-'}), set by {change.username or '-'}"
                )
        self.stdout.write(steward_line())


class RolloutCommand(Subcommand):
    name = "rollout"
    help = "A stepped rollout (--steps 1,5,25,50,100 --every 30m); --pause, --resume, --abort."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("flag")
        parser.add_argument("--steps", help="percentages, in order: 1,5,25,50,100")
        parser.add_argument("--every", help="between steps: 30m, 2h, 1d")
        parser.add_argument("--at", help="the first step (default: now); ISO 8601 or +DURATION")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--pause", action="store_true", help="stop the clock")
        action.add_argument(
            "--resume", action="store_true", help="go on from the flag as it is now"
        )
        action.add_argument(
            "--abort", action="store_true", help="no more steps (the flag stays as it is)"
        )

    def handle(self, flag: str, **options: Any) -> None:
        validate_name(flag)
        if options.get("pause"):
            rollout = schedules.pause_rollout(flag)
            self.stdout.write(f"Paused: {describe_rollout(rollout)}")
            return
        if options.get("resume"):
            rollout, resumed = schedules.resume_rollout(
                flag, actor=services.command_actor(), source="command"
            )
            self.stdout.write(f"Resumed: {describe_rollout(rollout)}")
            self._steps(resumed)
            return
        if options.get("abort"):
            rollout = schedules.abort_rollout(flag)
            self.stdout.write(f"Aborted: {describe_rollout(rollout)}")
            return
        if not options.get("steps"):
            existing = schedules.store().rollout(flag)
            if existing is None:
                raise CommandError(f"Flag {flag} has no rollout; start one with --steps --every")
            self.stdout.write(describe_rollout(existing))
            return
        if not options.get("every"):
            raise CommandError("Say how long between steps with --every (30m, 2h)")
        try:
            percents = parse_steps(options["steps"])
            every = parse_duration(options["every"])
            start = (
                parse_time(options["at"], tz=timezone.get_current_timezone())
                if options.get("at")
                else None
            )
        except InvalidFlag as exc:
            raise CommandError(str(exc)) from None
        rollout, created = schedules.start_rollout(
            flag, percents, every, start=start, actor=services.command_actor(), source="command"
        )
        self.stdout.write(f"Rollout: {describe_rollout(rollout)}")
        self._steps(created)
        self.stdout.write(steward_line())

    def _steps(self, steps: list[Schedule]) -> None:
        for step in steps:
            self.stdout.write(f"  {describe_schedule(step)}")


class StewardCommand(Subcommand):
    name = "steward"
    help = "Run a steward (one acts per root: schedules, hand edits); --status lists them."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--status", action="store_true", help="the stewards of this root; the first acts"
        )

    def handle(self, status: bool = False, **options: Any) -> None:
        rt = runtime.get_runtime()
        if status:
            rt.requests().wait_connected()
            names = steward.contenders(rt.requests(), rt.url.root)
            for index, name in enumerate(names):
                self.stdout.write(f"{name}\t{'acting' if index == 0 else 'standing by'}")
            self.stdout.write(steward_line())
            return
        done = threading.Event()

        def stop(signum: int, frame: Any) -> None:
            done.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        runtime.start(wait=0)
        running = steward.start_in_process()
        self.stdout.write(
            f"Steward {running.status.identifier} contending for {rt.url.root} "
            f"({rt.url.hosts}); SIGTERM or Ctrl-C ends it."
        )
        self.stdout.flush()
        acting = False
        while not done.wait(0.05):
            if running.acting != acting:
                acting = running.acting
                self.stdout.write(
                    f"Steward {running.status.identifier} "
                    + ("acting" if acting else "standing by")
                )
                self.stdout.flush()
        steward.stop_in_process(timeout=2.0)
        self.stdout.write(f"Steward {running.status.identifier} stopped")
        self.stdout.flush()  # the runtime is closed by its own exit hook


COMMANDS: tuple[type[Subcommand], ...] = (ScheduleCommand, RolloutCommand, StewardCommand)
