"""The flag list: live rule summaries, the process's status, bulk actions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .. import runtime, services
from ..cache import store
from ..exceptions import FlagWriteError
from ..models import Flag

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object


class FlagListMixin(AdminBase):
    """The change list of FlagAdmin."""

    list_display = ("name", "rule_summary", "note", "zk_version", "modified")
    list_filter = ("everyone", "superusers", "staff", "authenticated")
    search_fields = ("name", "note")
    actions = ("turn_on_for_everyone", "turn_off_for_everyone", "back_to_rules")
    change_list_template = "admin/django_zkflags/flag/change_list.html"

    @admin.display(description=_("rule (live)"))
    def rule_summary(self, obj: Flag) -> str:
        rule = store.base.flags.get(obj.name)
        if rule is None:
            return format_html('<span title="{}">—</span>', _("not in this process's snapshot"))
        if rule.version != obj.zk_version:
            return format_html(
                '{} <span title="{}">⚠</span>',
                rule.summary(),
                _("ZooKeeper is at version %(zk)s, this row mirrors %(row)s")
                % {"zk": rule.version, "row": obj.zk_version},
            )
        return rule.summary()

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        if request.method == "GET":
            self._report_status(request)
        try:
            return super().changelist_view(request, extra_context)
        except FlagWriteError as exc:  # from a bulk action or bulk delete
            self.message_user(request, str(exc), level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def _report_status(self, request: Any) -> None:
        """Say on the list page when this process is not serving what ZooKeeper holds."""
        status = runtime.status()
        if status.get("watching") and not status.get("connected"):
            self.message_user(
                request,
                _(
                    "Not connected to ZooKeeper (%(hosts)s): every process serves the last "
                    "values it has; saving will fail until ZooKeeper is back."
                )
                % {"hosts": status.get("hosts")},
                level=messages.WARNING,
            )
        if status.get("last_error"):
            self.message_user(
                request,
                _(
                    "ZooKeeper holds an unreadable snapshot; serving the last good one (%(e)s). "
                    "Run 'manage.py zkflags repair'."
                )
                % {"e": status["last_error"]},
                level=messages.WARNING,
            )
        invalid = status.get("invalid_flags") or {}
        if invalid:
            self.message_user(
                request,
                _(
                    "Invalid data in ZooKeeper for %(names)s; serving their last good values. "
                    "Run 'manage.py zkflags check'."
                )
                % {"names": ", ".join(sorted(invalid))},
                level=messages.WARNING,
            )

    # -- bulk actions ----------------------------------------------------------------------

    def _set_everyone(self, request: Any, queryset: Any, everyone: bool | None, label: str) -> None:
        names = [flag.name for flag in queryset]
        changes = services.set_everyone(names, everyone, actor=request.user, source="admin action")
        self.message_user(
            request, _("%(n)d flag(s) %(what)s.") % {"n": len(changes), "what": label}
        )

    @admin.action(description=_("Turn on for everyone"), permissions=["change"])
    def turn_on_for_everyone(self, request: Any, queryset: Any) -> None:
        self._set_everyone(request, queryset, True, _("turned on for everyone"))

    @admin.action(description=_("Turn off for everyone"), permissions=["change"])
    def turn_off_for_everyone(self, request: Any, queryset: Any) -> None:
        self._set_everyone(request, queryset, False, _("turned off for everyone"))

    @admin.action(description=_("Back to rules"), permissions=["change"])
    def back_to_rules(self, request: Any, queryset: Any) -> None:
        self._set_everyone(request, queryset, None, _("back to their rules"))
