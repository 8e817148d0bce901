"""The fleet: which snapshot each running process serves.

Every watching process keeps one **ephemeral** znode (created with the app's ACL; ACLs are
not inherited) under the root::

    <root>/fleet/<host>:<pid>:<token>   JSON {host, pid, environment, version, zxid, ...}

:class:`FleetMember` keeps this process's node; :func:`read_fleet` reads them all (for the
admin's Fleet page, its flag list header and ``manage.py zkflags fleet``). The entry's
wire format lives here, next to both.

The node dies with the session that created it: a process that exits closes its session
and its node goes at once; a process killed with SIGKILL goes when ZooKeeper expires its
session (``ZKFLAGS["SESSION_TIMEOUT"]``). Nobody watches these nodes: a process holds
the same single watch (on the snapshot) with or without the fleet, and a reader pays one
``get_children`` plus one ``get`` per process, pipelined.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import NoAuthError, NodeExistsError, NoNodeError

from . import __version__
from .client import Requests
from .exceptions import ZooKeeperUnavailable

log = logging.getLogger("django_zkflags.fleet")

FLEET_DIR = "fleet"

#: The largest fleet entry read (a hand-written giant node is skipped as unreadable).
MAX_ENTRY_BYTES = 64 * 1024


def fleet_path(root: str) -> str:
    return f"{root}/{FLEET_DIR}"


def node_name(host: str, pid: int, token: str) -> str:
    """``<host>:<pid>:<token>``; a host name that is no valid znode name is made one."""
    safe = host.replace("/", "_").strip() or "unknown"
    if safe in (".", ".."):
        safe = "unknown"
    return f"{safe}:{pid}:{token}"


def program() -> str:
    """What runs in this process, shortly: ``gunicorn``, ``manage.py runserver``. Never
    more of the command line than a management command's name (it could hold secrets)."""
    argv = sys.argv or [""]
    name = os.path.basename(argv[0]) or "python"
    if name in ("manage.py", "django-admin", "__main__.py") and len(argv) > 1:
        command = argv[1]
        if not command.startswith("-"):
            return f"{name} {command}"
    return name


def identity(host: str, started_at: float) -> dict[str, Any]:
    """The fields of a fleet entry that do not change while the process runs."""
    import django

    return {
        "host": host,
        "pid": os.getpid(),
        "started_at": round(started_at, 3),
        "library": __version__,
        "python": platform.python_version(),
        "django": django.get_version(),
        "program": program(),
    }


class FleetMember:
    """Keep this process's ephemeral node under ``<root>/fleet`` current, across sessions.

    Shaped like :class:`~django_zkflags.watcher.NodeWatch`: kazoo's callback (a state
    change) and :meth:`applied` (called by the runtime on the watch's thread after it
    published a snapshot) only record what is to be done and set an event; a thread of this
    recipe's own makes the requests:

    * on every new session (a CONNECTED whose session id is not the one the node was
      created in) it creates the node: ephemeral nodes die with their session;
    * after a snapshot was applied it writes the node's data (one unversioned ``set``);
      a burst of snapshots collapses into one write of the latest state;
    * a node found gone (deleted by hand, the root deleted) is created again at the next
      write; the path up to it is created with the app's ACL, level by level;
    * a failure is logged once and retried with a back-off (up to 5 s), except a refusal by
      the ACL (credentials that may not create under the root), retried only with the next
      snapshot or session.

    It holds no watch. While disconnected it does nothing (the next CONNECTED wakes it).
    A forked child makes a member of its own (a new token and pid): it never touches its
    parent's node, which lives on with the parent's session.
    """

    def __init__(
        self,
        client: KazooClient,
        root: str,
        acl: list[Any],
        fields: Mapping[str, Any],
        *,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.acl = acl
        self.timeout = timeout
        self.directory = fleet_path(root)
        self.name = node_name(
            str(fields["host"]), int(fields["pid"]), token or secrets.token_hex(3)
        )
        self.path = f"{self.directory}/{self.name}"
        self._fields: dict[str, Any] = dict(fields)  # replaced whole, never changed in place
        self._wake = threading.Event()
        self._stopping = False
        self._abandoned = False
        self._session: int | None = None  # the session the node was created in
        self._written: bytes | None = None
        self._thread = threading.Thread(target=self._run, name="zkflags-fleet", daemon=True)
        self.writes = 0
        self.creates = 0
        self.last_error: str | None = None

    # -- the runtime's side ------------------------------------------------------------------

    def start(self) -> None:
        self.client.add_listener(self._on_state)
        self._wake.set()
        self._thread.start()

    def applied(self, **fields: Any) -> None:
        """Record what this process now serves; the node is written off this thread."""
        self._fields = {**self._fields, **fields}
        self._wake.set()

    def stop(self, timeout: float = 0.5) -> None:
        """Stop writing. The node itself goes when the session is closed."""
        self._stopping = True
        self.client.remove_listener(self._on_state)
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def abandon(self) -> None:
        """In a forked child: never write the parent's node. Under gevent this recipe's
        greenlet survives the fork (threads do not): it parks for good instead of ending,
        since a thread the child's ``threading`` no longer knows fails as it ends (a
        KeyError traceback from ``Thread._delete``)."""
        self._abandoned = True
        self._stopping = True

    @property
    def fields(self) -> dict[str, Any]:
        return dict(self._fields)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # kazoo's thread: only flag the work.
    def _on_state(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            self._wake.set()

    # -- this recipe's thread ------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while True:
            self._wake.wait()
            if self._stopping:
                return self._end()
            self._wake.clear()
            if not self.client.connected:
                continue  # the CONNECTED listener wakes us again
            try:
                self._sync()
                self.last_error = None
                backoff = 0.05
            except Exception as exc:  # a failed write must never end the recipe
                if self._stopping:
                    return self._end()
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:
                    log.warning("Registering in the fleet (%s) failed: %s", self.path, error)
                self.last_error = error
                if isinstance(exc, NoAuthError):
                    continue  # the ACL refuses: try again with the next snapshot or session
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if self.client.connected:
                    self._wake.set()

    def _end(self) -> None:
        if self._abandoned:  # a greenlet of the parent's, in a forked child: see abandon()
            threading.Event().wait()

    def _encode(self) -> bytes:
        return json.dumps(self._fields, separators=(",", ":"), sort_keys=True).encode()

    def _sync(self) -> None:
        client_id = self.client.client_id
        session = client_id[0] if client_id else None
        data = self._encode()
        if session != self._session:
            self._create(data, session)
        elif data != self._written:
            try:
                self.client.set_async(self.path, data).get(timeout=self.timeout)
                self.writes += 1
            except NoNodeError:
                self._create(data, session)
                return
            self._written = data

    def _create(self, data: bytes, session: int | None) -> None:
        self._ensure_directory()
        try:
            self.client.create_async(self.path, data, acl=self.acl, ephemeral=True).get(
                timeout=self.timeout
            )
        except NodeExistsError:
            stat = self.client.exists_async(self.path).get(timeout=self.timeout)
            if stat is None:  # gone meanwhile
                self._wake.set()
                return
            if stat.ephemeralOwner != session:
                # Left by an earlier session of this process that is not expired yet.
                try:
                    self.client.delete_async(self.path).get(timeout=self.timeout)
                except NoNodeError:
                    pass
                self._wake.set()  # create it in this session on the next round
                return
            self.client.set_async(self.path, data).get(timeout=self.timeout)
        self.creates += 1
        self._session = session
        self._written = data

    def _ensure_directory(self) -> None:
        if self.client.exists_async(self.directory).get(timeout=self.timeout) is not None:
            return
        path = ""
        for part in self.directory.strip("/").split("/"):
            path += "/" + part
            try:
                self.client.create_async(path, b"", acl=self.acl).get(timeout=self.timeout)
            except NodeExistsError:
                pass


# -- reading the fleet ---------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One process of the fleet, as its node says."""

    node: str
    fields: dict[str, Any]
    error: str | None = None  # the node does not hold a readable entry

    def _get(self, key: str) -> Any:
        return self.fields.get(key)

    @property
    def host(self) -> str | None:
        return self._get("host")

    @property
    def pid(self) -> int | None:
        return self._get("pid")

    @property
    def environment(self) -> str | None:
        return self._get("environment")

    @property
    def version(self) -> int | None:
        """The snapshot znode's version this process applied (None: not from ZooKeeper)."""
        return self._get("version")

    @property
    def zxid(self) -> int:
        """The snapshot's ``mzxid`` this process applied (0: none from ZooKeeper yet)."""
        value = self._get("zxid")
        return value if isinstance(value, int) else 0

    @property
    def zxid_hex(self) -> str:
        return f"{self.zxid:#x}"

    @property
    def applied_at(self) -> float | None:
        return self._get("applied_at")

    @property
    def library(self) -> str | None:
        return self._get("library")

    def applied_seconds_ago(self, now: float | None = None) -> float | None:
        at = self.applied_at
        if not isinstance(at, (int, float)):
            return None
        return max(0.0, (time.time() if now is None else now) - at)

    def as_json(self, report: FleetReport) -> dict[str, Any]:
        return {
            "node": self.node,
            **self.fields,
            "state": report.state_of(self),
            "applied_seconds_ago": _round(self.applied_seconds_ago(report.read_at)),
            **({"error": self.error} if self.error else {}),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True)
class FleetReport:
    """The fleet as read at ``read_at`` (wall clock), and the snapshot in ZooKeeper then."""

    members: tuple[Member, ...]
    snapshot_zxid: int | None  # None: there is no snapshot znode
    snapshot_version: int | None
    read_at: float = field(default_factory=time.time)
    read_seconds: float = 0.0

    @property
    def snapshot_zxid_hex(self) -> str | None:
        return f"{self.snapshot_zxid:#x}" if self.snapshot_zxid is not None else None

    def is_current(self, member: Member) -> bool:
        return self.snapshot_zxid is None or member.zxid >= self.snapshot_zxid

    def state_of(self, member: Member) -> str:
        if member.error:
            return "unreadable"
        return "current" if self.is_current(member) else "behind"

    @property
    def current(self) -> list[Member]:
        return [m for m in self.members if not m.error and self.is_current(m)]

    @property
    def laggards(self) -> list[Member]:
        """Processes whose applied snapshot is older than the one in ZooKeeper."""
        return [m for m in self.members if not m.error and not self.is_current(m)]

    @property
    def total(self) -> int:
        return len(self.members)


def _decode_entry(node: str, data: bytes) -> Member:
    if len(data) > MAX_ENTRY_BYTES:
        return Member(node, {}, error=f"entry larger than {MAX_ENTRY_BYTES} bytes")
    try:
        fields = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        return Member(node, {}, error=f"not valid JSON: {exc}")
    if not isinstance(fields, dict):
        return Member(node, {}, error="not a JSON object")
    return Member(node, fields)


def read_fleet(requests: Requests, root: str, snapshot_path: str) -> FleetReport:
    """Every process's entry and the snapshot's ``mzxid``: one ``get_children`` and one
    ``exists``, then one ``get`` per process, all sent before any answer is awaited.

    Raises :class:`~django_zkflags.exceptions.ZooKeeperUnavailable` at once when the
    client is not connected (a page must not wait for a connection), or when an answer
    does not come within the requests' timeout.
    """
    started = time.monotonic()
    client = requests.client
    if not client.connected:
        raise ZooKeeperUnavailable(f"ZooKeeper is unreachable ({requests.url.hosts})")
    directory = fleet_path(root)
    children_async = client.get_children_async(directory)
    snapshot_async = client.exists_async(snapshot_path)
    try:
        children = requests.result(children_async)
    except NoNodeError:
        children = []
    pending = [(name, client.get_async(f"{directory}/{name}")) for name in sorted(children)]
    stat = requests.result(snapshot_async)
    members = []
    for name, async_result in pending:
        try:
            data, _ = requests.result(async_result)
        except NoNodeError:
            continue  # the process ended meanwhile
        members.append(_decode_entry(name, data or b""))
    members.sort(key=lambda m: (str(m.host or ""), m.pid or 0, m.node))
    return FleetReport(
        tuple(members),
        snapshot_zxid=stat.mzxid if stat is not None else None,
        snapshot_version=stat.version if stat is not None else None,
        read_seconds=time.monotonic() - started,
    )
