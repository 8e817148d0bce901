"""What one process knows about a flag and about its own ZooKeeper runtime (JSON-able)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from django_zkflags import flag_is_active_for_user, runtime
from django_zkflags.cache import store


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("socket"))


def blocking_sleep(seconds: float) -> None:
    """Sleep holding the whole process (even a gevent worker), so that a concurrent
    request has to be accepted by another worker."""
    if gevent_patched():
        from gevent import monkey

        monkey.get_original("time", "sleep")(seconds)
    else:
        time.sleep(seconds)


def flag_state(name: str) -> dict[str, Any]:
    rule = store.base.flags.get(name)
    rt = runtime._runtime  # not get_runtime(): that would create one
    client_id = rt.client.client_id if rt is not None else None
    status = runtime.status()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "active": flag_is_active_for_user(None, name),
        "version": rule.version if rule else None,
        "source": store.base.source,
        "session": f"0x{client_id[0]:x}" if client_id else None,
        "handler": type(rt.client.handler).__name__ if rt is not None else None,
        "gevent_patched": gevent_patched(),
        "runtime_pid": status.get("pid"),
        "connected": status.get("connected"),
        "watching": status.get("watching"),
        "reads": status.get("reads"),
        "state": str(status.get("state")),
        "threads": sorted(t.name for t in threading.enumerate()),
    }
