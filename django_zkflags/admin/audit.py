"""The audit log in the admin: read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from ..models import FlagChange


class FlagChangeAdmin(admin.ModelAdmin):
    list_display = ("at", "flag_name", "action", "username", "zk_version", "source", "changes")
    list_filter = ("action", "source")
    search_fields = ("flag_name", "username")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in FlagChange._meta.fields]

    @admin.display(description=_("fields changed"))
    def changes(self, obj: FlagChange) -> str:
        return ", ".join(obj.changed_fields())

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
