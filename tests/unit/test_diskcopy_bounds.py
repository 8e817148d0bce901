"""The disk copy of the snapshot (django_zkflags/diskcopy.py) is bounded like the znode: an
oversized file is not read whole, and a bomb in it is not inflated by the process that
starts on it."""

from __future__ import annotations

import logging
import zlib

import pytest

from django_zkflags import runtime
from django_zkflags.cache import store
from django_zkflags.diskcopy import SnapshotFile
from django_zkflags.snapshot import EMPTY, MAGIC, encode_entries

MIB = 1024 * 1024
ZXID = 12_345_678_901


@pytest.fixture(autouse=True)
def empty_store():
    store.publish(EMPTY)
    yield
    store.publish(EMPTY)


def test_a_file_over_the_bound_is_not_read(tmp_path, caplog):
    copy = SnapshotFile(str(tmp_path / "snap"))
    data = encode_entries({"a": {"name": "a", "everyone": True, "version": 0}})
    copy.save(data, ZXID)
    assert copy.load(len(data)) == (data, ZXID)
    assert copy.load() == (data, ZXID)  # no bound given: as before
    with caplog.at_level(logging.WARNING, "django_zkflags"):
        assert copy.load(len(data) - 30) is None
    assert "larger than" in caplog.text


def test_a_process_starting_on_a_bomb_file_does_not_inflate_it(tmp_path, settings, caplog):
    path = tmp_path / "snap"
    settings.ZKFLAGS = {**settings.ZKFLAGS, "SNAPSHOT_FILE": str(path), "MAX_SNAPSHOT_BYTES": MIB}
    compressor = zlib.compressobj(9)
    bomb = MAGIC + compressor.compress(b" " * (8 * MIB)) + compressor.flush()
    SnapshotFile(str(path)).save(bomb, ZXID)
    flag_runtime = runtime.FlagRuntime()  # not started: no ZooKeeper needed to load the file
    try:
        with caplog.at_level(logging.WARNING, "django_zkflags"):
            assert flag_runtime.load_file() is False
    finally:
        flag_runtime.close(timeout=1.0)
    assert "MAX_SNAPSHOT_BYTES" in caplog.text
    assert store.base.source == "empty"
    # The same file is served under a bound it fits in.
    good = encode_entries({"a": {"name": "a", "everyone": True, "version": 0}})
    SnapshotFile(str(path)).save(good, ZXID)
    flag_runtime = runtime.FlagRuntime()
    try:
        assert flag_runtime.load_file() is True
    finally:
        flag_runtime.close(timeout=1.0)
    assert (store.base.source, list(store.base.flags)) == ("file", ["a"])
