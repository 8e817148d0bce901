"""Scheduled changes and stepped rollouts on the admin's flag page (see docs/steward.md).

The change page shows the flag's schedules (pending, and refused ones with the reason),
its rollout, and the forms to schedule a change, cancel one, start a rollout and pause,
resume or abort it (``flag/schedules.html``, included by the change form; the same panel
is a page of its own at ``<id>/schedules/``). They are stored in ZooKeeper
(:mod:`django_zkflags.schedules`) and run once by the steward, audited with source
"schedule" and the person who set them.

Every action is a POST (CSRF-checked by the admin site) that needs the change permission;
seeing the panel needs the view permission. A refused request draws the panel again with
what was typed and why; a done one goes back to the change page.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import schedules
from ..exceptions import FlagWriteError, ZooKeeperUnavailable
from ..rules import InvalidFlag
from ..schedules import HALTED, IN_PROGRESS, PAUSED, RUNNING

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object

CHANGES = (
    ("on", gettext_lazy("on for everyone")),
    ("off", gettext_lazy("off for everyone")),
    ("percent", gettext_lazy("the rules at a percentage")),
    ("value", gettext_lazy("a new value (JSON)")),
)


class ScheduleForm(forms.Form):
    at = forms.CharField(
        label=gettext_lazy("When"),
        help_text=gettext_lazy(
            "2026-12-24T23:00 (in the time zone shown), with +01:00 or Z for another, or "
            "+30m / +2h from now."
        ),
    )
    change = forms.ChoiceField(label=gettext_lazy("Change"), choices=CHANGES)
    percent = forms.FloatField(label=gettext_lazy("Percent"), required=False)
    value = forms.CharField(label=gettext_lazy("Value"), required=False)
    force = forms.BooleanField(
        label=gettext_lazy("Even if the flag changes meanwhile"),
        required=False,
        help_text=gettext_lazy(
            "Without it, the steward refuses (and keeps the reason) if someone changes the "
            "flag after this schedule is set."
        ),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if data.get("at"):
                data["when"] = schedules.parse_time(data["at"], tz=timezone.get_current_timezone())
            kind = data.get("change")
            if kind in ("on", "off"):
                data["what"] = schedules.on_change(kind == "on")
            elif kind == "percent":
                if data.get("percent") is None:
                    raise forms.ValidationError(_("Give the percentage."))
                data["what"] = schedules.percent_change(data["percent"])
            elif kind == "value":
                try:
                    data["what"] = schedules.value_change(json.loads(data.get("value") or ""))
                except (ValueError, RecursionError) as exc:
                    raise forms.ValidationError(_("The value must be JSON: %s") % exc) from None
        except InvalidFlag as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class RolloutForm(forms.Form):
    steps = forms.CharField(
        label=gettext_lazy("Steps (percent)"), initial="1,5,25,50,100", max_length=200
    )
    every = forms.CharField(label=gettext_lazy("Every"), initial="30m", max_length=20)
    start = forms.CharField(
        label=gettext_lazy("First step"),
        required=False,
        help_text=gettext_lazy("Empty: now. Same forms as 'When'."),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if data.get("steps"):
                data["percents"] = schedules.parse_steps(data["steps"])
            if data.get("every"):
                data["seconds"] = schedules.parse_duration(data["every"])
            data["first"] = (
                schedules.parse_time(data["start"], tz=timezone.get_current_timezone())
                if data.get("start")
                else None
            )
        except InvalidFlag as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


ROLLOUT_ACTIONS = ("pause", "resume", "abort")


class ScheduleMixin(AdminBase):
    """Adds the schedules panel to FlagAdmin's change page, and its POST views."""

    def get_urls(self) -> list[Any]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        view = self.admin_site.admin_view
        urls = [
            path(
                "<path:object_id>/schedules/", view(self.schedules_view), name=f"{prefix}_schedules"
            ),
            path(
                "<path:object_id>/schedules/add/",
                view(self.schedule_add_view),
                name=f"{prefix}_schedule_add",
            ),
            path(
                "<path:object_id>/schedules/<str:schedule_id>/cancel/",
                view(self.schedule_cancel_view),
                name=f"{prefix}_schedule_cancel",
            ),
            path(
                "<path:object_id>/rollout/",
                view(self.rollout_start_view),
                name=f"{prefix}_rollout_start",
            ),
            path(
                "<path:object_id>/rollout/<str:action>/",
                view(self.rollout_action_view),
                name=f"{prefix}_rollout_action",
            ),
        ]
        return urls + super().get_urls()

    def render_change_form(
        self,
        request: Any,
        context: Any,
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None and not add:
            context["schedule_panel"] = self.schedule_panel(request, obj)
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    # -- the panel ----------------------------------------------------------------------------

    def schedule_panel(
        self,
        request: Any,
        obj: Any,
        schedule_form: ScheduleForm | None = None,
        rollout_form: RolloutForm | None = None,
    ) -> dict[str, Any]:
        """What flag/schedules.html draws. A ZooKeeper that cannot be read is said, not
        raised."""
        panel: dict[str, Any] = {
            "flag": obj,
            "can_change": self.has_change_permission(request, obj),
            "time_zone": timezone.get_current_timezone_name(),
            "schedule_form": schedule_form or ScheduleForm(),
            "rollout_form": rollout_form or RolloutForm(),
            "add_url": self._schedule_url("schedule_add", obj.pk),
            "rollout_url": self._schedule_url("rollout_start", obj.pk),
            "page_url": self._schedule_url("schedules", obj.pk),
            "schedules": [],
            "rollout": None,
            "error": None,
        }
        try:
            store = schedules.store()
            found, _errors = store.schedules()
            rollout = store.rollout(obj.name)
        except ZooKeeperUnavailable:
            # The page says once that ZooKeeper is unreachable; the panel only what it lacks.
            panel["error"] = _("The schedules cannot be read until ZooKeeper answers.")
            return panel
        except (FlagWriteError, InvalidFlag) as exc:
            panel["error"] = str(exc)
            return panel
        panel["schedules"] = [
            {
                "schedule": schedule,
                "cancel_url": self._schedule_url("schedule_cancel", obj.pk, schedule.id)
                if schedule.rollout is None or not schedule.pending
                else None,
            }
            for schedule in found
            if schedule.flag == obj.name
        ]
        if rollout is not None:
            panel["rollout"] = {
                "rollout": rollout,
                "steps": [
                    {"percent": p, "done": i < rollout.next, "next": i == rollout.next}
                    for i, p in enumerate(rollout.steps)
                ],
                "in_progress": rollout.state in IN_PROGRESS,
                "actions": [
                    (action, self._schedule_url("rollout_action", obj.pk, action))
                    for action in (
                        ("pause", "abort")
                        if rollout.state == RUNNING
                        else ("resume", "abort")
                        if rollout.state in (PAUSED, HALTED)
                        else ()
                    )
                ],
            }
        return panel

    def schedules_view(self, request: Any, object_id: Any) -> Any:
        """The panel as a page of its own (GET)."""
        obj = self._flag(request, object_id, change=False)
        return self._panel_page(request, obj)

    def _panel_page(self, request: Any, obj: Any, status: int = 200, **forms_: Any) -> Any:
        context = {
            **self.admin_site.each_context(request),
            "title": _("Schedules of flag %s") % obj.name,
            "subtitle": None,
            "opts": self.opts,
            "original": obj,
            "change_url": self._schedule_url("change", obj.pk),
            "schedule_panel": self.schedule_panel(request, obj, **forms_),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/django_zkflags/flag/schedules_page.html", context, status=status
        )

    # -- actions (POST, change permission) -----------------------------------------------------

    def schedule_add_view(self, request: Any, object_id: Any) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self._flag(request, object_id, change=True)
        form = ScheduleForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                created = schedules.schedule_change(
                    obj.name,
                    data["when"],
                    data["what"],
                    actor=request.user,
                    source="admin",
                    force=bool(data.get("force")),
                )
            except (FlagWriteError, InvalidFlag) as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    _("Scheduled %(what)s for %(when)s (%(id)s).")
                    % {
                        "what": created.describe(),
                        "when": timezone.localtime(created.at).strftime("%Y-%m-%d %H:%M:%S %Z"),
                        "id": created.id,
                    },
                    level=messages.SUCCESS,
                )
                return self._back(obj)
        return self._panel_page(request, obj, status=400, schedule_form=form)

    def schedule_cancel_view(self, request: Any, object_id: Any, schedule_id: str) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self._flag(request, object_id, change=True)
        try:
            found = schedules.store().schedule(schedule_id)
            if found is None or found.flag != obj.name:
                raise schedules.ScheduleError(_("No schedule %s of this flag.") % schedule_id)
            cancelled = schedules.cancel_schedule(schedule_id)
        except (FlagWriteError, InvalidFlag) as exc:
            self.message_user(request, _("Not cancelled: %s") % exc, level=messages.ERROR)
        else:
            self.message_user(
                request,
                _("Cancelled the schedule %(id)s (%(what)s).")
                % {"id": cancelled.id, "what": cancelled.describe()},
                level=messages.SUCCESS,
            )
        return self._back(obj)

    def rollout_start_view(self, request: Any, object_id: Any) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self._flag(request, object_id, change=True)
        form = RolloutForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                rollout, steps = schedules.start_rollout(
                    obj.name,
                    data["percents"],
                    data["seconds"],
                    start=data["first"],
                    actor=request.user,
                    source="admin",
                )
            except (FlagWriteError, InvalidFlag) as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    _("Rollout started: %(n)d steps, the first %(when)s.")
                    % {
                        "n": len(steps),
                        "when": timezone.localtime(steps[0].at).strftime("%Y-%m-%d %H:%M:%S %Z"),
                    },
                    level=messages.SUCCESS,
                )
                return self._back(obj)
        return self._panel_page(request, obj, status=400, rollout_form=form)

    def rollout_action_view(self, request: Any, object_id: Any, action: str) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self._flag(request, object_id, change=True)
        if action not in ROLLOUT_ACTIONS:
            self.message_user(request, _("No such rollout action."), level=messages.ERROR)
            return self._back(obj)
        try:
            if action == "pause":
                schedules.pause_rollout(obj.name)
            elif action == "resume":
                schedules.resume_rollout(obj.name, actor=request.user, source="admin")
            else:
                schedules.abort_rollout(obj.name)
        except (FlagWriteError, InvalidFlag) as exc:
            self.message_user(request, _("Not done: %s") % exc, level=messages.ERROR)
        else:
            done = {"pause": _("paused"), "resume": _("resumed"), "abort": _("aborted")}[action]
            self.message_user(
                request, _("Rollout of %(name)s %(done)s.") % {"name": obj.name, "done": done}
            )
        return self._back(obj)

    # -- plumbing -----------------------------------------------------------------------------

    def _flag(self, request: Any, object_id: Any, *, change: bool) -> Any:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(_("No such flag."))
        allowed = (
            self.has_change_permission(request, obj)
            if change
            else self.has_view_or_change_permission(request, obj)
        )
        if not allowed:
            raise PermissionDenied
        return obj

    def _back(self, obj: Any) -> Any:
        return HttpResponseRedirect(self._schedule_url("change", obj.pk) + "#schedules")

    def _schedule_url(self, view: str, *args: Any) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_{view}",
            args=args,
            current_app=self.admin_site.name,
        )
