"""override_flag (django_zkflags/testing.py) while snapshots arrive from a real ZooKeeper."""

from __future__ import annotations

from django_zkflags import flag_is_active_for_user
from django_zkflags.cache import store
from django_zkflags.testing import override_flag


def test_override_survives_a_new_snapshot(zkflags):
    zkflags.write("x", everyone=True)
    with override_flag("x", active=False):
        zkflags.write("x", everyone=True, note="edited meanwhile")  # a new version of x
        zkflags.write("y", everyone=True)
        assert store.base.flags["x"].note == "edited meanwhile"
        assert flag_is_active_for_user(None, "x") is False  # still overridden
        assert flag_is_active_for_user(None, "y") is True  # the new snapshot shows through
    # Undone over the new snapshot, not back to the one from before.
    assert store.current.flags["x"].note == "edited meanwhile"
    assert flag_is_active_for_user(None, "x") is True
    assert flag_is_active_for_user(None, "y") is True
    zkflags.write("x", everyone=False)
    assert flag_is_active_for_user(None, "x") is False
