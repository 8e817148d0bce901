"""zkflags.E002 for ZKFLAGS["MAX_SNAPSHOT_BYTES"] (django_zkflags/checks.py): a bound below
what one write may carry would make every process refuse snapshots the app writes."""

from __future__ import annotations

from django_zkflags.checks import check_settings


def messages(settings, **options):
    settings.ZKFLAGS = {**settings.ZKFLAGS, **options}
    return [m for m in check_settings() if "MAX_SNAPSHOT_BYTES" in m.msg]


def test_the_default_bound_passes(settings):
    assert messages(settings) == []


def test_a_bound_below_the_write_limit_is_an_error(settings):
    [error] = messages(settings, MAX_SNAPSHOT_BYTES=500_000)
    assert error.id == "zkflags.E002"
    assert "below ZKFLAGS['MAX_WRITE_BYTES'] (1000000)" in error.msg
    assert messages(settings, MAX_SNAPSHOT_BYTES=1_000_000) == []
    assert messages(settings, MAX_SNAPSHOT_BYTES=2_000_000, MAX_WRITE_BYTES=3_000_000)


def test_a_bound_of_the_wrong_type_is_reported_once(settings):
    found = messages(settings, MAX_SNAPSHOT_BYTES="64MB")
    assert [m.msg for m in found] == ["ZKFLAGS['MAX_SNAPSHOT_BYTES'] must be a non-negative number"]
