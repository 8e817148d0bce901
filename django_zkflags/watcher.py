"""The watch recipe: keep one znode's latest data, across reconnects and session expiry.

kazoo's own DataWatch re-reads from its callback thread and retries there while
disconnected, which stalls every other callback and can hang interpreter exit. This recipe
keeps kazoo's callbacks to setting an event; a thread of its own does the reads:

* a watch event, or a (re)connection, marks the node dirty;
* the reader thread reads it (re-arming the one-shot watch in the same call) and hands
  the bytes to ``on_data``; a burst of changes collapses into reads of the latest data;
* after a (re)connection it first ``sync``\\s, so a new session on a lagging follower
  cannot hand back older data; between syncs a read older than the last applied one
  (by ``mzxid``) is ignored;
* every ``verify_interval`` seconds (with jitter, so a fleet does not ask at once) it
  checks the node's ``mzxid`` with one ``exists`` (no watch, no data) and re-reads if it
  moved: ZooKeeper can drop a watch without telling (a change made while an ACL denied
  this client READ), and nothing else would ever notice. :attr:`confirmed_at` is when the
  process last knew it held the latest data.

One server-side watch per process, whatever the number of flags.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import ZnodeStat

log = logging.getLogger("django_zkflags.watcher")

OnData = Callable[[bytes | None, ZnodeStat | None], None]


class ReadAgain(Exception):
    """Raised by ``on_data`` when it could not finish with this data (reading more from
    ZooKeeper failed): the node is read and handed over again after a back-off, even if
    it did not change."""


class NodeWatch:
    """Follow ``path`` on ``client`` and call ``on_data(data, stat)`` on every new value.

    ``on_data(None, None)`` means the node does not exist. ``on_data`` runs on this recipe's
    thread; an exception from it is logged and the watch carries on.
    """

    def __init__(
        self,
        client: KazooClient,
        path: str,
        on_data: OnData,
        *,
        name: str = "zkflags-watch",
        timeout: float = 10.0,
        verify_interval: float = 0.0,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.verify_interval = verify_interval
        self.path = path
        self.on_data = on_data
        self._dirty = threading.Event()
        self._stopping = False
        self._needs_sync = True
        self._last_mzxid = -1
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.reads = 0
        self.state: str = KazooState.LOST
        self.state_changed_at = time.monotonic()
        self.last_error: str | None = None
        self.last_read_at: float | None = None
        self.confirmed_at: float | None = None  # monotonic time the data was last known current
        self.missed_changes = 0  # changes found by verification, not by the watch
        self._next_verify = time.monotonic()

    def start(self) -> None:
        self.client.add_listener(self._on_state)
        self.state = self.client.state
        self._dirty.set()
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping = True
        self.client.remove_listener(self._on_state)
        self._dirty.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def reload(self) -> None:
        """Read and hand over the data again even if it did not change."""
        self._last_mzxid = -1
        self._dirty.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # kazoo's threads: do nothing but flag the work.
    def _on_state(self, state: str) -> None:
        self.state = state
        self.state_changed_at = time.monotonic()
        if state == KazooState.CONNECTED:
            self._needs_sync = True
            self._dirty.set()

    def _on_event(self, event: Any) -> None:
        self._dirty.set()

    def _schedule_verify(self) -> None:
        if self.verify_interval > 0:
            self._next_verify = time.monotonic() + self.verify_interval * random.uniform(0.8, 1.2)

    def _wait(self) -> bool:
        """Wait for work; False when it is time to verify instead."""
        if self.verify_interval <= 0:
            return self._dirty.wait()
        return self._dirty.wait(max(0.0, self._next_verify - time.monotonic()))

    def _run(self) -> None:
        backoff = 0.05
        while True:
            dirty = self._wait()
            if self._stopping:
                return
            if not self.client.connected:
                self._dirty.clear()
                self._schedule_verify()
                continue  # the CONNECTED listener sets dirty again
            try:
                if dirty:
                    self._dirty.clear()
                    self._read_once()
                else:
                    self._verify()
                self._schedule_verify()
                backoff = 0.05
            except Exception as exc:  # a broken read must never end the watch
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Reading %s failed (%s); retrying", self.path, self.last_error)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if self.client.connected:
                    self._dirty.set()

    def _verify(self) -> None:
        """Is what we applied still the latest? One ``exists``: no data, no watch."""
        stat = self.client.exists_async(self.path).get(timeout=self.timeout)
        mzxid = stat.mzxid if stat is not None else 0
        if mzxid == max(self._last_mzxid, 0):
            self.confirmed_at = time.monotonic()
            return
        self.missed_changes += 1
        log.warning(
            "The watch on %s missed a change (applied mzxid %#x, ZooKeeper has %#x); re-reading",
            self.path,
            max(self._last_mzxid, 0),
            mzxid,
        )
        self._dirty.set()

    def _read_once(self) -> None:
        synced = False
        if self._needs_sync:
            self._needs_sync = False
            try:
                self.client.sync_async(self.path).get(timeout=self.timeout)
                synced = True
            except Exception:
                self._needs_sync = True
                raise
        try:
            data, stat = self.client.get_async(self.path, watch=self._on_event).get(
                timeout=self.timeout
            )
        except NoNodeError:
            # Watch for creation; if it appeared between the two calls, read again.
            exists = self.client.exists_async(self.path, watch=self._on_event)
            if exists.get(timeout=self.timeout) is not None:
                self._dirty.set()
                return
            data, stat = None, None
        self.reads += 1
        self.last_read_at = time.monotonic()
        self.confirmed_at = self.last_read_at
        mzxid = stat.mzxid if stat is not None else 0
        if not synced and stat is not None and mzxid < self._last_mzxid:
            return  # older than what we have: a lagging server
        if stat is not None and mzxid == self._last_mzxid:
            return  # nothing new (a reconnect, or a spurious event)
        previous, self._last_mzxid = self._last_mzxid, mzxid
        try:
            self.on_data(data, stat)
            self.last_error = None
        except ReadAgain:
            self._last_mzxid = previous
            raise  # the loop backs off and reads again
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("Handling new data of %s failed; keeping the last good value", self.path)
