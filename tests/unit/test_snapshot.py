"""The snapshot's in-memory form (django_zkflags/snapshot.py): compiling entries.

Pure: no ZooKeeper.
"""

from __future__ import annotations

import json

from django_zkflags.snapshot import compile_entries


def test_a_bad_entry_does_not_break_the_other_flags_of_a_snapshot():
    # An integer too large for a float used to raise OverflowError out of validation and
    # drop the whole snapshot, not just the bad entry.
    raw = '{"name": "big", "percent": 1' + "0" * 400 + "}"
    entries = {"big": json.loads(raw), "ok": {"name": "ok", "everyone": True, "version": 0}}
    flags, errors = compile_entries(entries)
    assert set(flags) == {"ok"}
    assert "Percent" in errors["big"]
