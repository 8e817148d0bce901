"""The directory recipe (TreeWatch, django_zkflags/treewatch.py) against a real ZooKeeper:
children created, changed and deleted are reported by name, a burst collapses, the
directory may come and go, a failing callback does not end it, and after the session
expires (a new session) it reads everything again and reports what changed meanwhile.
"""

from __future__ import annotations

import threading
import uuid

from django_zkflags.treewatch import TreeWatch

from ..conftest import BOUND, wait_until


class Seen:
    def __init__(self) -> None:
        self.calls: list[set[str]] = []
        self.lock = threading.Lock()
        self.fail = False

    def __call__(self, names: set[str]) -> None:
        with self.lock:
            self.calls.append(set(names))
        if self.fail:
            raise RuntimeError("handler failed")

    def names(self) -> set[str]:
        with self.lock:
            return set().union(*self.calls) if self.calls else set()

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


def test_children_created_changed_and_deleted_are_reported(zk_server, kazoo_clients, direct):
    path = f"/tw-{uuid.uuid4().hex[:12]}"
    seen = Seen()
    watch = TreeWatch(kazoo_clients(zk_server.hosts), path, seen)
    watch.start()
    try:
        direct.create(f"{path}/a", b"1", makepath=True)
        wait_until(lambda: seen.names() == {"a"}, BOUND)
        seen.clear()
        direct.set(f"{path}/a", b"2")
        wait_until(lambda: seen.names() == {"a"}, BOUND)
        seen.clear()
        direct.create(f"{path}/b", b"1")
        direct.delete(f"{path}/a")
        wait_until(lambda: seen.names() == {"a", "b"}, BOUND)
        assert set(watch.known) == {"b"}

        seen.clear()
        seen.fail = True  # a failing callback is logged; the recipe carries on
        for i in range(50):  # a burst: reported, in fewer calls than writes
            direct.set(f"{path}/b", str(i).encode())
        wait_until(lambda: watch.known["b"] == direct.exists(f"{path}/b").mzxid, BOUND)
        assert seen.names() == {"b"} and len(seen.calls) < 50
        seen.fail = False

        # The directory deleted and created again.
        seen.clear()
        direct.delete(path, recursive=True)
        wait_until(lambda: seen.names() == {"b"} and watch.known == {}, BOUND)
        direct.create(f"{path}/c", b"", makepath=True)
        wait_until(lambda: "c" in seen.names(), BOUND)
        assert watch.alive
    finally:
        watch.stop()


def test_a_new_session_reads_everything_and_reports_what_changed_meanwhile(
    zk_server, kazoo_clients, direct
):
    path = f"/tw-{uuid.uuid4().hex[:12]}"
    direct.create(f"{path}/kept", b"", makepath=True)
    direct.create(f"{path}/edited", b"")
    direct.create(f"{path}/removed", b"")
    client = kazoo_clients(zk_server.hosts)
    seen = Seen()
    watch = TreeWatch(client, path, seen)
    watch.start()
    try:
        wait_until(lambda: seen.names() == {"kept", "edited", "removed"}, BOUND)
        seen.clear()
        reads = watch.reads
        client.stop()  # no events reach it now; its session is closed
        direct.set(f"{path}/edited", b"x")
        direct.delete(f"{path}/removed")
        direct.create(f"{path}/added", b"")
        client.start(timeout=15)  # a new session: every child read again
        wait_until(lambda: seen.names() == {"edited", "removed", "added"}, BOUND)
        assert watch.reads >= reads + 3
        assert set(watch.known) == {"kept", "edited", "added"}
        # and the watches are armed again in the new session
        seen.clear()
        direct.set(f"{path}/kept", b"y")
        wait_until(lambda: seen.names() == {"kept"}, BOUND)
    finally:
        watch.stop()
