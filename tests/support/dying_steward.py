"""A steward that stops dead between the ZooKeeper commit of a scheduled change and its
audit row, as a ``kill -9`` (or a crash, an OOM kill) can land there. Run with the settings
of :mod:`tests.support.steward_settings`::

    python -m tests.support.dying_steward

It contends like any steward; when it runs a schedule it prints ``ZOOKEEPER-COMMITTED``
once ZooKeeper holds the change (and the schedule znode is gone with it), then waits for
the signal that ends it. The test sends SIGKILL.
"""

from __future__ import annotations

import threading
import time

import django


def main() -> None:
    django.setup()
    from django_zkflags import services, steward

    def record_then_hang(*args: object, **kwargs: object) -> object:
        # Called after ZooKeeper committed the change, inside the database transaction.
        print("ZOOKEEPER-COMMITTED", flush=True)
        time.sleep(600)
        raise SystemExit(1)

    services._record = record_then_hang  # type: ignore[assignment]
    running = steward.start_in_process()
    print(f"CONTENDING {running.status.identifier}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
