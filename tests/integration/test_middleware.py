"""FlagMiddleware (django_zkflags/middleware.py): one snapshot per request, while a new one
arrives from a real ZooKeeper in the middle of the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from django_zkflags.cache import store
from tests.testapp import views


@pytest.fixture
def hook() -> Iterator[Callable]:
    """Set ``views.between_checks.hook`` for this test only."""

    def set_hook(fn):
        views.between_checks.hook = fn

    yield set_hook
    views.between_checks.__dict__.pop("hook", None)


def test_a_request_sees_one_snapshot(zkflags, client, hook):
    zkflags.write("consistent", everyone=True)
    changed = []

    def change_in_between():
        # Change the flag in ZooKeeper and wait until this process has the new version.
        zkflags.write("consistent", everyone=False)
        changed.append(store.current.flags["consistent"].everyone)

    hook(change_in_between)
    assert client.get("/two-checks/").content == b"True True"
    assert changed == [False]  # the process did have the new value during the request
    hook(None)
    assert client.get("/two-checks/").content == b"False False"


def test_without_the_middleware_each_check_reads_the_current_snapshot(
    zkflags, client, hook, no_middleware
):
    zkflags.write("consistent", everyone=True)
    hook(lambda: zkflags.write("consistent", everyone=False))
    # No middleware: flag_is_active still works, but answers from the current snapshot.
    assert client.get("/two-checks/").content == b"True False"
