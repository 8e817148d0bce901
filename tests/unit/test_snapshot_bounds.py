"""Decoding a snapshot is bounded (django_zkflags/snapshot.py): what it inflates to, checked
before it is inflated; and what a writer would write, checked against the same bound."""

from __future__ import annotations

import json
import time
import tracemalloc
import zlib

import pytest

from django_zkflags.snapshot import (
    MAGIC,
    MAX_SNAPSHOT_BYTES,
    CorruptSnapshot,
    compile_entries,
    decode_payload,
    encode_entries,
    encode_snapshot,
    inflate,
)

MIB = 1024 * 1024


def bomb(inflated_mib: int) -> bytes:
    """``ZKF1`` + zlib of ``inflated_mib`` MiB of spaces: about 1 KB per MiB."""
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b" " * MIB) for _ in range(inflated_mib)]
    return MAGIC + b"".join(parts) + compressor.flush()


def small_flags(count: int) -> dict[str, dict[str, object]]:
    return {
        f"flag-{i:06d}": {
            "name": f"flag-{i:06d}",
            "everyone": None,
            "percent": 10.0,
            "superusers": False,
            "staff": True,
            "authenticated": False,
            "users": [],
            "groups": [],
            "note": "",
            "version": 3,
        }
        for i in range(count)
    }


def test_the_default_bound_is_64_mib():
    assert MAX_SNAPSHOT_BYTES == 64 * MIB


def test_a_bomb_is_refused_without_being_inflated_in_memory():
    data = bomb(100)  # 100 MiB of whitespace in about 100 KB
    assert len(data) < 120 * 1024
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(CorruptSnapshot, match=r"MAX_SNAPSHOT_BYTES.*not decoded"):
            decode_payload(data, 64 * MIB)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"100 MiB bomb refused in {seconds * 1000:.0f} ms, peak {peak / MIB:.1f} MiB allocated")
    # Inflated a step at a time, each step dropped: never the 64 MiB, let alone 100.
    assert peak < 8 * MIB


def test_the_bound_is_exact():
    payload, size = encode_snapshot(small_flags(3))
    assert size == len(zlib.decompress(payload[len(MAGIC) :]))
    assert len(decode_payload(payload, size)["flags"]) == 3
    with pytest.raises(CorruptSnapshot, match="larger than"):
        decode_payload(payload, size - 1)
    plain = json.dumps({"format": 1, "flags": {}}).encode()
    assert decode_payload(plain, len(plain)) == {"flags": {}, "environments": {}}
    with pytest.raises(CorruptSnapshot, match="larger than"):
        decode_payload(plain, len(plain) - 1)  # plain JSON too: nothing to inflate, still bound


@pytest.mark.parametrize("cut", [1, 4, 100])
def test_a_truncated_or_foreign_stream_is_corrupt(cut):
    payload = encode_entries(small_flags(200))
    with pytest.raises(CorruptSnapshot, match="not readable"):
        decode_payload(payload[:-cut])
    with pytest.raises(CorruptSnapshot, match="not readable"):
        decode_payload(MAGIC + b"not zlib at all")


def test_inflate_reads_across_steps_and_stops_at_the_end_of_the_stream():
    data = bytes(range(256)) * (5 * MIB // 256) + b"tail"  # several 1 MiB steps
    compressed = zlib.compress(data)
    assert inflate(compressed, len(data)) == data
    assert inflate(compressed + b"trailing bytes", len(data)) == data  # as zlib.decompress
    with pytest.raises(CorruptSnapshot, match="larger than"):
        inflate(compressed, len(data) - 1)


def test_a_hundred_thousand_small_flags_still_decode_with_the_default_bound():
    payload, size = encode_snapshot(small_flags(100_000))
    decoded = decode_payload(payload)
    flags, errors = compile_entries(decoded["flags"])
    print(f"100,000 small flags: {size / MIB:.1f} MiB of JSON, {len(payload) / 1024:.0f} KB")
    assert (len(flags), errors) == (100_000, {})
    assert size < MAX_SNAPSHOT_BYTES // 4
