"""The recipe for a directory of znodes: know when a child is created, changed or deleted,
across reconnects and session expiry.

kazoo's ``TreeCache`` does this for a whole subtree, but it reads from kazoo's callback
thread, keeps every node's data, and can publish a removed node back with stale data (its
open bug #645). This recipe is one level deep and shaped like
:class:`~django_zkflags.watcher.NodeWatch`: kazoo's callbacks only record *what* moved and
set an event; a thread of its own does the reads:

* a children event marks the directory dirty: ``get_children`` (re-arming that watch)
  finds the children that appeared and those gone;
* a data event on a child marks that child dirty: ``get`` re-arms its watch;
* after a (re)connection it ``sync``\\s, then reads the directory and every child again:
  kazoo forgets one-shot watches when the connection drops, and a change made meanwhile
  sent no event;
* ``on_change(names)`` is called on this thread with the children whose ``mzxid`` moved
  (or that appeared or vanished) since the last call; a burst collapses into one call.
  An exception from it is logged and the recipe carries on.

It keeps one ``mzxid`` per child, not the data: the caller reads what it needs, fresh.
The price is 1 + N server watches for N children, which is why only the steward runs one
(on ``<root>/flags``), never a serving process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import NoNodeError

log = logging.getLogger("django_zkflags.treewatch")

OnChange = Callable[[set[str]], None]


class TreeWatch:
    """Follow the children of ``path`` on ``client``; ``on_change(names)`` on every move."""

    def __init__(
        self,
        client: KazooClient,
        path: str,
        on_change: OnChange,
        *,
        name: str = "zkflags-tree",
        timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.path = path
        self.on_change = on_change
        self.timeout = timeout
        self.known: dict[str, int] = {}  # child -> the mzxid last read
        self.reads = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the two fields below (kazoo's thread vs ours)
        self._dirty_children: set[str] = set()
        self._full = True  # read the directory and every child (start, reconnection)
        self._directory_dirty = True
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.client.add_listener(self._on_state)
        self._wake.set()
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop reading and reporting. The server keeps the watches already set until they
        fire or the session ends (ZooKeeper 3.8 clients cannot remove them through kazoo);
        their events are ignored."""
        self._stopping = True
        self.client.remove_listener(self._on_state)
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- kazoo's threads: record what moved, nothing else ------------------------------------

    def _on_state(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            with self._lock:
                self._full = True
            self._wake.set()

    def _on_directory(self, event: Any) -> None:
        with self._lock:
            self._directory_dirty = True
        self._wake.set()

    def _on_child(self, event: Any) -> None:
        path = getattr(event, "path", "") or ""
        with self._lock:
            if path.startswith(self.path + "/"):
                self._dirty_children.add(path[len(self.path) + 1 :])
            else:
                self._full = True
        self._wake.set()

    # -- this recipe's thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while True:
            self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()
            if not self.client.connected:
                continue  # the CONNECTED listener wakes us again
            with self._lock:
                full, self._full = self._full, False
                directory = self._directory_dirty or full
                self._directory_dirty = False
                dirty, self._dirty_children = self._dirty_children, set()
            try:
                changed = self._read(full, directory, dirty)
                backoff = 0.05
            except Exception as exc:  # a failed read must never end the recipe
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Reading %s failed (%s); retrying", self.path, self.last_error)
                with self._lock:  # read it all again
                    self._full = True
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if self.client.connected:
                    self._wake.set()
                continue
            self.last_error = None
            if changed and not self._stopping:
                try:
                    self.on_change(changed)
                except Exception:
                    log.exception("Handling a change under %s failed", self.path)

    def _read(self, full: bool, directory: bool, dirty: set[str]) -> set[str]:
        """Read what is marked; return the children that moved since the last report."""
        if full:
            self.client.sync_async(self.path).get(timeout=self.timeout)
        known = self.known
        if directory:
            try:
                children = set(
                    self.client.get_children_async(self.path, watch=self._on_directory).get(
                        timeout=self.timeout
                    )
                )
            except NoNodeError:
                # Watch for its creation; if it appeared between the two calls, read again.
                exists = self.client.exists_async(self.path, watch=self._on_directory)
                if exists.get(timeout=self.timeout) is not None:
                    with self._lock:
                        self._directory_dirty = True
                    self._wake.set()
                children = set()
            to_read = children if full else (children - set(known)) | (dirty & children)
            gone = set(known) - children
        else:
            to_read, gone = dirty, set()
        pending = {
            name: self.client.get_async(f"{self.path}/{name}", watch=self._on_child)
            for name in sorted(to_read)
        }
        read: dict[str, int] = {}
        for name, result in pending.items():
            try:
                _data, stat = result.get(timeout=self.timeout)
            except NoNodeError:
                gone.add(name)  # deleted meanwhile (its children event follows)
                continue
            read[name] = stat.mzxid
        self.reads += len(pending)
        changed = {name for name in gone if name in known}
        changed |= {name for name, mzxid in read.items() if known.get(name) != mzxid}
        self.known = {
            **{name: mzxid for name, mzxid in known.items() if name not in gone},
            **read,
        }
        return changed
