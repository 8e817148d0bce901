from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.utils.translation import gettext_lazy as _

from . import conf

MANAGE_PROGRAMS = ("manage.py", "django-admin", "django-admin.py", "__main__.py")

log = logging.getLogger("django_zkflags")


def should_autostart(argv: list[str] | None = None) -> bool:
    """Start the watcher in this process? Not for commands that never read flags
    (``ZKFLAGS["SKIP_COMMANDS"]``), nor in runserver's autoreloader parent, which only
    watches files while its child serves."""
    if not conf.get("AUTOSTART"):
        return False
    argv = sys.argv if argv is None else argv
    program = os.path.basename(argv[0]) if argv else ""
    if program in MANAGE_PROGRAMS and len(argv) > 1:
        command = argv[1]
        if command in conf.get("SKIP_COMMANDS"):
            return False
        if (
            command == "runserver"
            and os.environ.get("RUN_MAIN") != "true"
            and "--noreload" not in argv
        ):
            return False
    return True


class ZkFlagsConfig(AppConfig):
    name = "django_zkflags"
    verbose_name = _("Feature flags (ZooKeeper)")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers, runtime  # noqa: F401  (registers checks, signals)
        from .cache import store

        store.set_default_active(bool(conf.get("UNKNOWN_FLAG_ACTIVE")))
        store.set_declared(conf.declared_flags())
        setting_changed.connect(_declared_changed, dispatch_uid="zkflags-declared")
        if should_autostart():
            started = runtime.start()
            if conf.get("STEWARD"):
                from .steward import start_in_process

                start_in_process()
            threading.Thread(
                target=settle_after_start, args=(started,), name="zkflags-settle", daemon=True
            ).start()


def _declared_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "ZKFLAGS":
        from .cache import store

        conf.clear_caches()
        store.set_declared(conf.declared_flags())


def settle_after_start(started: object) -> None:
    """Once the first snapshot is in, record the audit rows of changes a process that died
    left without one (see services.settle_changes). Off the request path; a database that
    is not there (or not migrated) only defers it to the next write, check or repair."""
    from django.db import connections

    from . import services

    try:
        if getattr(started, "wait_loaded", lambda timeout: False)(30.0):
            services.settle_changes()
    except Exception as exc:
        log.info("Left change records for the next write to settle: %s", exc)
    finally:
        connections.close_all()
