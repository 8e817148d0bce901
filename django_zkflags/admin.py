"""The admin: edit flags in ZooKeeper, read their history.

The change form starts from what ZooKeeper holds (not the database row) and remembers the
znode version it showed; the save is refused if ZooKeeper moved on meanwhile. Every change
goes through :mod:`django_zkflags.services`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms.fields import InvalidJSONInput
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import runtime, services
from .cache import store
from .exceptions import FlagWriteError
from .models import Flag, FlagChange, percent_from_row
from .rules import MAX_VALUE_DEPTH, FlagRule, InvalidFlag, json_text_too_deep
from .writer import ENVIRONMENTS


class BoundedJSONField(forms.JSONField):
    """A JSON field that refuses text nesting lists and objects deeper than ``max_depth``
    before parsing it: ``json.loads`` of a few hundred levels, on the admin's deep stack,
    raises RecursionError (a 500), and so does rendering it back into the form."""

    max_depth = MAX_VALUE_DEPTH

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and json_text_too_deep(value, self.max_depth):
            raise ValidationError(
                _(
                    "Nested too deeply: a value may nest lists and objects at most "
                    "%(depth)d levels deep."
                ),
                code="too_deep",
                params={"depth": MAX_VALUE_DEPTH},
            )
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        if isinstance(data, str) and json_text_too_deep(data, self.max_depth):
            return InvalidJSONInput(data)  # shown back as typed, never parsed
        return super().bound_data(data, initial)


class FlagForm(forms.ModelForm):
    """Starts from what ZooKeeper holds (not the row) and remembers the znode version it
    showed; :meth:`clean` turns the input into the rule that will be written."""

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
        field_classes = {"value": BoundedJSONField, "environments": BoundedJSONField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # {"env": {"value": ...}}: an override's value sits two levels down.
        self.fields["environments"].max_depth = MAX_VALUE_DEPTH + 2  # type: ignore[attr-defined]
        self.zookeeper_error: str | None = None
        self.rule: FlagRule | None = None
        instance = self.instance
        if instance.pk is None or self.is_bound:
            return
        try:
            stored = services.read_flag(instance.name)
        except FlagWriteError as exc:
            self.zookeeper_error = str(exc)
            self.initial["zk_version_seen"] = instance.zk_version
            return
        self.initial["zk_version_seen"] = stored.version
        if stored.rule is not None:
            self.initial.update(Flag.values_from_rule(stored.rule))
            self.initial["users"] = sorted(stored.rule.users)
            self.initial["groups"] = sorted(stored.rule.groups)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        name = cleaned.get("name") or self.instance.name
        try:
            self.rule = FlagRule(
                name,
                everyone=cleaned.get("everyone"),
                percent=percent_from_row(cleaned.get("percent")),
                superusers=bool(cleaned.get("superusers")),
                staff=bool(cleaned.get("staff")),
                authenticated=bool(cleaned.get("authenticated")),
                users=[u.pk for u in cleaned.get("users") or ()],
                groups=[g.pk for g in cleaned.get("groups") or ()],
                note=cleaned.get("note") or "",
                value=cleaned.get("value"),
                environments=cleaned.get("environments") or None,
            )
        except InvalidFlag as exc:
            raise forms.ValidationError(str(exc)) from None
        try:
            services.refuse_undefined_environments(self.rule)
        except InvalidFlag as exc:
            self.add_error("environments", str(exc))
        return cleaned


class EnvironmentsForm(forms.Form):
    """The environments document: parents and hosts pegged to an environment."""

    document = BoundedJSONField(
        label=_("Environments"),
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField"}),
        help_text=_(
            '{"parents": {"production": null, "canary": "production"}, '
            '"hosts": {"web-7": "canary"}}. An environment applies its parents\' overrides, '
            "then its own; a pegged host resolves flags for its environment."
        ),
    )
    version_seen = forms.IntegerField(required=False, widget=forms.HiddenInput)


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
        if request.method == "POST":
            if not can_change:
                raise PermissionDenied
            form = EnvironmentsForm(request.POST)
            if form.is_valid():
                try:
                    services.save_environments(
                        form.cleaned_data["document"],
                        expected_version=form.cleaned_data["version_seen"],
                        actor=request.user,
                        source="admin",
                    )
                except InvalidFlag as exc:
                    form.add_error("document", str(exc))  # shown with what was typed
                except FlagWriteError as exc:
                    self.message_user(request, str(exc), level=messages.ERROR)
                    return HttpResponseRedirect(request.get_full_path())
                else:
                    self.message_user(request, _("Environments saved."))
                    return HttpResponseRedirect(request.get_full_path())
        else:
            try:
                stored = services.read_environments()
                doc, version = stored.document, stored.version
                if stored.error is not None:
                    self.message_user(
                        request,
                        _(
                            "The environments document in ZooKeeper is invalid (%s); saving replaces it."
                        )
                        % stored.error,
                        level=messages.WARNING,
                    )
            except FlagWriteError as exc:
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
            "history": FlagChange.objects.filter(flag_name=ENVIRONMENTS)[:20],
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
