"""One ZooKeeper connection and one snapshot watch per process, and their lifecycle.

Started by ``AppConfig.ready`` (see :func:`autostart`), restarted in a forked child,
closed with a bound when the interpreter exits, and re-pointed when ``ZKFLAGS_URL``
changes under ``override_settings``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import threading
from typing import Any

from kazoo.protocol.states import ZnodeStat

from . import conf
from .cache import store
from .snapshot import (
    EMPTY,
    Snapshot,
    compile_entries,
    decode_payload,
    encode_entries,
    resolve_environment,
)
from .watcher import NodeWatch
from .zk import FlagWriter, Paths, gevent_patched, make_client

log = logging.getLogger("django_zkflags")

FILE_HEADER = b"zkflags-snapshot-file 1 "


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
        self.snapshot_file = conf.snapshot_file_path()
        self.watch: NodeWatch | None = None
        self.loaded = threading.Event()  # set once a snapshot came from ZooKeeper
        self.last_error: str | None = None
        self.pid = os.getpid()
        self._started = False
        self._writer: FlagWriter | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self) -> None:
        if not self._started:
            self._started = True
            self.client.start_async()  # never blocks; kazoo keeps retrying in the background
            # kazoo just registered its own exit hook; ours must run before it (LIFO).
            atexit.unregister(_shutdown)
            atexit.register(_shutdown)

    def start_watching(self) -> None:
        if self.watch is not None:
            return
        if store.base.source == "empty":
            self.load_file()
        self.connect()
        self.watch = NodeWatch(
            self.client,
            self.paths.snapshot,
            self._on_snapshot,
            timeout=float(conf.get("SESSION_TIMEOUT")),
        )
        self.watch.start()

    def wait_loaded(self, timeout: float) -> bool:
        return self.loaded.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Stop watching and close the session, never taking much more than ``timeout``."""
        if self.watch is not None:
            self.watch.stop(timeout=min(timeout, 0.5))

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
            # kazoo registered its handler's stop with atexit; it would wait for the same
            # threads we just gave up on.
            atexit.unregister(self.client.handler.stop)
            log.warning("ZooKeeper client did not close within %.1fs; leaving it", timeout)

    def abandon(self) -> None:
        """Forget this runtime in a forked child without touching the parent's session.

        Threads do not survive fork(), but greenlets do: under gevent the parent's
        connection loop is still scheduled in the child and would read (and ping on) the
        socket it shares with the parent, stealing the parent's replies. Kill it before it
        runs again; it only closes this process's copy of the socket, which leaves the
        parent's connection open.
        """
        atexit.unregister(self.client.handler.stop)
        connection = getattr(self.client, "_connection", None)
        routine = getattr(connection, "_connection_routine", None)
        if routine is not None and hasattr(routine, "kill"):  # a gevent Greenlet
            self.client._stopped.set()  # so that it does not reconnect with our session
            routine.kill(block=False)
        self.watch = None

    # -- writes ----------------------------------------------------------------------------

    def writer(self) -> FlagWriter:
        self.connect()
        if self._writer is None:
            self._writer = FlagWriter(
                self.client,
                self.url,
                timeout=float(conf.get("WRITE_TIMEOUT")),
                max_bytes=int(conf.get("MAX_WRITE_BYTES")),
            )
        return self._writer

    # -- snapshot handling (watch thread) --------------------------------------------------

    def _compile(self, data: bytes | None, zxid: int, source: str) -> Snapshot:
        """Decode and compile snapshot bytes for this process's environment.

        Raises CorruptSnapshot (a ValueError) when the bytes are not a snapshot.
        """
        payload = decode_payload(data)
        env, chain = resolve_environment(
            payload["environments"], conf.environment(), conf.hostname()
        )
        base = store.base
        # Rules compiled for another environment chain cannot be reused.
        previous = base.flags if base.chain == chain else None
        flags, errors = compile_entries(payload["flags"], previous=previous, chain=chain)
        for name, error in errors.items():
            log.error(
                "Flag %r in the snapshot is invalid (%s); keeping its last good value", name, error
            )
        return Snapshot(
            flags, zxid=zxid, source=source, errors=errors, environment=env, chain=chain
        )

    def _on_snapshot(self, data: bytes | None, stat: ZnodeStat | None) -> None:
        zxid = stat.mzxid if stat is not None else 0
        try:
            snapshot = self._compile(data, zxid, "zookeeper")
        except ValueError as exc:
            self.last_error = str(exc)
            log.error("Ignoring an unreadable snapshot at %s: %s", self.paths.snapshot, exc)
            return
        store.publish(snapshot)
        self.last_error = None
        self.loaded.set()
        # No snapshot node yet is "no flags": store it in a form load_file() accepts.
        self._save_file(data if data is not None else encode_entries({}), zxid)

    def _save_file(self, data: bytes, zxid: int) -> None:
        path = self.snapshot_file
        if not path:
            return
        try:
            directory = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=".zkflags-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(FILE_HEADER + str(zxid).encode() + b"\n" + data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)  # atomic: readers see the old or the new file
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("Could not write the snapshot file %s: %s", path, exc)

    def load_file(self) -> bool:
        """Serve the last-known snapshot from disk until ZooKeeper answers."""
        path = self.snapshot_file
        if not path or not os.path.exists(path):
            return False
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
            header, _, data = raw.partition(b"\n")
            if not header.startswith(FILE_HEADER):
                raise ValueError("not a zkflags snapshot file")
            zxid = int(header[len(FILE_HEADER) :])
            snapshot = self._compile(data, zxid, "file")
        except (OSError, ValueError) as exc:
            log.warning("Ignoring the snapshot file %s: %s", path, exc)
            return False
        store.publish(snapshot)
        log.info("Serving %d flags from %s until ZooKeeper answers", len(snapshot), path)
        return True

    def status(self) -> dict[str, Any]:
        snapshot = store.base
        watch = self.watch
        return {
            "hosts": self.url.hosts,
            "root": self.url.root,
            "state": self.client.state,
            "connected": self.client.connected,
            "watching": watch is not None and watch.alive,
            "reads": watch.reads if watch else 0,
            "flags": len(snapshot.flags),
            "zxid": snapshot.zxid,
            "source": snapshot.source,
            "environment": snapshot.environment,
            "environment_chain": list(snapshot.chain),
            "invalid_flags": dict(snapshot.errors),
            "last_error": self.last_error or (watch.last_error if watch else None),
            "snapshot_file": self.snapshot_file,
            "pid": self.pid,
        }


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


def writer() -> FlagWriter:
    return get_runtime().writer()


def status() -> dict[str, Any]:
    with _lock:
        runtime = _runtime
    if runtime is None:
        snapshot = store.base
        return {"watching": False, "flags": len(snapshot.flags), "source": snapshot.source}
    return runtime.status()


def should_autostart(argv: list[str] | None = None) -> bool:
    if not conf.get("AUTOSTART"):
        return False
    argv = sys.argv if argv is None else argv
    program = os.path.basename(argv[0]) if argv else ""
    if program in ("manage.py", "django-admin", "django-admin.py", "__main__.py") and len(argv) > 1:
        command = argv[1]
        if command in conf.get("SKIP_COMMANDS"):
            return False
        # runserver's autoreloader parent only watches files; its child serves.
        if (
            command == "runserver"
            and os.environ.get("RUN_MAIN") != "true"
            and "--noreload" not in argv
        ):
            return False
    return True


def autostart() -> None:
    """Called from AppConfig.ready."""
    store.set_default_active(bool(conf.get("UNKNOWN_FLAG_ACTIVE")))
    if should_autostart():
        start()


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


def _on_settings_changed(setting: str) -> None:
    store.set_default_active(bool(conf.get("UNKNOWN_FLAG_ACTIVE")))
    if setting != "ZKFLAGS_URL":
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
conf.on_change(_on_settings_changed)
atexit.register(_shutdown)
