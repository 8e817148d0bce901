"""The steward: the one process per ZooKeeper root that does what must happen once across
the whole fleet (see docs/steward.md).

Any number of processes may run one (``manage.py zkflags steward``, or inside ordinary
processes with ``ZKFLAGS["STEWARD"]``); kazoo's ``Lock`` recipe under ``<root>/steward``
elects the one that acts, the others wait their turn. The acting steward

* **runs scheduled changes** (:mod:`django_zkflags.schedules`) at their time, each through
  :func:`django_zkflags.services.save_flag` with its schedule znode consumed in the same
  ``multi()`` (:meth:`~django_zkflags.schedules.ScheduleStore.consume`): a change and the
  end of its schedule are one transaction, so a schedule runs once, whichever steward
  dies or races. A flag that moved since the schedule was set makes it refuse (the
  schedule is kept, with the reason), unless the schedule says ``force``;
* **heals hand edits**: it alone watches the flag znodes (a
  :class:`~django_zkflags.treewatch.TreeWatch`, 1 + N watches) and the environments
  znode, and when one was created, changed or deleted by another client it rebuilds the
  snapshot from them (:func:`django_zkflags.services.heal_hand_edits`, audited with
  source "zookeeper"). Serving processes keep their one watch on the snapshot.

The lock is not what makes a schedule run once (a steward cut off from ZooKeeper may act a
moment after another was elected): the versioned ``multi()`` is. The lock keeps the work in
one place. kazoo's callbacks only set events; one thread of the steward's own contends,
reads and writes, as :class:`~django_zkflags.watcher.NodeWatch` does:

* SUSPENDED: it stops acting until the connection is back (the lock may be gone);
* back in the same session: it carries on (its lock node is still there);
* LOST (or its lock node deleted by someone): it stops, and contends again.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import CancelledError, NodeExistsError, NoNodeError
from kazoo.recipe.lock import Lock

from . import conf, runtime, services
from .client import Requests, acl_for
from .exceptions import FlagConflict
from .rules import FlagRule, InvalidFlag
from .schedules import (
    RUNNING,
    Schedule,
    ScheduleStore,
    describe_lateness,
    late_seconds,
    validate_change,
)
from .snapshot import CorruptSnapshot
from .treewatch import TreeWatch
from .watcher import NodeWatch
from .writer import AlsoOpFailed

log = logging.getLogger("django_zkflags.steward")

STEWARD_DIR = "steward"


def lock_path(root: str) -> str:
    return f"{root}/{STEWARD_DIR}"


def identity() -> str:
    """How a steward names itself in the election: ``host:pid``."""
    return f"{conf.hostname()}:{os.getpid()}"


class _WithAcl:
    """The client as kazoo's ``Lock`` sees it: the contender nodes it creates carry the
    app's ACL (ACLs are not inherited; kazoo's recipe passes none)."""

    def __init__(self, client: KazooClient, acl: list[Any]) -> None:
        self._client = client
        self._acl = acl

    def create(self, path: str, value: bytes = b"", acl: Any = None, **kwargs: Any) -> Any:
        return self._client.create(path, value, acl=acl or self._acl, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class StewardStatus:
    """What a steward did since it started (read by the command and by tests)."""

    identifier: str
    acting: bool = False
    acting_since: float | None = None  # wall clock
    terms: int = 0  # how many times it was elected
    executed: list[str] = field(default_factory=list)  # schedule ids it ran
    refused: list[str] = field(default_factory=list)
    heals: int = 0  # snapshot rebuilds after hand edits
    invalid: dict[str, str] = field(default_factory=dict)  # flag znodes holding garbage
    last_error: str | None = None


class Steward:
    """Contend for ``<root>/steward`` on ``client``; while elected, run the schedules and
    heal hand edits. Changes go through :mod:`django_zkflags.services` (the process's
    runtime); ``client`` holds the election and the watches."""

    #: Seconds between full passes over the schedules (and change records) with no event.
    RESCAN_INTERVAL = 30.0

    def __init__(
        self,
        client: KazooClient,
        root: str,
        acl: list[Any],
        *,
        identifier: str | None = None,
        timeout: float = 10.0,
        rescan_interval: float | None = None,
    ) -> None:
        self.client = client
        self.root = root.rstrip("/")
        self.acl = acl
        self.timeout = timeout
        self.rescan_interval = rescan_interval or self.RESCAN_INTERVAL
        self.status = StewardStatus(identifier or identity())
        self.lock_path = lock_path(self.root)
        self._wake = threading.Event()
        self._stopping = False
        self._lost = False  # the session that won the election is gone
        self._heal_all = True
        self._flags_moved: set[str] = set()
        self._moved_lock = threading.Lock()  # _flags_moved: the TreeWatch's thread and ours
        self._schedules_moved = True
        self._lock: Any = None
        self._thread = threading.Thread(target=self._run, name="zkflags-steward", daemon=True)
        self._reported: dict[str, str] = {}  # invalid flag znodes logged (once each)
        self._reported_schedules: dict[str, str] = {}  # invalid schedule znodes logged

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.client.add_listener(self._on_state)
        self._wake.set()
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop acting and leave the election (the next contender takes over at once)."""
        self._stopping = True
        self.client.remove_listener(self._on_state)
        lock = self._lock
        if lock is not None:
            lock.cancel()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def abandon(self) -> None:
        """In a forked child: never touch the parent's lock node or session."""
        self._stopping = True

    @property
    def acting(self) -> bool:
        return self.status.acting

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- kazoo's threads: only flag the work --------------------------------------------------

    def _on_state(self, state: str) -> None:
        if state == KazooState.LOST:
            self._lost = True
        self._wake.set()

    def _on_flags(self, names: set[str]) -> None:  # the TreeWatch's thread
        with self._moved_lock:
            self._flags_moved |= names
        self._wake.set()

    def _on_environments(self, data: bytes | None, stat: Any) -> None:  # NodeWatch's thread
        self._heal_all = True
        self._wake.set()

    def _on_schedules(self, names: set[str]) -> None:
        self._schedules_moved = True
        self._wake.set()

    def _on_lock_node(self, event: Any) -> None:
        self._wake.set()

    # -- the election --------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            if not self.client.connected:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._lost = False
            lock = Lock(_WithAcl(self.client, self.acl), self.lock_path, self.status.identifier)
            self._lock = lock
            try:
                self._ensure_directory(self.lock_path)
                if self._stopping:
                    return
                acquired = lock.acquire()
            except CancelledError:
                return
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Steward election failed (%s); trying again", self.status.last_error)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if not acquired:
                continue
            self._lost = False  # a session lost while waiting: kazoo's recipe made a new node
            client_id = self.client.client_id
            session = client_id[0] if client_id else None
            node = f"{self.lock_path}/{lock.node}"
            try:
                self._act(session, node)
            except Exception:
                log.exception("The steward failed while acting; leaving the election")
                time.sleep(1.0)  # then contend again (behind the others)
            finally:
                self._resign(lock, node, session)

    def _resign(self, lock: Any, node: str, session: Any) -> None:
        was_acting = self.status.acting
        self.status.acting = False
        self.status.acting_since = None
        client_id = self.client.client_id
        if self.client.connected and client_id and client_id[0] == session:
            with contextlib.suppress(Exception):  # gone with the session otherwise
                self.client.delete_async(node).get(timeout=self.timeout)
        lock.is_acquired = False
        if was_acting:
            log.warning("Steward %s stopped acting for %s", self.status.identifier, self.root)

    def _may_act(self, session: Any, node: str) -> bool:
        """Still elected? The same session, and the lock node still there (checked with
        one ``exists``, which also re-arms a watch on it)."""
        if self._stopping or self._lost:
            return False
        client_id = self.client.client_id
        if not client_id or client_id[0] != session:
            return False
        if not self.client.connected:
            return True  # SUSPENDED: wait for the same session (nothing is done meanwhile)
        try:
            stat = self.client.exists_async(node, watch=self._on_lock_node).get(
                timeout=self.timeout
            )
        except Exception:
            return True  # cannot tell now: the next round asks again
        if stat is None or stat.ephemeralOwner != session:
            log.warning("The steward's lock node %s is gone: no longer acting", node)
            return False
        return True

    # -- acting ----------------------------------------------------------------------------

    def _act(self, session: Any, node: str) -> None:
        self.status.acting = True
        self.status.acting_since = time.time()
        self.status.terms += 1
        log.warning(
            "Steward %s acting for %s (session %#x)", self.status.identifier, self.root, session
        )
        rt = runtime.get_runtime()
        store = ScheduleStore(Requests(self.client, rt.url, self.timeout), self.root, self.acl)
        store.ensure_layout()
        paths = rt.paths
        watches: list[Any] = [
            TreeWatch(self.client, paths.flags, self._on_flags, name="zkflags-steward-flags"),
            TreeWatch(
                self.client,
                store.schedules_path,
                self._on_schedules,
                name="zkflags-steward-schedules",
            ),
            NodeWatch(
                self.client,
                paths.environments,
                self._on_environments,
                name="zkflags-steward-environments",
                timeout=self.timeout,
            ),
        ]
        self._heal_all = True  # whatever was edited while no steward ran
        self._schedules_moved = True
        for watch in watches:
            watch.start()
        next_due: datetime | None = None
        next_rescan = time.monotonic()
        try:
            while self._may_act(session, node):
                if not self.client.connected:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                self._wake.clear()
                self._heal_if_needed()
                now = datetime.now(timezone.utc)
                rescan = time.monotonic() >= next_rescan
                if self._schedules_moved or rescan or (next_due is not None and next_due <= now):
                    self._schedules_moved = False
                    next_due = self._run_schedules(store)
                if rescan:
                    next_rescan = time.monotonic() + self.rescan_interval
                    self._settle()
                wait = next_rescan - time.monotonic()
                if next_due is not None:
                    wait = min(wait, (next_due - datetime.now(timezone.utc)).total_seconds())
                self._wake.wait(max(0.0, wait))
        finally:
            for watch in watches:
                watch.stop(timeout=0.5)
            _close_database_connections()

    # -- hand edits ---------------------------------------------------------------------------

    def _heal_if_needed(self) -> None:
        heal_all, self._heal_all = self._heal_all, False
        with self._moved_lock:
            names, self._flags_moved = self._flags_moved, set()
        try:
            if not heal_all and not (names and self._drifted(names)):
                return
            healed = services.heal_hand_edits()
        except Exception as exc:
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.error("Healing hand edits under %s failed: %s", self.root, self.status.last_error)
            self._heal_all = True
            self._wake_later(1.0)
            return
        finally:
            _close_database_connections()
        self._report_invalid(healed.invalid)
        if healed.rebuilt:
            self.status.heals += 1
        for change in healed.changes:
            log.warning(
                "Hand edit healed: %s %s in ZooKeeper (version %s); the snapshot was rebuilt "
                "and every process serves it",
                change.flag_name,
                change.action,
                change.zk_version,
            )

    def _drifted(self, names: Iterable[str]) -> bool:
        """Do the flag znodes ``names`` hold what the snapshot does not? The znodes are read
        before the snapshot: a write through the services after those reads moves both,
        and a hand edit after them fires the watch again."""
        reader = runtime.get_runtime().reader()
        stored = {}
        for name in sorted(names):
            try:
                stored[name] = reader.flag(name)
            except InvalidFlag as exc:  # a child whose name is no flag name
                self._report_invalid({name[:200]: str(exc)})
        try:
            entries = reader.snapshot().flags
        except CorruptSnapshot:
            return True
        invalid = {}
        for name, flag in stored.items():
            entry = entries.get(name)
            if flag.error is not None:
                invalid[name] = flag.error
                continue
            if flag.version is None:
                if entry is not None:
                    return True
                continue
            if entry is None or entry.get("version") != flag.version:
                return True
            if {k: v for k, v in entry.items() if k != "version"} != flag.document():
                return True
        self._report_invalid(invalid, merge=True)
        return False

    def _report_invalid(self, invalid: dict[str, str], merge: bool = False) -> None:
        """Log each flag znode holding garbage once (until it changes)."""
        current = {**self.status.invalid, **invalid} if merge else dict(invalid)
        for name, error in sorted(current.items()):
            if self._reported.get(name) != error:
                log.error(
                    "Flag znode %s holds no valid flag (%s): every process keeps its last "
                    "good rule. Fix it in the admin or with 'zkflags set'.",
                    name,
                    error,
                )
        self._reported = {k: v for k, v in self._reported.items() if k in current}
        self._reported.update(current)
        self.status.invalid = current

    # -- schedules -----------------------------------------------------------------------------

    def _run_schedules(self, store: ScheduleStore) -> datetime | None:
        """Run every due schedule (oldest first); return when the next one is due."""
        try:
            schedules, errors = store.schedules()
        except Exception as exc:
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("Reading the schedules failed (%s); trying again", exc)
            self._schedules_moved = True
            self._wake_later(1.0)
            return None
        for sid, error in sorted(errors.items()):
            if self._reported_schedules.get(sid) != error:
                self._reported_schedules[sid] = error
                log.error("Schedule znode %s holds no schedule (%s); left alone", sid, error)
        now = datetime.now(timezone.utc)
        for schedule in schedules:
            if not schedule.due(now) or not self._may_act_now():
                continue
            try:
                self._execute(store, schedule, schedules)
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Schedule %s not run now (%s); trying again", schedule.id, exc)
                self._schedules_moved = True
                self._wake_later(1.0)
                continue
            finally:
                _close_database_connections()
            # One at a time: this one is gone or refused, and a rollout step may have
            # re-timed the next ones. Read them again at once.
            self._schedules_moved = True
            return now
        upcoming = [s.at for s in schedules if s.pending and not s.due(now)]
        return min(upcoming) if upcoming else None

    def _may_act_now(self) -> bool:
        return not self._stopping and not self._lost and self.client.connected

    def _execute(self, store: ScheduleStore, schedule: Schedule, others: list[Schedule]) -> None:
        now = datetime.now(timezone.utc)
        rollout = None
        if schedule.rollout is not None:
            rollout = store.rollout(schedule.rollout)
            if (
                rollout is None
                or rollout.state != RUNNING
                or rollout.schedules.get(schedule.step or 0) != schedule.id
            ):
                state = "gone" if rollout is None else rollout.state
                self._refuse(store, schedule, f"its rollout is {state}", now)
                return
        stored = services.read_flag(schedule.flag)
        if not schedule.force and stored.version != schedule.expected_version:
            self._refuse(store, schedule, moved_reason(schedule, stored.version), now)
            return
        doc = stored.document()
        if doc is None:
            doc = _row_document(schedule.flag) if stored.exists else None
            doc = doc or FlagRule(schedule.flag).to_document()
        try:
            rule = validate_change(schedule.flag, doc, schedule.change)
        except InvalidFlag as exc:
            self._refuse(store, schedule, f"the change is not valid now: {exc}", now)
            return
        expected = stored.version if schedule.force else schedule.expected_version
        also = store.consume(schedule, rollout, others, now)
        try:
            change = services.save_flag(
                rule,
                expected_version=expected,
                actor=_actor(schedule),
                source="schedule",
                also=also,
                scheduled_for=schedule.at,
            )
        except AlsoOpFailed:
            log.info(
                "Schedule %s moved meanwhile (cancelled, paused, or run by another steward); "
                "nothing was written",
                schedule.id,
            )
            return
        except FlagConflict:
            log.info(
                "Flag %s moved while schedule %s ran; looking again", schedule.flag, schedule.id
            )
            return
        self.status.executed.append(schedule.id)
        late = late_seconds(schedule.at, datetime.now(timezone.utc))
        log.warning(
            "Schedule %s ran: %s %s, set by %s; now version %s (%s)",
            schedule.id,
            schedule.flag,
            schedule.describe(),
            schedule.username or "-",
            change.zk_version if change is not None else expected,
            describe_lateness(late),
        )

    def _refuse(self, store: ScheduleStore, schedule: Schedule, reason: str, now: datetime) -> None:
        if store.refuse(schedule, reason, now):
            self.status.refused.append(schedule.id)
            log.warning(
                "Schedule %s refused (%s %s, set by %s): %s. It is kept, with the reason, "
                "until someone cancels it ('zkflags schedule --cancel %s').",
                schedule.id,
                schedule.flag,
                schedule.describe(),
                schedule.username or "-",
                reason,
                schedule.id,
            )

    def _settle(self) -> None:
        try:
            services.settle_changes()
        except Exception as exc:
            log.info("Settling change records failed (%s); the next pass tries again", exc)
        finally:
            _close_database_connections()

    # -- plumbing ---------------------------------------------------------------------------

    def _wake_later(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._wake.set)
        timer.daemon = True
        timer.start()

    def _ensure_directory(self, directory: str) -> None:
        if self.client.exists_async(directory).get(timeout=self.timeout) is not None:
            return
        path = ""
        for part in directory.strip("/").split("/"):
            path += "/" + part
            try:
                self.client.create_async(path, b"", acl=self.acl).get(timeout=self.timeout)
            except NodeExistsError:
                pass


def moved_reason(schedule: Schedule, version: int | None) -> str:
    """Why a schedule is refused: the flag moved since it was set (and who moved it)."""
    from .models import FlagChange

    then = (
        "did not exist"
        if schedule.expected_version is None
        else (f"was at version {schedule.expected_version}")
    )
    now = "is deleted" if version is None else f"is at version {version}"
    last = FlagChange.objects.filter(flag_name=schedule.flag).order_by("-at", "-pk").first()
    by = ""
    if last is not None and last.zk_version == version and last.source != "schedule":
        by = f" ({last.action} by {last.username or 'the system'} from {last.source or '-'})"
    elif version is not None:
        by = " (by another client, no audit row yet)"
    return (
        f"flag {schedule.flag} moved since the schedule was set: it {then}, it now {now}{by}; "
        "not overwritten (schedule it again, or with --force)"
    )


def _actor(schedule: Schedule) -> Any:
    """Who set the schedule: their user when the database still has it, else the name."""
    if schedule.user_id is not None:
        from django.contrib.auth import get_user_model

        with contextlib.suppress(Exception):
            user = get_user_model().objects.filter(pk=schedule.user_id).first()
            if user is not None:
                return user
    return schedule.username or None


def _row_document(name: str) -> dict[str, Any] | None:
    from .models import Flag

    row = Flag.objects.filter(name=name).first()
    if row is None:
        return None
    try:
        return row.to_rule().to_document()
    except InvalidFlag:
        return None


def _close_database_connections() -> None:
    """The steward's thread opens database connections; close them between rounds (a
    connection dropped by the server while idle must not fail the next round)."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            connection.close()


def contenders(requests: Requests, root: str) -> list[str]:
    """The stewards of ``root`` in the election's order: the first one acts."""
    directory = lock_path(root)
    client = requests.client
    try:
        children = requests.result(client.get_children_async(directory))
    except NoNodeError:
        return []
    ordered = sorted(
        (child for child in children if "__lock__" in child),
        key=lambda child: child.rsplit("__lock__", 1)[1],
    )
    names = []
    for child in ordered:
        try:
            data, _stat = requests.result(client.get_async(f"{directory}/{child}"))
        except NoNodeError:
            continue
        names.append((data or b"").decode("utf-8", "replace"))
    return names


# -- a steward inside this process (ZKFLAGS["STEWARD"]) -------------------------------------

_lock = threading.Lock()
_steward: Steward | None = None


def start_in_process() -> Steward:
    """Run a steward in this process, on the runtime's client (idempotent)."""
    global _steward
    with _lock:
        if _steward is None or not _steward.alive:
            rt = runtime.get_runtime()
            rt.connect()
            _steward = Steward(
                rt.client,
                rt.url.root,
                acl_for(rt.url),
                timeout=float(conf.get("SESSION_TIMEOUT")),
            )
            _steward.start()
            # After the runtime's exit hook was registered: runs before it (LIFO).
            atexit.unregister(stop_in_process)
            atexit.register(stop_in_process)
        return _steward


def stop_in_process(timeout: float = 1.0) -> None:
    global _steward
    with _lock:
        steward, _steward = _steward, None
    if steward is not None:
        steward.stop(timeout)


def in_process() -> Steward | None:
    return _steward


def _after_fork_in_child() -> None:
    global _lock, _steward
    _lock = threading.Lock()
    if _steward is not None:
        _steward.abandon()  # the parent's lock node stays the parent's
    _steward = None


os.register_at_fork(after_in_child=_after_fork_in_child)
