"""The one evaluator (django_zkflags/evaluation.py) with snapshots from a real ZooKeeper:
the unknown-flag default survives a new snapshot."""

from __future__ import annotations

import pytest

from django_zkflags import flag_is_active_for_user

from ..conftest import render


@pytest.mark.parametrize("default", [True, False])
def test_unknown_flag_uses_the_setting(zkflags, settings, client, default):
    zkflags.write("known-off", everyone=False)
    settings.ZKFLAGS = {**settings.ZKFLAGS, "UNKNOWN_FLAG_ACTIVE": default}
    assert flag_is_active_for_user(None, "nope") is default
    assert flag_is_active_for_user(None, "known-off") is False  # a known flag keeps its rule
    assert render('{% flag "nope" %}A{% else %}B{% endflag %}') == ("A" if default else "B")
    assert client.get("/guarded/").status_code == (200 if default else 404)
    # A new snapshot from ZooKeeper keeps the default.
    zkflags.write("known-on", everyone=True)
    assert flag_is_active_for_user(None, "nope") is default
