"""FlagAdmin: edit flags in ZooKeeper.

The change form starts from what ZooKeeper holds (not the database row) and remembers the
znode version it showed; the save is refused if ZooKeeper moved on meanwhile. Every change
goes through :mod:`django_zkflags.services`. The list and the environments page are
mixins of their own modules.

No save loses what was typed. A save waits at most ``ZKFLAGS["ADMIN_WRITE_TIMEOUT"]`` for
ZooKeeper; when it is refused (ZooKeeper unreachable, a conflict, too large...), the same
form comes back, bound to what was typed, with the reason as its one error (and, for a
conflict, what ZooKeeper holds now beside each field). While ZooKeeper cannot be read, the
change page shows what this process last saw, read-only. A save that changes nothing
writes nothing: no ZooKeeper version, no audit row, no Django LogEntry.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import services
from ..client import time_budget
from ..exceptions import FlagWriteError, ZooKeeperUnavailable
from ..models import Flag
from ..rules import InvalidFlag
from . import offline
from .changelist import FlagListMixin
from .environments import EnvironmentsMixin
from .fleet import FleetMixin
from .forms import FlagForm
from .history import HistoryMixin
from .schedules import ScheduleMixin
from .tryit import TryItMixin

#: Request attributes that tell this request's forms how to behave (see get_form).
REFUSAL = "_zkflags_refusal"
READ_WAIT = "_zkflags_read_wait"
UNCHANGED = "_zkflags_unchanged"


#: Beyond ADMIN_WRITE_TIMEOUT, for the reads a page makes after a refused save.
BUDGET_SLACK = 0.5


def _budget(request: Any) -> float:
    """What a page may wait for ZooKeeper in all: a save about ADMIN_WRITE_TIMEOUT; a page
    that only reads, nothing while this process knows ZooKeeper is away."""
    if request.method == "POST":
        return offline.admin_write_timeout() + BUDGET_SLACK
    return offline.page_wait()


class FlagAdmin(
    FlagListMixin,
    HistoryMixin,
    FleetMixin,
    EnvironmentsMixin,
    ScheduleMixin,
    TryItMixin,
    admin.ModelAdmin,
):
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
        (
            _("Prerequisites"),
            {"fields": ("requires",), "description": _("Also on only when these are on.")},
        ),
        (_("Live configuration"), {"fields": ("value",)}),
        (_("Front ends"), {"fields": ("public",)}),
        (_("Environments"), {"fields": ("environments",)}),
        (
            _("ZooKeeper"),
            {"fields": ("zk_version", "created", "modified"), "classes": ("collapse",)},
        ),
    )

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("name", *fields) if obj is not None else fields

    def get_form(self, request: Any, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        """The form class for this request: it knows a save ZooKeeper refused (shown with
        what was typed) and how long a page may wait to read ZooKeeper."""
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(
            form.__name__,
            (form,),
            {
                "refusal": getattr(request, REFUSAL, None),
                "read_wait": getattr(request, READ_WAIT, None),
            },
        )

    # -- saving: everything goes through services ------------------------------------------

    def changeform_view(
        self, request: Any, object_id: Any = None, form_url: str = "", extra_context: Any = None
    ) -> Any:
        # Every ZooKeeper read of the page (the form, its history, schedules...) shares one
        # budget: a person waits about ADMIN_WRITE_TIMEOUT in all, not once per read.
        with time_budget(_budget(request)):
            return self._changeform_view_within_budget(request, object_id, form_url, extra_context)

    def history_view(self, request: Any, object_id: Any, extra_context: Any = None) -> Any:
        with time_budget(_budget(request)):
            return super().history_view(request, object_id, extra_context)

    def _changeform_view_within_budget(
        self, request: Any, object_id: Any, form_url: str, extra_context: Any
    ) -> Any:
        if request.method != "POST":
            # A page opened while this process knows ZooKeeper is away shows at once what
            # it last saw; otherwise it waits (a bounded time) to read ZooKeeper.
            setattr(request, READ_WAIT, offline.page_wait())
            return super().changeform_view(request, object_id, form_url, extra_context)
        try:
            # Before the form: its validation may read ZooKeeper (environment overrides).
            offline.wait_for_zookeeper(offline.admin_write_timeout())
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (FlagWriteError, InvalidFlag) as exc:
            # Nothing was saved (and Django's transaction rolled back): the same POST again,
            # the form showing why, with everything that was typed. It reads no ZooKeeper.
            setattr(request, REFUSAL, exc)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request: Any, obj: Flag, form: Any, change: bool) -> None:
        assert form.rule is not None
        audit = services.save_flag(
            form.rule,
            expected_version=form.cleaned_data.get("zk_version_seen") if change else None,
            actor=request.user,
            source="admin",
        )
        setattr(request, UNCHANGED, audit is None)
        row = Flag.objects.get(name=form.rule.name)
        obj.pk, obj.zk_version = row.pk, row.zk_version
        obj._state.adding = False

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        pass  # services mirrored the many-to-many rows with the flag

    def log_change(self, request: Any, obj: Any, message: Any) -> Any:
        if getattr(request, UNCHANGED, False):
            return None  # nothing was written: nothing to log
        return super().log_change(request, obj, message)

    def response_change(self, request: Any, obj: Any) -> Any:
        if not getattr(request, UNCHANGED, False):
            return super().response_change(request, obj)
        self.message_user(
            request,
            gettext(
                "Nothing changed: flag %(name)s already is as the form says (version "
                "%(version)s). Nothing was written."
            )
            % {"name": obj.name, "version": obj.zk_version},
            level=messages.INFO,
        )
        if "_continue" in request.POST:
            url = request.path
        elif "_addanother" in request.POST:
            url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_add")
        else:
            return self.response_post_save_change(request, obj)
        filters = {"preserved_filters": self.get_preserved_filters(request), "opts": self.opts}
        return HttpResponseRedirect(add_preserved_filters(filters, url))

    def render_change_form(self, request: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        form = context["adminform"].form if context.get("adminform") else None
        last_seen = getattr(form, "last_seen", None)
        stored_error = getattr(form, "stored_error", None)
        if last_seen:
            self.message_user(request, last_seen, level=messages.WARNING)
            context.update(
                show_save=False,
                show_save_and_continue=False,
                show_save_and_add_another=False,
                show_delete=False,
            )
        elif stored_error:
            self.message_user(
                request,
                gettext(
                    "This flag's znode in ZooKeeper is invalid (%(error)s): the form shows the "
                    "database copy, and saving replaces the znode."
                )
                % {"error": stored_error},
                level=messages.WARNING,
            )
        elif form is not None and not form.is_bound and offline.known_away():
            self.message_user(
                request,
                gettext("ZooKeeper is unreachable: saving will fail until it is back."),
                level=messages.WARNING,
            )
        return super().render_change_form(request, context, *args, **kwargs)

    # -- deleting ----------------------------------------------------------------------------

    def delete_model(self, request: Any, obj: Flag) -> None:
        services.delete_flag(
            obj.name, expected_version=obj.zk_version, actor=request.user, source="admin"
        )

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for obj in dependents_first(list(queryset)):
            self.delete_model(request, obj)

    def delete_view(self, request: Any, object_id: Any, extra_context: Any = None) -> Any:
        try:  # Django's delete_view runs in a transaction: a refusal rolls it back
            with time_budget(_budget(request)):
                if request.method == "POST":
                    offline.wait_for_zookeeper(offline.admin_write_timeout())
                return super().delete_view(request, object_id, extra_context)
        except FlagWriteError as exc:
            text = str(exc)
            if isinstance(exc, ZooKeeperUnavailable) and "nothing was" not in text.lower():
                text = gettext("%(error)s; nothing was deleted.") % {"error": text}
            self.message_user(request, text, level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


def dependents_first(flags: list[Flag]) -> list[Flag]:
    """``flags`` ordered so that a flag comes after every flag of the list that requires it
    (as their rows say): deleting a flag and the flags that require it together is then
    never refused for the order they were picked in. A cycle keeps the rest in order."""
    left = list(flags)
    ordered: list[Flag] = []
    while left:
        required = {name for flag in left for name in (flag.requires or ())}
        free = [flag for flag in left if flag.name not in required] or left[:1]
        ordered.extend(free)
        left = [flag for flag in left if flag not in free]
    return ordered
