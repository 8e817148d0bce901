"""Which configuration processes run: this one (``status``) and all of them (``fleet``)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import CommandError

from .. import runtime
from ..exceptions import ZooKeeperUnavailable
from ..fleet import FleetReport
from ..views import health_report
from .base import Subcommand


def ago(seconds: float | None) -> str:
    """``4.2 s ago``, ``3 min ago``, ``2.5 h ago``, ``-`` for unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def version_label(version: Any, zxid: Any) -> str:
    if version is None and not zxid:
        return "none"
    shown = f"v{version}" if version is not None else "v?"
    return f"{shown} (zxid {zxid:#x})" if isinstance(zxid, int) and zxid else shown


class Status(Subcommand):
    name = "status"
    help = "What this process serves, and what its health/ endpoint would answer."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--wait", type=float, default=3.0, help="seconds to wait for the first snapshot"
        )
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="status() and health as JSON"
        )

    def handle(self, wait: float = 3.0, as_json: bool = False, **options: Any) -> None:
        runtime.start(wait=wait)
        status = runtime.status()
        health = health_report()
        if as_json:
            self.stdout.write(_json({**status, "health": health}))
        else:
            self.stdout.write("\n".join(describe_status(status, health)))
        if health["status_code"] != 200:
            raise CommandError(f"health/ would answer {health['status_code']}: {health['problem']}")


def describe_status(status: dict[str, Any], health: dict[str, Any]) -> list[str]:
    """``status()`` and the health report, for a person."""
    source = {
        "zookeeper": "from ZooKeeper",
        "file": f"from the disk copy {status.get('snapshot_file')}",
        "empty": "none: every flag answers its default",
    }.get(str(status.get("source")), str(status.get("source")))
    environment = status.get("environment")
    chain = " → ".join(status.get("environment_chain") or [])
    lines = [
        f"Health:       {health['status_code']} "
        + ("OK" if health["ok"] else f"({health['problem']})"),
        f"Snapshot:     {version_label(status.get('version'), status.get('zxid'))}, "
        f"{status.get('flags', 0)} flag(s), {source}",
        f"Environment:  {environment or 'none'}" + (f" ({chain})" if chain else ""),
    ]
    if "hosts" in status:
        state = "connected" if status.get("connected") else f"not connected ({status['state']})"
        session = f", session {status['session_id']}" if status.get("session_id") else ""
        lines.append(f"ZooKeeper:    {status['hosts']}{status['root']}: {state}{session}")
        heard = status.get("last_heard_seconds_ago")
        if not status.get("connected"):
            lines.append(f"Last heard:   {'never' if heard is None else ago(heard)}")
        confirmed = status.get("confirmed_seconds_ago")
        lines.append(
            "Confirmed:    "
            + ("never" if confirmed is None else f"current {ago(confirmed)}")
            + f" (checked every {status.get('verify_interval') or 0:g} s; "
            f"{status.get('missed_changes', 0)} change(s) found by the check, not the watch)"
        )
        if status.get("fleet_node"):
            lines.append(f"Fleet entry:  {status['fleet_node']}")
    else:
        lines.append("ZooKeeper:    not watching (this process has no runtime)")
    invalid = status.get("invalid_flags") or {}
    for name in sorted(invalid):
        lines.append(f"Invalid flag: {name}: {invalid[name]} (serving its last good rule)")
    if status.get("last_error"):
        lines.append(f"Last error:   {status['last_error']}")
    return lines


class Fleet(Subcommand):
    name = "fleet"
    help = "Every running process: which snapshot it applied, and when."

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--json",
            dest="as_json",
            action="store_true",
            help="a list of objects (host, pid, version, environment, zxid, state, ...)",
        )

    def handle(self, as_json: bool = False, **options: Any) -> None:
        rt = runtime.get_runtime()
        requests = rt.requests()
        try:
            requests.wait_connected()
            report = rt.read_fleet()
        except ZooKeeperUnavailable as exc:
            raise CommandError(f"fleet unknown: {exc}") from exc
        own = rt.fleet.name if rt.fleet is not None else None  # this command's own process
        report = FleetReport(
            tuple(m for m in report.members if m.node != own),
            report.snapshot_zxid,
            report.snapshot_version,
            report.read_at,
            report.read_seconds,
        )
        if as_json:
            self.stdout.write(_json([m.as_json(report) for m in report.members]))
        else:
            self.stdout.write("\n".join(describe_fleet(report)))


def describe_fleet(report: FleetReport) -> list[str]:
    """The fleet as a table, for a person."""
    header = ("HOST", "PID", "ENVIRONMENT", "APPLIED", "WHEN", "STATE", "LIBRARY", "PROGRAM")
    rows = [header]
    for member in report.members:
        rows.append(
            (
                str(member.host or "?"),
                str(member.pid or "?"),
                str(member.environment or "-"),
                version_label(member.version, member.zxid),
                ago(member.applied_seconds_ago(report.read_at)),
                report.state_of(member) + (f": {member.error}" if member.error else ""),
                str(member.library or "?"),
                str(member.fields.get("program") or "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if not report.members:
        lines = ["No process is registered in the fleet (besides this command)."]
    snapshot = (
        version_label(report.snapshot_version, report.snapshot_zxid)
        if report.snapshot_zxid is not None
        else "none yet"
    )
    laggards = len(report.laggards)
    lines.append("")
    lines.append(
        f"Snapshot in ZooKeeper: {snapshot}. Applied by {len(report.current)} of "
        f"{report.total} process(es)"
        + (f"; {laggards} behind." if laggards else ".")
        + f" (read {time.strftime('%H:%M:%S', time.localtime(report.read_at))})"
    )
    return lines


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


COMMANDS: tuple[type[Subcommand], ...] = (Status, Fleet)
