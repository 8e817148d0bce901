"""The admin: edit flags in ZooKeeper, read their history.

The change form starts from what ZooKeeper holds (not the database row) and remembers the
znode version it showed; the save is refused if ZooKeeper moved on meanwhile.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import runtime, services
from .cache import store
from .models import Flag, FlagChange
from .rules import InvalidFlag, validate_environments_document
from .zk import FlagWriteError


class FlagForm(forms.ModelForm):
    zk_version_seen = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Flag
        fields = (
            "name",
            "note",
            "everyone",
            "percent",
            "superusers",
            "staff",
            "authenticated",
            "users",
            "groups",
            "value",
            "environments",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.zookeeper_error: str | None = None
        instance = self.instance
        if instance.pk is None or self.is_bound:
            return
        # Show what ZooKeeper holds, and remember its version for the save.
        try:
            doc, version = services.runtime.writer().read_flag(instance.name)
        except FlagWriteError as exc:
            self.zookeeper_error = str(exc)
            self.initial["zk_version_seen"] = instance.zk_version
            return
        if doc is None or "corrupt" in doc:
            self.initial["zk_version_seen"] = version
            return
        self.initial["zk_version_seen"] = version
        for key in ("note", "everyone", "superusers", "staff", "authenticated", "users", "groups"):
            self.initial[key] = doc.get(key)
        self.initial["value"] = doc.get("value")
        self.initial["environments"] = doc.get("environments") or {}
        percent = doc.get("percent")
        self.initial["percent"] = None if percent is None else Decimal(str(round(percent, 1)))


class EnvironmentsForm(forms.Form):
    """The environments document: parents and hosts pegged to an environment."""

    document = forms.JSONField(
        label=_("Environments"),
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField"}),
        help_text=_(
            '{"parents": {"production": null, "canary": "production"}, '
            '"hosts": {"web-7": "canary"}}. An environment applies its parents\' overrides, '
            "then its own; a pegged host resolves flags for its environment."
        ),
    )
    version_seen = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def clean_document(self) -> Any:
        try:
            return validate_environments_document(self.cleaned_data["document"])
        except InvalidFlag as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    form = FlagForm
    list_display = ("name", "rule_summary", "note", "zk_version", "modified")
    list_filter = ("everyone", "superusers", "staff", "authenticated")
    search_fields = ("name", "note")
    filter_horizontal = ("users", "groups")
    readonly_fields = ("zk_version", "created", "modified")
    actions = ("turn_on_for_everyone", "turn_off_for_everyone", "back_to_rules")
    change_form_template = "admin/django_zkflags/flag/change_form.html"
    change_list_template = "admin/django_zkflags/flag/change_list.html"
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

    # -- saving: database row, many-to-many, then one ZooKeeper write ----------------------

    def save_model(self, request: Any, obj: Flag, form: Any, change: bool) -> None:
        obj._zkflags_defer = True
        try:
            super().save_model(request, obj, form, change)
        finally:
            obj._zkflags_defer = False

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        form.instance._zkflags_defer = True
        try:
            super().save_related(request, form, formsets, change)
        finally:
            form.instance._zkflags_defer = False
        expected = form.cleaned_data.get("zk_version_seen") if change else None
        services.save_flag(
            form.instance,
            actor=request.user,
            user_ids=[u.pk for u in form.cleaned_data.get("users") or ()],
            group_ids=[g.pk for g in form.cleaned_data.get("groups") or ()],
            expected_version=expected,
            source="admin",
        )

    def delete_model(self, request: Any, obj: Flag) -> None:
        obj.delete(actor=request.user)

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for obj in queryset:
            obj.delete(actor=request.user)

    def changeform_view(
        self, request: Any, object_id: Any = None, form_url: str = "", extra_context: Any = None
    ) -> Any:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            obj = self.get_object(request, object_id)
            if obj is not None:
                extra_context["flag_history"] = FlagChange.objects.filter(flag_name=obj.name)[:50]
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

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        if request.method == "GET":
            self._report_status(request)
        try:
            return super().changelist_view(request, extra_context)
        except FlagWriteError as exc:  # from a bulk action or bulk delete
            self.message_user(request, str(exc), level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def get_urls(self) -> list[Any]:
        urls = [
            path(
                "environments/",
                self.admin_site.admin_view(self.environments_view),
                name="django_zkflags_environments",
            )
        ]
        return urls + super().get_urls()

    def environments_view(self, request: Any) -> Any:
        """Edit the environments document, versioned like a flag and audited."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_change = self.has_change_permission(request)
        writer = runtime.writer()
        if request.method == "POST":
            if not can_change:
                raise PermissionDenied
            form = EnvironmentsForm(request.POST)
            if form.is_valid():
                try:
                    result = writer.write_environments(
                        form.cleaned_data["document"], form.cleaned_data["version_seen"]
                    )
                except FlagWriteError as exc:
                    self.message_user(request, str(exc), level=messages.ERROR)
                    return HttpResponseRedirect(request.get_full_path())
                services.record(
                    result,
                    "created" if result.version == 0 else "changed",
                    request.user,
                    "admin",
                )
                self.message_user(request, _("Environments saved."))
                return HttpResponseRedirect(request.get_full_path())
        else:
            try:
                doc, version = writer.read_environments()
            except (FlagWriteError, InvalidFlag) as exc:
                self.message_user(request, str(exc), level=messages.ERROR)
                doc, version = {"parents": {}, "hosts": {}}, None
            form = EnvironmentsForm(initial={"document": doc, "version_seen": version})
        context = {
            **self.admin_site.each_context(request),
            "title": _("Environments"),
            "opts": self.model._meta,
            "form": form,
            "can_change": can_change,
            "this_process": runtime.status(),
            "history": FlagChange.objects.filter(flag_name="@environments")[:20],
        }
        return TemplateResponse(request, "admin/django_zkflags/environments.html", context)

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
        changes = services.set_everyone(queryset, everyone, actor=request.user)
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


@admin.register(FlagChange)
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
