"""The process's one ZooKeeper client and one snapshot watch, and their lifecycle.

Started by ``AppConfig.ready`` (see :mod:`django_zkflags.apps`), started again in a forked
child, closed with a bound when the interpreter exits, and re-pointed when ``ZKFLAGS_URL`` or
``ZKFLAGS_PASSWORD`` changes under ``override_settings``. Data flows one way: the watch
hands snapshot bytes to :meth:`FlagRuntime._on_snapshot`, which compiles them and publishes
to the cache, then tells this process's fleet entry (:class:`~django_zkflags.fleet.FleetMember`,
written off the watch's thread) what it now serves.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from kazoo.client import KazooState
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import ZnodeStat

from . import conf
from .cache import store
from .client import (
    UNAVAILABLE_ERRORS,
    Paths,
    Requests,
    acl_for,
    gevent_patched,
    make_client,
)
from .diskcopy import BackgroundSaver, SnapshotFile
from .fleet import FleetMember, FleetReport, identity, read_fleet
from .history_reset import HistoryReset
from .kazoo_compat import abandon_in_forked_child, forget_exit_hook
from .reader import TreeReader
from .snapshot import (
    EMPTY,
    VIEW_FILE_MAGIC,
    CorruptSnapshot,
    Head,
    Snapshot,
    compile_entries,
    decode_view,
    decode_view_file,
    encode_entries,
    encode_view_file,
    resolve_environment,
)
from .view import AppliedView, Fetched
from .watcher import NodeWatch, ReadAgain
from .writer import FlagWriter, ViewCheck

log = logging.getLogger("django_zkflags")


class FlagRuntime:
    """The process's client, its watch on the snapshot znode, and the disk copy."""

    def __init__(self, url: conf.ZooKeeperURL | None = None) -> None:
        self.url = url or conf.get_url()
        self.paths = Paths(self.url.root)
        self.client = make_client(
            self.url,
            session_timeout=float(conf.get("SESSION_TIMEOUT")),
            reconnect_max_delay=float(conf.get("RECONNECT_MAX_DELAY")),
        )
        path = conf.snapshot_file_path(self.url)
        own_directory = conf.get("SNAPSHOT_FILE") == "default"
        self.snapshot_file = SnapshotFile(path, own_directory) if path else None
        self.saver = BackgroundSaver(self.snapshot_file) if self.snapshot_file else None
        self.watch: NodeWatch | None = None
        self.fleet: FleetMember | None = None
        self.history_reset = HistoryReset(self.client, float(conf.get("RESET_HISTORY_AFTER")))
        self.loaded = threading.Event()  # set once a snapshot came from ZooKeeper
        self.last_error: str | None = None
        self.pid = os.getpid()
        self.started_at = time.time()
        # The snapshot znode's version last applied from ZooKeeper, and when (wall clock).
        self.applied_version: int | None = None
        self.applied_at: float | None = None
        # The shards of a sharded view applied (docs/design.md), and what changes cost.
        self.view = AppliedView()
        self.applied_changes = 0
        self.shards_read = 0  # shard znodes read since start (a change reads what it moved)
        self.apply_ms: deque[float] = deque(maxlen=APPLY_TIMINGS_KEPT)
        self.read_ms: deque[float] = deque(maxlen=APPLY_TIMINGS_KEPT)
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self) -> None:
        if not self._started:
            self._started = True
            self.client.start_async()  # never blocks; kazoo keeps retrying in the background
            self.history_reset.start()
            # kazoo just registered its own exit hook; ours must run before it (LIFO).
            atexit.unregister(_shutdown)
            atexit.register(_shutdown)

    def start_watching(self) -> None:
        if self.watch is not None:
            return
        if store.base.source == "empty":
            self.load_file()
        self.connect()
        if conf.get("FLEET"):
            # Before the watch: no snapshot it applies can be missed by the fleet entry.
            self.fleet = FleetMember(
                self.client,
                self.url.root,
                acl_for(self.url),
                {**identity(conf.hostname(), self.started_at), **self._fleet_fields()},
                timeout=float(conf.get("SESSION_TIMEOUT")),
            )
            self.fleet.start()
        self.watch = NodeWatch(
            self.client,
            self.paths.snapshot,
            self._on_snapshot,
            timeout=float(conf.get("SESSION_TIMEOUT")),
            verify_interval=float(conf.get("VERIFY_INTERVAL")),
        )
        self.watch.start()

    def wait_loaded(self, timeout: float) -> bool:
        return self.loaded.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Stop watching and close the session, never taking much more than ``timeout``."""
        if self.watch is not None:
            self.watch.stop(timeout=min(timeout, 0.5))
        if self.fleet is not None:
            self.fleet.stop(timeout=min(timeout, 0.5))  # closing the session drops its node
        if self.saver is not None:
            self.saver.flush(timeout=min(timeout, 0.5))  # the last snapshot applied
        self.history_reset.stop()

        def _stop() -> None:
            try:
                self.client.stop()
                self.client.close()
            except Exception:  # closing a broken client must not raise at exit
                log.debug("Error while closing the ZooKeeper client", exc_info=True)

        closer = threading.Thread(target=_stop, name="zkflags-close", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            forget_exit_hook(self.client)
            log.warning("ZooKeeper client did not close within %.1fs; leaving it", timeout)

    def abandon(self) -> None:
        """Forget this runtime in a forked child without touching the parent's session."""
        abandon_in_forked_child(self.client)
        self.watch = None
        self.saver = None  # its thread stayed in the parent
        if self.fleet is not None:
            self.fleet.abandon()  # the parent's node stays the parent's
            self.fleet = None

    # -- editors' access (services) --------------------------------------------------------

    def requests(self) -> Requests:
        self.connect()
        return Requests(self.client, self.url, float(conf.get("WRITE_TIMEOUT")))

    def reader(self) -> TreeReader:
        return TreeReader(self.requests(), self.paths, max_snapshot_bytes=max_snapshot_bytes())

    def read_fleet(self, timeout: float | None = None) -> FleetReport:
        """Every process's fleet entry (see :func:`django_zkflags.fleet.read_fleet`); raises
        ZooKeeperUnavailable at once while disconnected."""
        self.connect()
        if timeout is None:
            timeout = float(conf.get("WRITE_TIMEOUT"))
        requests = Requests(self.client, self.url, timeout)
        return read_fleet(requests, self.url.root, self.paths.snapshot)

    def writer(
        self,
        check_empty_tree: Callable[[], None] | None = None,
        check: ViewCheck | None = None,
    ) -> FlagWriter:
        return FlagWriter(
            self.requests(),
            self.paths,
            acl_for(self.url),
            max_bytes=int(conf.get("MAX_WRITE_BYTES")),
            max_snapshot_bytes=max_snapshot_bytes(),
            check_empty_tree=check_empty_tree,
            check=check,
        )

    # -- snapshots (the watch's thread) ----------------------------------------------------

    def _compile(self, data: bytes | None, zxid: int, source: str) -> Snapshot:
        """Decode and compile a whole format-1 snapshot for this process's environment.

        Raises CorruptSnapshot (a ValueError) when the bytes are not a snapshot.
        """
        view = decode_view(data, max_snapshot_bytes())
        if isinstance(view, Head):
            raise CorruptSnapshot("a sharded view's head without its shards")
        env, chain = resolve_environment(view["environments"], conf.environment(), conf.hostname())
        base = store.base
        # Rules compiled for another environment chain cannot be reused.
        previous = base.flags if base.chain == chain else None
        with _collector_paused():
            flags, errors = compile_entries(view["flags"], previous=previous, chain=chain)
        _log_errors(errors)
        self.view = AppliedView()  # a sharded view that follows is read whole
        return Snapshot(
            flags,
            zxid=zxid,
            source=source,
            errors=errors,
            environment=env,
            chain=chain,
            environments=view["environments"],
        )

    def _compile_sharded(
        self, head: Head, fetched: dict[int, Fetched], zxid: int, source: str
    ) -> tuple[Snapshot, frozenset[str] | None]:
        """The next snapshot from ``head`` and the shards read for it (those
        ``self.view.needed`` named): only those are decoded and compiled."""
        env, chain = resolve_environment(head.environments, conf.environment(), conf.hostname())
        base = store.base
        whole = not self.view.matches(head, chain)
        with _collector_paused(whole):
            flags, errors, changed = self.view.apply(
                head,
                fetched,
                base.flags,
                chain,
                max_snapshot_bytes(),
                reuse=base.chain == chain,
            )
        if changed is None:
            _log_errors(errors)
        else:
            shown = {*changed, *(f"(shard {k})" for k in fetched)}
            _log_errors({name: why for name, why in errors.items() if name in shown})
        return (
            Snapshot(
                flags,
                zxid=zxid,
                source=source,
                errors=errors,
                environment=env,
                chain=chain,
                environments=head.environments,
            ),
            changed,
        )

    def _on_snapshot(self, data: bytes | None, stat: ZnodeStat | None) -> None:
        if data is None and store.base.source != "empty":
            # The node is gone (deleted by hand, a wiped ensemble): that is not "no flags".
            # Keep serving the last good snapshot, and its disk copy, until one reappears.
            self.last_error = f"the snapshot znode {self.paths.snapshot} is missing"
            log.error(
                "The snapshot znode %s is missing; keeping the last good snapshot (%d flags)",
                self.paths.snapshot,
                len(store.base.flags),
            )
            self.loaded.set()
            return
        started = time.perf_counter()
        read_ms = 0.0
        changed: frozenset[str] | None = None
        try:
            view = decode_view(data, max_snapshot_bytes())
            if isinstance(view, Head):
                assert data is not None and stat is not None
                view, data, stat, fetched, read_ms = self._read_shards(view, data, stat)
                snapshot, changed = self._compile_sharded(view, fetched, stat.mzxid, "zookeeper")
            else:
                snapshot = self._compile(data, stat.mzxid if stat is not None else 0, "zookeeper")
        except ValueError as exc:
            self.last_error = str(exc)
            log.error("Ignoring an unreadable snapshot at %s: %s", self.paths.snapshot, exc)
            if self.fleet is not None:
                self.fleet.applied(error=self.last_error)
            return
        store.publish(snapshot, changed)
        self.apply_ms.append((time.perf_counter() - started) * 1000 - read_ms)
        self.read_ms.append(read_ms)
        self.applied_changes += 1
        self.last_error = None
        self.applied_version = stat.version if stat is not None else None
        self.applied_at = time.time()
        self.loaded.set()
        if self.fleet is not None:
            self.fleet.applied(**self._fleet_fields(snapshot))
        if self.saver is not None:  # coalesced on its thread: a burst is written once
            if isinstance(view, Head):
                head_data, shards = data, dict(self.view.raw)  # as of now: the view moves on
                assert head_data is not None
                self.saver.submit(lambda: encode_view_file(head_data, shards), snapshot.zxid)
            else:
                # No snapshot node yet is "no flags": keep it in a form load_file() accepts.
                saved = data if data is not None else _EMPTY_PAYLOAD
                self.saver.submit(lambda: saved, snapshot.zxid)

    def _read_shards(
        self, head: Head, data: bytes, stat: ZnodeStat
    ) -> tuple[Head, bytes, ZnodeStat, dict[int, Fetched], float]:
        r"""Read the shards ``head`` moved, in one round trip (pipelined ``get``\s).

        A shard newer than the head (a write that landed after the head was read) means
        the head moved too: it is read again, with the shards it moved since, so that a
        change of several shards is never served half applied. A head that did not move
        while a shard is ahead of it is a view written in steps (a rebuild larger than one
        ``multi()``) or by hand: what was read is applied. Returns the head applied, its
        bytes and stat, the shards read, and the milliseconds spent reading.
        """
        started = time.perf_counter()
        timeout = float(conf.get("SESSION_TIMEOUT"))
        fetched: dict[int, tuple[bytes | None, int | None, int]] = {}
        try:
            for _ in range(CATCH_UP_ROUNDS):
                env, chain = resolve_environment(
                    head.environments, conf.environment(), conf.hostname()
                )
                wanted = [
                    k
                    for k in self.view.needed(head, chain)
                    if k not in fetched or fetched[k][1] != head.versions[k]
                ]
                fetched.update(self._get_shards(wanted, timeout))
                self.shards_read += len(wanted)
                newest = max((mzxid for _, _, mzxid in fetched.values()), default=0)
                if newest <= stat.mzxid:
                    break
                again, again_stat = self.client.get_async(self.paths.snapshot).get(timeout=timeout)
                if again_stat.mzxid == stat.mzxid:
                    break
                moved = decode_view(again, max_snapshot_bytes())
                if not isinstance(moved, Head):
                    raise ReadAgain("the snapshot changed format while its shards were read")
                head, data, stat = moved, again, again_stat
        except UNAVAILABLE_ERRORS + (NoNodeError,) as exc:
            raise ReadAgain(f"reading the shards failed: {type(exc).__name__}") from exc
        shards = {k: (found[0], found[1]) for k, found in fetched.items() if k in head.versions}
        return head, data, stat, shards, (time.perf_counter() - started) * 1000

    def _get_shards(
        self, indices: list[int], timeout: float
    ) -> dict[int, tuple[bytes | None, int | None, int]]:
        """Shards by index: bytes, version and mzxid (None, None, 0 when missing)."""
        pending = [(k, self.client.get_async(self.paths.shard(k))) for k in indices]
        found: dict[int, tuple[bytes | None, int | None, int]] = {}
        for k, result in pending:
            try:
                shard_data, shard_stat = result.get(timeout=timeout)
            except NoNodeError:
                found[k] = (None, None, 0)
                continue
            found[k] = (shard_data, shard_stat.version, shard_stat.mzxid)
        return found

    def _fleet_fields(self, snapshot: Snapshot | None = None) -> dict[str, Any]:
        """What this process serves, for its fleet entry (a few attribute reads)."""
        snapshot = store.base if snapshot is None else snapshot
        from_zookeeper = snapshot.source == "zookeeper"
        return {
            "environment": snapshot.environment,
            "version": self.applied_version if from_zookeeper else None,
            "zxid": snapshot.zxid,
            "source": snapshot.source,
            "flags": len(snapshot.flags),
            "invalid": len(snapshot.errors),
            "applied_at": round(self.applied_at, 3) if self.applied_at is not None else None,
            "error": self.last_error,
        }

    def load_file(self) -> bool:
        """Serve the last-known snapshot from disk until ZooKeeper answers."""
        if self.snapshot_file is None:
            return False
        found = self.snapshot_file.load(max_snapshot_bytes())
        if found is None:
            return False
        data, zxid = found
        try:
            if data.startswith(VIEW_FILE_MAGIC):
                head_data, shards = decode_view_file(data)
                head = decode_view(head_data, max_snapshot_bytes())
                if not isinstance(head, Head):
                    raise CorruptSnapshot("the file's head is not a sharded view's")
                fetched: dict[int, Fetched] = {
                    k: (shard, head.versions.get(k)) for k, shard in shards.items()
                }
                self.view = AppliedView()
                snapshot, _ = self._compile_sharded(head, fetched, zxid, "file")
                # Versions on disk may be older than ZooKeeper's: read every shard again
                # once it answers (the rules compiled here are reused where they still hold).
                self.view = AppliedView()
            else:
                snapshot = self._compile(data, zxid, "file")
        except ValueError as exc:
            log.warning("Ignoring the snapshot file %s: %s", self.snapshot_file.path, exc)
            return False
        store.publish(snapshot)
        log.debug(  # start() warns if ZooKeeper does not answer within STARTUP_TIMEOUT
            "Serving %d flags from %s until ZooKeeper answers",
            len(snapshot),
            self.snapshot_file.path,
        )
        return True

    def status(self) -> dict[str, Any]:
        snapshot = store.base
        watch = self.watch
        now = time.monotonic()
        if watch is None or (watch.confirmed_at is None and watch.state != KazooState.CONNECTED):
            heard = None  # never heard from ZooKeeper
        elif watch.state == KazooState.CONNECTED:
            heard = 0.0  # kazoo hears from it at least every third of the session timeout
        else:
            heard = round(now - watch.state_changed_at, 3)
        fleet = self.fleet
        return {
            "hosts": self.url.hosts,
            "root": self.url.root,
            "state": self.client.state,
            "session_id": f"{self.client.client_id[0]:#x}" if self.client.client_id else None,
            "connected": self.client.connected,
            "watching": watch is not None and watch.alive,
            "reads": watch.reads if watch else 0,
            "flags": len(snapshot.flags),
            "zxid": snapshot.zxid,
            # The snapshot znode's version served (None: not applied from ZooKeeper).
            "version": self.applied_version if snapshot.source == "zookeeper" else None,
            "applied_at": self.applied_at,
            "source": snapshot.source,
            "environment": snapshot.environment,
            "environment_chain": list(snapshot.chain),
            "invalid_flags": dict(snapshot.errors),
            "last_error": self.last_error or (watch.last_error if watch else None),
            # How stale this process may be: when it last knew it held the latest snapshot.
            # Seconds since this process last heard from ZooKeeper (0 while connected).
            "last_heard_seconds_ago": heard,
            "confirmed_seconds_ago": (
                round(now - watch.confirmed_at, 3)
                if watch is not None and watch.confirmed_at is not None
                else None
            ),
            "verify_interval": watch.verify_interval if watch else None,
            "missed_changes": watch.missed_changes if watch else 0,
            # What applying a change cost this process (docs/performance.md).
            "apply": {
                "count": self.applied_changes,
                "recent_ms": [round(ms, 3) for ms in self.apply_ms],
                "recent_read_ms": [round(ms, 3) for ms in self.read_ms],
                "shards": len(self.view.versions),
                "shards_read": self.shards_read,
                # Changes applied on the dict of the change before last (free by then), and
                # on a copy of the current one (something still held the old one).
                "dicts_reused": self.view.reused,
                "dicts_copied": self.view.copied,
            },
            "history_resets": self.history_reset.resets,
            "snapshot_file": self.snapshot_file.path if self.snapshot_file else None,
            "pid": self.pid,
            "fleet_node": fleet.path if fleet is not None else None,
        }


_EMPTY_PAYLOAD = encode_entries({})
#: Apply timings kept for ``status()["apply"]``.
APPLY_TIMINGS_KEPT = 1000
#: Times the head is read again while shards turn out newer than it (writes landing while
#: a process catches up); each round is one round trip.
CATCH_UP_ROUNDS = 10


@contextmanager
def _collector_paused(pause: bool = True) -> Iterator[None]:
    """No cyclic GC while a whole view is compiled: the 100,000 rules it allocates would
    set off several full collections of the whole heap (about half the cold start at
    100,000 flags). Nothing is lost: the collector runs as usual right after."""
    was_enabled = pause and gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _log_errors(errors: dict[str, str]) -> None:
    for name, error in errors.items():
        # An invalid entry keeps its last good rule; a broken prerequisite turns its
        # flag off (the error says which).
        log.error("Flag %r in the snapshot is not served as written: %s", name, error)


def max_snapshot_bytes() -> int:
    """``ZKFLAGS["MAX_SNAPSHOT_BYTES"]``: the largest snapshot (as JSON) decoded or written."""
    return int(conf.get("MAX_SNAPSHOT_BYTES"))


_lock = threading.RLock()
_runtime: FlagRuntime | None = None


def get_runtime() -> FlagRuntime:
    """The process's runtime, created (not watching) if there is none yet."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = FlagRuntime()
        return _runtime


def start(wait: float | None = None) -> FlagRuntime:
    """Start watching (idempotent); wait up to ``wait`` seconds for the first snapshot."""
    with _lock:
        runtime = get_runtime()
        runtime.start_watching()
    if wait is None:
        wait = float(conf.get("STARTUP_TIMEOUT"))
    if wait > 0 and not runtime.wait_loaded(wait):
        log.warning(
            "No snapshot from ZooKeeper (%s) within %.1fs; serving %s values meanwhile",
            runtime.url.hosts,
            wait,
            store.base.source,
        )
    return runtime


def stop(timeout: float = 2.0) -> None:
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None and runtime.pid == os.getpid():
        runtime.close(timeout)


def status() -> dict[str, Any]:
    with _lock:
        runtime = _runtime
    if runtime is None:
        snapshot = store.base
        return {"watching": False, "flags": len(snapshot.flags), "source": snapshot.source}
    return runtime.status()


def _after_fork_in_child() -> None:
    global _lock, _runtime
    _lock = threading.RLock()  # another thread may have held it at fork time
    store.reset_lock()
    old, _runtime = _runtime, None
    if old is not None:
        was_watching = old.watch is not None
        old.abandon()  # clears old.watch: decide before
        if was_watching:
            # The parent's snapshot stays in use until the child's own watch reads.
            if gevent_patched():
                # gevent resets its hub and thread pool only after the at-fork hooks ran: a
                # greenlet switched to from here hangs in the resolver. Start on the first
                # switch instead (and after the parent's greenlets were killed).
                import gevent

                gevent.spawn(start, 0)
            else:
                start(wait=0)


@receiver(setting_changed, dispatch_uid="zkflags-runtime-settings")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting != "ZKFLAGS" and setting not in conf.URL_SETTINGS:
        return
    conf.clear_caches()  # receivers run in connection order: do not rely on conf's first
    store.set_default_active(bool(conf.get("UNKNOWN_FLAG_ACTIVE")))
    if setting not in conf.URL_SETTINGS:
        with _lock:
            watch = _runtime.watch if _runtime is not None else None
        if watch is not None:
            watch.reload()  # the environment may have changed: compile again
        return
    with _lock:
        watching = _runtime is not None and _runtime.watch is not None
    stop()
    store.publish(EMPTY)  # flags of the old location must not leak into the new one
    if watching:
        start(wait=float(conf.get("STARTUP_TIMEOUT")))


def _shutdown() -> None:
    stop(timeout=1.0)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown)
