"""The recipe for a client whose sessions an ensemble refuses forever.

kazoo sends the last zxid it saw when it (re)connects. A server whose history is shorter
(its data directory was wiped, the ensemble was rebuilt, or the client was pointed at a new
one) closes every such connection ("has seen zxid 0x9b our last zxid is 0x0", kazoo issue
#42), and kazoo retries forever: the process stays SUSPENDED, serving its last snapshot and
unable to write, until it is restarted.

:class:`HistoryReset` waits for ``after`` seconds without a connection, then makes the next
attempt claim it has seen nothing, and again every ``after`` seconds while still
disconnected. Doing that during an ordinary outage is harmless: a server accepts any
client at zxid 0, and :class:`~django_zkflags.watcher.NodeWatch` ``sync``\\s before it reads
on every new connection, so an older follower cannot hand back older data.
"""

from __future__ import annotations

import logging
import threading
import time

from kazoo.client import KazooClient, KazooState

from .kazoo_compat import forget_last_zxid

log = logging.getLogger("django_zkflags")


class HistoryReset:
    def __init__(self, client: KazooClient, after: float) -> None:
        self.client = client
        self.after = after
        self.resets = 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._disconnected_at: float | None = None

    def start(self) -> None:
        if self.after > 0:
            self.client.add_listener(self._on_state)
            if not self.client.connected:
                self._on_state(KazooState.SUSPENDED)

    def stop(self) -> None:
        self.client.remove_listener(self._on_state)
        with self._lock:
            self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # kazoo's thread: only (re)arm or cancel a timer.
    def _on_state(self, state: str) -> None:
        with self._lock:
            if state == KazooState.CONNECTED:
                self._cancel()
                if self._disconnected_at is not None and self.resets:
                    log.warning(
                        "Connected to ZooKeeper again %.1fs after the connection was lost "
                        "(after resetting the client's history)",
                        time.monotonic() - self._disconnected_at,
                    )
                self._disconnected_at = None
                return
            if self._disconnected_at is None:
                self._disconnected_at = time.monotonic()
            if self._timer is None:
                self._arm()

    def _arm(self) -> None:
        self._timer = threading.Timer(self.after, self._fire)
        self._timer.daemon = True
        self._timer.name = "zkflags-history-reset"
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if self.client.connected or self._disconnected_at is None:
                return
            self.resets += 1
            log.warning(
                "No ZooKeeper session for %.0fs (%s). If the ensemble lost its data it refuses "
                "clients that saw newer transactions: connecting as a new client (forgetting "
                "the last seen zxid %#x).",
                time.monotonic() - self._disconnected_at,
                self.client.hosts,
                getattr(self.client, "last_zxid", 0),
            )
            forget_last_zxid(self.client)
            self._arm()
