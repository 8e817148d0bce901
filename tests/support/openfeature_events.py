"""OpenFeature's SDK as the tests drive it: a provider set for a domain of its own, that
domain's client, and the provider events its handlers received. Shared by
tests/integration/test_openfeature.py and tests/system/test_openfeature.py."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from openfeature import api
from openfeature.event import EventDetails, ProviderEvent

from django_zkflags.openfeature import ZKFlagsProvider

#: Bound on a wait for an event: only a hang takes this long.
HANG_TIMEOUT = 10.0

DOMAINS = (f"zkflags-test-{i}" for i in itertools.count())


class Events:
    """The provider events a client's handlers received from our provider, in order."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []
        self._lock = threading.Lock()
        self._handlers = {event: self._handler(event) for event in ProviderEvent}
        for event, handler in self._handlers.items():
            client.add_handler(event, handler)

    def _handler(self, event: ProviderEvent) -> Any:
        def handle(details: EventDetails) -> None:
            if details.provider_name != "django-zkflags":
                return  # the no-op provider the domain had before ours
            with self._lock:
                self.seen.append((event, details))

        return handle

    def kinds(self) -> list[ProviderEvent]:
        with self._lock:
            return [event for event, _details in self.seen]

    def wait(self, *expected: ProviderEvent, after: int = 0) -> list[EventDetails]:
        """``expected`` among the events from position ``after`` on, in this order."""
        deadline = time.monotonic() + HANG_TIMEOUT
        while True:
            with self._lock:
                seen = self.seen[after:]
            position, details = 0, []
            for event, detail in seen:
                if position < len(expected) and event == expected[position]:
                    position += 1
                    details.append(detail)
            if position == len(expected):
                return details
            if time.monotonic() > deadline:
                raise AssertionError(f"{expected} not seen after {after}: {self.kinds()}")
            time.sleep(0.01)

    def close(self) -> None:
        for event, handler in self._handlers.items():
            self.client.remove_handler(event, handler)


class OpenFeature:
    """A provider set for a domain of its own, its client, and the events it received."""

    def __init__(self, provider: ZKFlagsProvider, wait: bool = True) -> None:
        self.provider = provider
        self.domain = next(DOMAINS)
        self.client = api.get_client(self.domain)
        self.events = Events(self.client)
        if wait:
            api.set_provider_and_wait(provider, self.domain)
        else:
            api.set_provider(provider, self.domain)

    def close(self) -> None:
        self.events.close()
        self.provider.shutdown()
        api.clear_providers()
