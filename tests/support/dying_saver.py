"""A process that saves one flag through the one write path and stops dead between the
ZooKeeper commit and the database commit, as a ``kill -9`` (or a crash, an OOM kill) can
land there. Run with the settings of :mod:`tests.support.site_settings`::

    python -m tests.support.dying_saver NAME USERNAME

It prints ``ZOOKEEPER-COMMITTED`` once ZooKeeper holds the change, then waits for the
signal that ends it. The test sends SIGKILL.
"""

from __future__ import annotations

import sys
import time

import django


def main() -> None:
    name, username = sys.argv[1], sys.argv[2]
    django.setup()
    from django_zkflags import services

    real_mirror = services._mirror

    def mirror_then_hang(*args: object, **kwargs: object) -> object:
        # Called after ZooKeeper accepted the change, inside the database transaction.
        print("ZOOKEEPER-COMMITTED", flush=True)
        time.sleep(600)
        return real_mirror(*args, **kwargs)  # type: ignore[arg-type]

    services._mirror = mirror_then_hang  # type: ignore[assignment]
    services.update_flag(
        name, lambda doc: {**doc, "everyone": False}, actor=username, source="admin"
    )


if __name__ == "__main__":
    main()
