"""The disk copy is written off the watch thread, the last snapshot of a burst once."""

from __future__ import annotations

import threading

from django_zkflags.diskcopy import BackgroundSaver, SnapshotFile


def test_a_burst_is_written_once_the_last_wins_and_flush_writes_what_is_pending(tmp_path):
    path = tmp_path / "flags.snapshot"
    saver = BackgroundSaver(SnapshotFile(str(path)))
    gate, taken = threading.Event(), threading.Event()
    built: list[int] = []

    def slow(n: int) -> bytes:  # the first write blocks until the burst was submitted
        taken.set()
        gate.wait(5)
        built.append(n)
        return f"snapshot {n}".encode()

    saver.submit(lambda: slow(0), 0)
    assert taken.wait(5)
    for n in range(1, 50):
        saver.submit(lambda n=n: f"snapshot {n}".encode(), n)  # type: ignore[misc]
    gate.set()
    saver.flush(timeout=5)
    assert SnapshotFile(str(path)).load() == (b"snapshot 49", 49)
    assert saver.saves == 2  # the first, then the last of the burst: not 50
    assert built == [0]


def test_a_failing_build_does_not_stop_the_saver(tmp_path):
    path = tmp_path / "flags.snapshot"
    saver = BackgroundSaver(SnapshotFile(str(path)))

    def broken() -> bytes:
        raise ValueError("bad snapshot")

    saver.submit(broken, 1)
    saver.submit(lambda: b"good", 2)
    saver.flush(timeout=5)
    assert SnapshotFile(str(path)).load() == (b"good", 2)
