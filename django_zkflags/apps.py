from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ZkFlagsConfig(AppConfig):
    name = "django_zkflags"
    verbose_name = _("Feature flags (ZooKeeper)")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers, runtime  # noqa: F401  (registers checks, signals)

        runtime.autostart()
