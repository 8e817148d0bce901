"""Helpers for your own tests: force flags without ZooKeeper."""

from __future__ import annotations

from typing import Any

from django.test.utils import TestContextDecorator

from .cache import store


class override_flag(TestContextDecorator):
    """Force flag ``name`` on (``active=True``) or off, as a context manager or a decorator
    of functions and test classes::

        with override_flag("new-checkout"):
            ...

        @override_flag("new-checkout", active=False)
        def test_old_checkout(client): ...

    It needs no ZooKeeper: it layers over whatever snapshot the process has, and
    undoes itself on exit even if the watcher published a new snapshot meanwhile.
    """

    def __init__(self, name: str, active: bool = True) -> None:
        self.name = name
        self.active = active
        self._tokens: list[int] = []
        super().__init__()

    def enable(self) -> Any:
        self._tokens.append(store.push_override(self.name, self.active))

    def disable(self) -> None:
        store.pop_override(self._tokens.pop())
