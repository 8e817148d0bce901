"""A 3-node ZooKeeper ensemble losing its leader, a follower, then its quorum.

While one thread writes a flag continuously (through this process's ``runtime.get_runtime().writer()``,
recording every acknowledged write) and reader threads check flags in a loop:

* reads never raise, and never change while the process is cut off;
* a refused write raises a ``FlagWriteError`` subclass within a bound (no hang);
* writes resume after the election;
* no acknowledged write is lost: once the quorum is back, ZooKeeper (read through another
  client, after ``sync``) holds exactly the last acknowledged write, in the flag znode and
  in the snapshot, and acknowledged versions only ever went up;
* every watching process converges: this one, and a separate OS process
  (``tests/support/flagwatcher.py``).

Run with ``-s`` to see the figures (also in docs/reliability.md).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from django_zkflags import flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.client import Paths, Requests, acl_for
from django_zkflags.conf import parse_url
from django_zkflags.exceptions import FlagConflict, FlagWriteError, ZooKeeperUnavailable
from django_zkflags.reader import read_view
from django_zkflags.rules import FlagRule
from django_zkflags.signals import flag_changed
from django_zkflags.snapshot import EMPTY
from django_zkflags.writer import FlagWriter
from tests.support.children import Child, Children, is_value
from tests.support.zookeeper import DEFAULT_JVM_FLAGS, ZooKeeperEnsemble, ZooKeeperError

from ..conftest import require_zookeeper, served_version, wait_until

pytestmark = pytest.mark.slow

FLAG = "written"
STEADY = "steady"
#: A refused write must end within this: the write timeout (3 s in tests/settings.py) for
#: waiting for a connection, plus a little for a commit cut off mid-way. Catches hangs.
WRITE_BOUND_SLACK = 1.5


# -- fixtures ---------------------------------------------------------------------------------


def _start_ensemble(**kwargs: Any) -> ZooKeeperEnsemble:
    ens = ZooKeeperEnsemble(3, **kwargs)
    try:
        ens.start()
    except (ZooKeeperError, TimeoutError) as exc:
        ens.cleanup()
        require_zookeeper(exc)
    return ens


@pytest.fixture(scope="module")
def ensemble() -> Iterator[ZooKeeperEnsemble]:
    ens = _start_ensemble()  # a default deployment: no read-only mode, global sessions
    yield ens
    ens.cleanup()


def _restore(ens: ZooKeeperEnsemble) -> None:
    down = [i for i, server in enumerate(ens.servers) if not server.is_running]
    if down:
        ens._parallel(lambda s: s.start(30.0, wait=False), down)
    ens.wait_for_quorum(30)


@pytest.fixture
def site(ensemble: ZooKeeperEnsemble, settings: Any, tmp_path: Path) -> Iterator[Site]:
    _restore(ensemble)
    root = f"/ens-{uuid.uuid4().hex[:10]}"
    url = f"zk://{ensemble.hosts}{root}"
    settings.ZKFLAGS_URL = url
    runtime.start(wait=10.0)
    checker = KazooClient(hosts=ensemble.hosts, timeout=10.0)
    checker.start(timeout=10)
    the_site = Site(ensemble, url, root, checker, tmp_path)
    try:
        yield the_site
    finally:
        the_site.shutdown()
        runtime.stop()
        store.publish(EMPTY)
        checker.stop()
        checker.close()
        _restore(ensemble)


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Attempt:
    started: float
    ended: float
    seq: int
    version: int | None = None  # set when acknowledged
    error: BaseException | None = None

    @property
    def duration(self) -> float:
        return self.ended - self.started


class Writer(threading.Thread):
    """Writes FLAG continuously; on stop, ends only after one more acknowledged write."""

    def __init__(self) -> None:
        super().__init__(name="ensemble-writer", daemon=True)
        self.attempts: list[Attempt] = []
        self.conflicts: list[tuple[int | None, int | None, str]] = []
        self.unexpected: list[BaseException] = []
        self.stopping = threading.Event()
        self.version: int | None = None

    @staticmethod
    def document(seq: int) -> dict[str, Any]:
        return {"name": FLAG, "everyone": seq % 2 == 0, "note": f"write {seq}"}

    @property
    def acked(self) -> list[Attempt]:
        return [a for a in self.attempts if a.version is not None]

    @property
    def refused(self) -> list[Attempt]:
        return [a for a in self.attempts if a.error is not None]

    def run(self) -> None:
        writer = runtime.get_runtime().writer()
        seq = 0
        while True:
            seq += 1
            started = time.monotonic()
            attempt = Attempt(started, started, seq)
            try:
                result = writer.write_flag(FlagRule.from_document(self.document(seq)), self.version)
                attempt.version = result.version
                self.version = result.version
            except FlagConflict as exc:
                # Only legitimate if an earlier write, reported with an unknown outcome,
                # landed after all: remember what that refusal said.
                said = ""
                for earlier in reversed(self.attempts):
                    if earlier.version is not None:
                        break
                    if "outcome is unknown" in str(earlier.error):
                        said = str(earlier.error)
                        break
                self.conflicts.append((self.version, exc.current_version, said))
                attempt.error = exc
                self.version = exc.current_version
            except FlagWriteError as exc:
                attempt.error = exc
            except Exception as exc:  # anything else is a bug
                attempt.error = exc
                self.unexpected.append(exc)
            attempt.ended = time.monotonic()
            self.attempts.append(attempt)
            if self.stopping.is_set() and attempt.version is not None:
                return
            time.sleep(0.02 if attempt.error is None else 0.1)

    def acks_after(self, moment: float) -> int:
        return sum(1 for a in self.acked if a.started > moment)

    def finish(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.join(timeout)
        assert not self.is_alive(), "the writer did not finish"


class Readers:
    """Threads checking flags in a loop, recording every change of answer."""

    def __init__(self, count: int = 3) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.counts: list[int] = []
        self.seen: list[list[tuple[float, tuple[bool, bool]]]] = [[] for _ in range(count)]
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        seen = self.seen[index]
        reads = 0
        while not self.stop.is_set():
            for _ in range(50):
                try:
                    answer = (
                        flag_is_active_for_user(None, FLAG),
                        flag_is_active_for_user(None, STEADY),
                    )
                except BaseException as exc:  # any exception at all is a failure
                    self.errors.append(exc)
                    return
                reads += 2
                if not seen or seen[-1][1] != answer:
                    seen.append((time.monotonic(), answer))
            time.sleep(0.0005)  # steady load, but let the watcher and writer run
        self.counts.append(reads)

    @property
    def reads(self) -> int:
        return sum(self.counts)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)

    def changes_between(self, start: float, end: float) -> list[tuple[float, tuple[bool, bool]]]:
        return [item for seen in self.seen for item in seen if start < item[0] < end]


@dataclass
class Site:
    ens: ZooKeeperEnsemble
    url: str
    root: str
    checker: KazooClient
    tmp: Path
    writer: Writer | None = None
    readers: Readers | None = None
    children: Children | None = None
    child: Child | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    #: (monotonic time, version of FLAG) each time this process's snapshot changed it
    published: list[tuple[float, int | None]] = field(default_factory=list)

    def _on_changed(self, sender: Any, names: frozenset[str], snapshot: Any, **kw: Any) -> None:
        if FLAG in names:
            rule = snapshot.flags.get(FLAG)
            self.published.append((time.monotonic(), rule.version if rule else None))

    def start_load(self) -> None:
        flag_changed.connect(self._on_changed, weak=False)
        writer = runtime.get_runtime().writer()
        first = writer.write_flag(FlagRule.from_document(Writer.document(0)), None)
        writer.write_flag(FlagRule(STEADY, everyone=True), None)
        wait_until(lambda: served_version(STEADY) == 0 and served_version(FLAG) == first.version)
        self.children = Children(self.tmp)
        self.child = self.children.spawn(self.url, FLAG, startup_timeout=10)
        self.child.wait_value(version=first.version, source="zookeeper")
        self.writer = Writer()
        self.writer.version = first.version
        self.readers = Readers()
        self.writer.start()
        wait_until(lambda: len(self.writer.acked) >= 5, timeout=10)

    def shutdown(self) -> None:
        flag_changed.disconnect(self._on_changed)
        if self.writer is not None and self.writer.is_alive():
            self.writer.stopping.set()
            self.writer.join(15)
        if self.readers is not None:
            self.readers.finish()
        if self.children is not None:
            self.children.close_all()

    def finish_and_verify(self) -> None:
        """Stop the load after quorum is back; check nothing acknowledged was lost."""
        assert self.writer is not None and self.readers is not None and self.child is not None
        self.writer.finish()
        writer, readers = self.writer, self.readers
        last = writer.acked[-1]
        assert writer.attempts[-1] is last
        assert writer.unexpected == [], writer.unexpected
        # Acknowledged versions only go up; a conflict may only move forward (a write
        # reported as failed that landed), never back (an acknowledged write lost).
        versions = [a.version for a in writer.acked]
        assert versions == sorted(set(versions)), versions
        # A refusal that said "nothing was saved" / "not applied" must not have landed.
        for ours, theirs, said in writer.conflicts:
            assert theirs is not None and ours is not None and theirs > ours, writer.conflicts
            assert "outcome is unknown" in said, writer.conflicts
        # Every watcher converges on it: this process and the other OS process.
        wait_until(lambda: served_version(FLAG) == last.version, timeout=15)
        seen = self.child.wait_value(version=last.version, source="zookeeper")
        # ... and stays there: what it serves now, asked after it reported the version.
        assert self.child.ask("state")["version"] == last.version, self.child.describe()
        # flag_changed is sent (on the watch thread) just after the snapshot is visible.
        here = wait_until(
            lambda: next((t for t, v in self.published if v == last.version), None), timeout=15
        )
        there = seen["t_mono"]  # time.monotonic: the same clock in every process here
        self.figures["last_ack_to_all_watchers_ms"] = round(
            (max(here, there) - last.ended) * 1000, 1
        )
        assert flag_is_active_for_user(None, FLAG) is Writer.document(last.seq)["everyone"]
        # ZooKeeper holds the last acknowledged write: read by another client after sync.
        path = f"{self.root}/flags/{FLAG}"
        self.checker.sync(path)
        data, stat = self.checker.get(path)
        assert json.loads(data)["note"] == f"write {last.seq}"
        assert stat.version == last.version
        self.checker.sync(f"{self.root}/snapshot")
        entry = read_view(self.checker, self.root)["flags"][FLAG]
        assert entry["note"] == f"write {last.seq}" and entry["version"] == last.version
        readers.finish()
        assert readers.errors == [], readers.errors
        assert all(answer[1] is True for seen in readers.seen for _t, answer in seen)
        assert self.child.alive, self.child.describe()
        status = runtime.status()
        assert status["watching"] and status["connected"], status
        self.figures.update(
            reads=readers.reads,
            reader_errors=len(readers.errors),
            acked=len(writer.acked),
            refused=len(writer.refused),
            refused_kinds=sorted({type(a.error).__name__ for a in writer.refused}),
            conflicts=len(writer.conflicts),
            slowest_write_s=round(max(a.duration for a in writer.attempts), 2),
        )

    def check_refusals(self, bound: float) -> None:
        assert self.writer is not None
        for attempt in self.writer.refused:
            assert isinstance(attempt.error, FlagWriteError), attempt.error
            assert attempt.duration < bound, (attempt.duration, attempt.error)

    def write_gap(self, fault_at: float) -> float:
        """Seconds without any acknowledged write around the fault."""
        assert self.writer is not None
        before = [a.ended for a in self.writer.acked if a.ended <= fault_at]
        after = [a.ended for a in self.writer.acked if a.ended > fault_at]
        return after[0] - (before[-1] if before else fault_at)

    def visible_after(self, moment: float) -> dict[str, float]:
        """How long after ``moment`` the first write acknowledged after it was served
        here and in the other process."""
        assert self.writer is not None and self.child is not None
        first = next(a for a in self.writer.acked if a.started > moment)
        here = next(t for t, v in self.published if v is not None and v >= first.version)
        there = self.child.find(
            lambda e: is_value(e) and e["version"] is not None and e["version"] >= first.version
        )
        assert there is not None, self.child.describe()
        return {
            "here": round(here - moment, 2),
            "other_process": round(there["t_mono"] - moment, 2),
        }

    def recover_and_report(self, fault_at: float, title: str) -> None:
        """After a fault that kept the quorum: writes resume, nothing was lost, every
        watcher converges; record the figures."""
        writer = self.writer
        assert writer is not None
        self.ens.wait_for_quorum(30)
        back_at = time.monotonic()
        wait_until(lambda: writer.acks_after(back_at) >= 3, timeout=30)
        self.check_refusals(_write_timeout() + WRITE_BOUND_SLACK)
        self.finish_and_verify()
        self.figures.update(
            write_gap_s=round(self.write_gap(fault_at), 2),
            first_new_write_served_after_s=self.visible_after(fault_at),
        )
        self.report(title)

    def report(self, title: str) -> None:
        print(f"\n[{title}] " + ", ".join(f"{k}={v}" for k, v in self.figures.items()))


def _write_timeout() -> float:
    return runtime.get_runtime().writer().requests.timeout


def _connected_index(ens: ZooKeeperEnsemble) -> int | None:
    """The node this process's client is connected to (kazoo does not say publicly)."""
    connection = runtime.get_runtime().client._connection
    sock = getattr(connection, "_socket", None)
    if sock is None:
        return None
    port = sock.getpeername()[1]
    return next((i for i, s in enumerate(ens.servers) if s.port == port), None)


# -- the tests --------------------------------------------------------------------------------


def test_leader_lost_while_writing_and_reading(site):
    ens = site.ens
    leader = ens.leader_index()
    assert leader is not None
    site.start_load()
    writer = site.writer
    fault_at = time.monotonic()
    try:
        ens.kill_node(leader)  # a crash: the two others elect a new leader
        wait_until(lambda: writer.acks_after(fault_at) >= 3, timeout=30)
        new_leader = ens.wait_for_quorum(30)
        assert new_leader != leader
    finally:
        ens.start_node(leader, wait=False)
    site.recover_and_report(fault_at, "leader killed")


def test_follower_lost_while_writing_and_reading(site):
    ens = site.ens
    # Put this process on a follower, so that losing it really cuts our connection.
    for _attempt in range(12):
        index = _connected_index(ens)
        if index is not None and ens.modes()[index] == "follower":
            break
        runtime.stop()
        runtime.start(wait=10.0)
    else:
        pytest.fail("could not get connected to a follower")
    site.start_load()
    writer = site.writer
    index = _connected_index(ens)
    assert index is not None and ens.modes()[index] == "follower"
    fault_at = time.monotonic()
    try:
        ens.stop_node(index)
        wait_until(lambda: writer.acks_after(fault_at) >= 3, timeout=30)
        assert ens.leader_index() is not None  # the quorum stayed
        moved_to = _connected_index(ens)
        assert moved_to is not None and moved_to != index
    finally:
        ens.start_node(index, wait=False)
    site.recover_and_report(fault_at, "follower stopped")


def test_quorum_lost_writes_refused_reads_served(site):
    ens = site.ens
    site.start_load()
    writer, readers = site.writer, site.readers
    rt = runtime.get_runtime()
    leader = ens.leader_index()
    assert leader is not None
    follower = next(i for i in range(3) if i != leader)
    fault_at = time.monotonic()
    try:
        ens._parallel(lambda s: s.stop(), [leader, follower])
        wait_until(lambda: not rt.client.connected, timeout=10)
        cut_at = time.monotonic()
        served = served_version(FLAG)
        # Writes are refused with ZooKeeperUnavailable, each within the bound.
        wait_until(lambda: sum(1 for a in writer.refused if a.started > cut_at) >= 2, timeout=20)
        restart_at = time.monotonic()
        assert not rt.client.connected  # the lone node serves nobody
        # Nothing changed for readers while cut off: the last snapshot was served.
        assert readers.changes_between(cut_at, restart_at) == []
        assert served_version(FLAG) == served
        during = [a for a in writer.attempts if cut_at < a.started and a.ended < restart_at]
        assert during and all(isinstance(a.error, ZooKeeperUnavailable) for a in during), [
            repr(a.error) for a in during
        ]
    finally:
        ens._parallel(lambda s: s.start(30.0, wait=False), [leader, follower])
    ens.wait_for_quorum(30)
    back_at = time.monotonic()
    wait_until(lambda: rt.client.connected, timeout=15)
    reconnected_in = time.monotonic() - back_at
    wait_until(lambda: writer.acks_after(back_at) >= 3, timeout=30)
    site.check_refusals(_write_timeout() + WRITE_BOUND_SLACK)
    site.finish_and_verify()
    site.figures.update(
        refused_while_down=len(during),
        slowest_refusal_s=round(max(a.duration for a in during), 2),
        no_quorum_s=round(back_at - fault_at, 1),
        reconnected_after_quorum_s=round(reconnected_in, 2),
        first_new_write_served_after_quorum_s=site.visible_after(back_at),
    )
    site.report("quorum lost (2 of 3 stopped)")


def test_read_only_node_refuses_writes_cleanly(settings):
    """A node cut off from its quorum can serve read-only clients (``readonlymode``; in
    ZooKeeper 3.8 it also needs local sessions). Through such a client a FlagWriter still
    reads, and a write is refused with ZooKeeperUnavailable ("read-only"), not a hang. The
    app's own client is not read-only: it gets no session there and serves its cache."""
    ens = _start_ensemble(
        jvm_flags=(*DEFAULT_JVM_FLAGS, "-Dreadonlymode.enabled=true"),
        extra_config={"localSessionsEnabled": "true"},
    )
    ro_client = None
    try:
        root = f"/ro-{uuid.uuid4().hex[:10]}"
        settings.ZKFLAGS_URL = url = f"zk://{ens.hosts}{root}"
        rt = runtime.start(wait=10.0)
        result = runtime.get_runtime().writer().write_flag(FlagRule(STEADY, everyone=True), None)
        wait_until(lambda: served_version(STEADY) == result.version)
        survivor = 2
        ens._parallel(lambda s: s.stop(), [0, 1])
        wait_until(lambda: ens.servers[survivor].mode() == "read-only", timeout=20)
        ro_client = KazooClient(hosts=ens.servers[survivor].hosts, timeout=10.0, read_only=True)
        ro_client.start(timeout=15)
        ro_url = parse_url(url)
        ro_writer = FlagWriter(
            Requests(ro_client, ro_url, 3.0), Paths(ro_url.root), acl_for(ro_url)
        )
        stored = ro_writer.reader.flag(STEADY)
        doc, version = stored.document(), stored.version
        assert doc is not None and doc["everyone"] is True and version == 0
        started = time.monotonic()
        with pytest.raises(ZooKeeperUnavailable, match="read-only"):
            ro_writer.write_flag(FlagRule(STEADY, everyone=False), 0)
        with pytest.raises(ZooKeeperUnavailable, match="read-only"):
            ro_writer.write_flag(FlagRule("brand-new", everyone=True), None)
        refused_in = time.monotonic() - started
        assert refused_in < 2 * ro_writer.requests.timeout
        stored = ro_writer.reader.flag(STEADY)
        assert (stored.document(), stored.version) == (doc, 0)
        assert not rt.client.connected
        assert flag_is_active_for_user(None, STEADY) is True
        with pytest.raises(ZooKeeperUnavailable):
            runtime.get_runtime().writer().write_flag(FlagRule(STEADY, everyone=False), 0)
        print(f"\n[read-only node] two writes refused in {refused_in:.2f} s; reads served")
    finally:
        if ro_client is not None:
            ro_client.stop()
            ro_client.close()
        runtime.stop()
        store.publish(EMPTY)
        ens.cleanup()
