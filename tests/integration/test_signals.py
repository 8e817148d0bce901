"""The ``flag_changed`` signal (django_zkflags/signals.py) as snapshots arrive from a real
ZooKeeper. For overrides: tests/unit/test_testing.py."""

from __future__ import annotations

from ..conftest import wait_until


def _wait_names(received: list, name: str) -> tuple:
    return wait_until(lambda: next((c for c in received if name in c[0]), None))


def test_flag_changed_is_sent_with_the_changed_names(zkflags, changes):
    version = zkflags.write("a", everyone=True)
    names, snapshot = _wait_names(changes, "a")
    assert names == frozenset({"a"})
    assert snapshot.flags["a"].version == version
    changes.clear()

    zkflags.write("b", everyone=False)
    names, snapshot = _wait_names(changes, "b")
    assert names == frozenset({"b"})  # "a" did not change
    assert set(snapshot.flags) == {"a", "b"}
    changes.clear()

    version = zkflags.write("a", everyone=False)
    names, _ = _wait_names(changes, "a")
    assert names == frozenset({"a"})
    changes.clear()

    zkflags.writer.delete_flag("a", version)
    zkflags.wait_version("a", None)
    names, snapshot = _wait_names(changes, "a")
    assert names == frozenset({"a"}) and "a" not in snapshot.flags
