"""The audit log in the admin: read-only, every change with what it changed (a diff per
field, users and groups by name), times in the admin's one time zone, links to the flag
and to the deleted flags."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.functional import lazy
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import services
from ..diff import FieldChange, diff_documents
from ..models import Flag, FlagChange
from .history import local, time_zone_name


def _when_label() -> str:
    return gettext("when (%s)") % time_zone_name()


class FlagChangeAdmin(admin.ModelAdmin):
    list_display = ("when", "flag", "action", "who", "diff")
    list_display_links = ("when",)
    list_filter = ("action", "source")
    search_fields = ("flag_name", "username")
    date_hierarchy = "at"
    fields = (
        "flag_name",
        "action",
        "at",
        "username",
        "user",
        "source",
        "zk_version",
        "diff",
        "before",
        "after",
        "change_id",
    )
    readonly_fields = fields

    @admin.display(description=lazy(_when_label, str)(), ordering="at")
    def when(self, obj: FlagChange) -> str:
        return f"{local(obj.at):%Y-%m-%d %H:%M:%S}"

    @admin.display(description=_("flag (version)"), ordering="flag_name")
    def flag(self, obj: FlagChange) -> str:
        """The flag, linked while it exists, and the ZooKeeper version the change left."""
        version = "" if obj.zk_version is None else f" v{obj.zk_version}"
        pk = getattr(obj, "_zk_flag_pk", None)
        if pk is None:
            return f"{obj.flag_name}{version}"
        url = reverse(
            "admin:django_zkflags_flag_change", args=[pk], current_app=self.admin_site.name
        )
        return format_html('<a href="{}">{}</a>{}', url, obj.flag_name, version)

    @admin.display(description=_("who (source)"), ordering="username")
    def who(self, obj: FlagChange) -> str:
        return f"{obj.username or gettext('system')} ({obj.source or '—'})"

    @admin.display(description=_("what changed"))
    def diff(self, obj: FlagChange) -> str:
        lines: list[FieldChange] | None = getattr(obj, "_zk_diff", None)
        if lines is None:  # one row (its own page): name its users and groups
            names = services.member_names([obj.before, obj.after])
            lines = diff_documents(obj.before, obj.after, names=names)
        if not lines:
            return "—"
        return format_html_join(
            "", '<div style="overflow-wrap:anywhere">{}</div>', ((str(line),) for line in lines)
        )

    def get_changelist_instance(self, request: Any) -> Any:
        """The page's rows with their diffs, users and groups named in two queries, and
        the flags that still exist (for links) in one."""
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        names = services.member_names(doc for row in rows for doc in (row.before, row.after))
        flags = dict(
            Flag.objects.filter(name__in={row.flag_name for row in rows}).values_list("name", "pk")
        )
        for row in rows:
            row._zk_diff = diff_documents(row.before, row.after, names=names)
            row._zk_flag_pk = flags.get(row.flag_name)
        return changelist

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        extra = {
            "history_time_zone": time_zone_name(),
            "deleted_flags_url": self._deleted_flags_url(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def _deleted_flags_url(self) -> str | None:
        try:
            return reverse("admin:django_zkflags_flag_deleted", current_app=self.admin_site.name)
        except NoReverseMatch:
            return None

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
