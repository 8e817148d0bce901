"""A watching process for bench/run.py: one django-zkflags runtime, reporting on stdout.

Started as ``python bench/watcher_child.py --url zk://host:port/root [--watch NAME]``. It
configures a minimal Django, starts the runtime (one client, one watch, as in a web
worker), and prints JSON lines:

* ``{"event": "ready", ...}`` once the first snapshot is loaded, with the cold-start time
  (FlagRuntime start to snapshot loaded), RSS, session id and flag count;
* ``{"event": "seen", "version": v, "everyone": b, "t": ns}`` each time flag ``--watch``
  changes in this process's snapshot. ``t`` is ``time.monotonic_ns()`` taken in the
  ``flag_changed`` receiver, right after the new snapshot became ``store.current``;
  CLOCK_MONOTONIC is system-wide on Linux, so the parent can compare it with its own.

Commands on stdin, one per line: ``state`` (prints the watched flag as this process sees it
now), ``rss``, ``quit``. End of stdin quits too.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time

_out_lock = threading.Lock()


def emit(**fields: object) -> None:
    line = json.dumps(fields, separators=(",", ":"))
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--watch", default=None, help="flag whose changes are reported")
    parser.add_argument("--snapshot-file", default="", help="disk copy ('' disables it)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench-child",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_zkflags",
        ],
        DATABASES={},
        USE_TZ=True,
        ZKFLAGS_URL=args.url,
        ZKFLAGS={
            "AUTOSTART": False,
            "SNAPSHOT_FILE": args.snapshot_file or None,
            "STARTUP_TIMEOUT": args.timeout,
        },
    )
    django.setup()

    from django_zkflags import runtime
    from django_zkflags.cache import store
    from django_zkflags.signals import flag_changed

    watched = args.watch

    def describe(snapshot: object) -> tuple[int | None, bool | None]:
        rule = snapshot.flags.get(watched)  # type: ignore[attr-defined]
        return (rule.version, rule.everyone) if rule is not None else (None, None)

    def on_changed(sender: object, names: frozenset[str], snapshot: object, **kw: object) -> None:
        if watched in names:
            t = time.monotonic_ns()
            version, everyone = describe(snapshot)
            emit(event="seen", version=version, everyone=everyone, t=t)

    if watched:
        flag_changed.connect(on_changed, weak=False)

    gc.collect()
    rss_before = rss_kb()
    t0 = time.monotonic_ns()
    rt = runtime.start(wait=args.timeout)
    t1 = time.monotonic_ns()
    loaded = rt.loaded.is_set()
    gc.collect()
    version, everyone = describe(store.current) if watched else (None, None)
    emit(
        event="ready",
        pid=os.getpid(),
        loaded=loaded,
        cold_start_ns=t1 - t0,
        flags=len(store.current.flags),
        rss_kb=rss_kb(),
        rss_before_start_kb=rss_before,
        session=f"0x{rt.client.client_id[0]:x}" if rt.client.client_id else None,
        version=version,
        everyone=everyone,
    )

    for line in sys.stdin:
        command = line.strip()
        if command == "state":
            version, everyone = describe(store.current) if watched else (None, None)
            emit(
                event="state",
                version=version,
                everyone=everyone,
                flags=len(store.current.flags),
                zxid=store.current.zxid,
            )
        elif command == "rss":
            gc.collect()
            emit(event="rss", rss_kb=rss_kb())
        elif command == "quit":
            break
    runtime.stop(timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
