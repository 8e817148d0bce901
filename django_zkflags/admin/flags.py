"""FlagAdmin: edit flags in ZooKeeper.

The change form starts from what ZooKeeper holds (not the database row) and remembers the
znode version it showed; the save is refused if ZooKeeper moved on meanwhile. Every change
goes through :mod:`django_zkflags.services`. The list and the environments page are
mixins of their own modules.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.utils.translation import gettext_lazy as _

from .. import services
from ..exceptions import FlagWriteError
from ..models import Flag
from .changelist import FlagListMixin
from .environments import EnvironmentsMixin
from .fleet import FleetMixin
from .forms import FlagForm
from .history import HistoryMixin


class FlagAdmin(FlagListMixin, HistoryMixin, FleetMixin, EnvironmentsMixin, admin.ModelAdmin):
    filter_horizontal = ("users", "groups")
    readonly_fields = ("zk_version", "created", "modified")
    change_form_template = "admin/django_zkflags/flag/change_form.html"
    form = FlagForm
    fieldsets = (
        (None, {"fields": ("name", "note", "zk_version_seen")}),
        (_("For everyone"), {"fields": ("everyone",)}),
        (
            _("Rules (when not set for everyone)"),
            {
                "fields": ("superusers", "staff", "authenticated", "percent", "users", "groups"),
            },
        ),
        (_("Live configuration"), {"fields": ("value",)}),
        (_("Environments"), {"fields": ("environments",)}),
        (
            _("ZooKeeper"),
            {"fields": ("zk_version", "created", "modified"), "classes": ("collapse",)},
        ),
    )

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("name", *fields) if obj is not None else fields

    # -- saving: everything goes through services ------------------------------------------

    def save_model(self, request: Any, obj: Flag, form: Any, change: bool) -> None:
        assert form.rule is not None
        services.save_flag(
            form.rule,
            expected_version=form.cleaned_data.get("zk_version_seen") if change else None,
            actor=request.user,
            source="admin",
        )
        row = Flag.objects.get(name=form.rule.name)
        obj.pk, obj.zk_version = row.pk, row.zk_version
        obj._state.adding = False

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        pass  # services mirrored the many-to-many rows with the flag

    def delete_model(self, request: Any, obj: Flag) -> None:
        services.delete_flag(
            obj.name, expected_version=obj.zk_version, actor=request.user, source="admin"
        )

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    def changeform_view(
        self, request: Any, object_id: Any = None, form_url: str = "", extra_context: Any = None
    ) -> Any:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except FlagWriteError as exc:
            # The admin's transaction has rolled back: the database is as it was.
            self.message_user(request, str(exc), level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def render_change_form(self, request: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        form = context.get("adminform").form if context.get("adminform") else None
        if form is not None and getattr(form, "zookeeper_error", None):
            self.message_user(
                request,
                _(
                    "ZooKeeper is unreachable; showing the database copy, which may be stale. "
                    "Saving will fail until ZooKeeper is back. (%s)"
                )
                % form.zookeeper_error,
                level=messages.WARNING,
            )
        return super().render_change_form(request, context, *args, **kwargs)

    def delete_view(self, request: Any, object_id: Any, extra_context: Any = None) -> Any:
        try:  # Django's delete_view runs in a transaction: a refusal rolls it back
            return super().delete_view(request, object_id, extra_context)
        except FlagWriteError as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
