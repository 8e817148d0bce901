"""The flag list: live rule summaries naming environment overrides, one-click toggles, plain
filters, the process's status, bulk actions.

Drawing the list reads this process's snapshot (``store.base``) and one page of rows: a
constant number of SQL queries per page whatever the number of flags or of their users
and groups, and no ZooKeeper read. The toggles are POST forms (CSRF-protected, for users
with the change permission) to ``<pk>/toggle/``; each is a versioned, audited write through
:func:`django_zkflags.services.toggle_flag` from the version the row was drawn with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect, QueryDict
from django.urls import path, reverse
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from .. import conf, runtime, services
from ..cache import store
from ..exceptions import FlagWriteError
from ..models import Flag
from ..rules import FlagRule, InvalidFlag, thaw_value
from ..snapshot import Snapshot

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object

#: The toggles of a row: POSTed value -> (``everyone``, button label, button title).
TOGGLES: dict[str, tuple[bool | None, Any, Any]] = {
    "on": (True, _("On"), _("Turn on for everyone")),
    "off": (False, _("Off"), _("Turn off for everyone")),
    "rules": (None, _("Rules"), _("Back to the rules (not set for everyone)")),
}

#: How long a toggle waits for this process to serve what it wrote, so that the list drawn
#: after the redirect shows it (the watch takes milliseconds; this only bounds a lag).
SERVED_WAIT = 2.0


# -- the live rule, with environment overrides ------------------------------------------------


def stored_rule(rule: FlagRule) -> FlagRule:
    """The rule as ZooKeeper stores it, before this process's environment overrides (a rule
    compiled for an environment keeps it; see FlagRule.for_environment)."""
    return rule.base


def override_summary(base: FlagRule, override: Mapping[str, Any]) -> str:
    """What an environment with only this override gets: the base rule with the override's
    fields applied, and its value when it overrides the value."""
    fields = thaw_value(override)
    doc = base.to_document()
    doc.pop("environments", None)
    try:
        text = FlagRule.from_document({**doc, **fields}).summary()
    except InvalidFlag:
        text = "invalid override"
    if "value" in fields:
        value = json.dumps(fields["value"], sort_keys=True)
        text += f", value {value if len(value) <= 40 else value[:39] + '…'}"
    return text


def live_summary(rule: FlagRule, snapshot: Snapshot) -> SafeString:
    """The base rule, each environment that overrides it, and, when this process's
    environment applies an override, what this process serves."""
    base = stored_rule(rule)
    parts = [format_html("{}", base.summary())]
    for env in sorted(base.environments):
        text = override_summary(base, base.environments[env])
        if env in snapshot.chain:
            parts.append(
                format_html(
                    '<strong title="{}">{}: {}</strong>',
                    _("This process's environment (%(env)s) applies this override")
                    % {"env": snapshot.environment},
                    env,
                    text,
                )
            )
        else:
            parts.append(format_html("{}: {}", env, text))
    summary = mark_safe(" · ".join(parts))  # each part escaped above
    if rule is not base:
        chain = " → ".join(snapshot.chain)
        summary = format_html(
            '{}<div class="zkflags-here" title="{}">{}</div>',
            summary,
            _("environments applied here, root first: %(chain)s") % {"chain": chain},
            _("this process (%(env)s) serves: %(rule)s")
            % {"env": snapshot.environment, "rule": rule.summary()},
        )
    return summary


# -- filters ----------------------------------------------------------------------------------


class PlainFilter(admin.SimpleListFilter):
    """A list filter whose heading is its title as written (not "By ...")."""

    template = "admin/django_zkflags/flag/filter.html"


class EveryoneFilter(PlainFilter):
    title = _("For everyone")
    parameter_name = "everyone"

    def lookups(self, request: Any, model_admin: Any) -> Any:
        return (("on", _("On")), ("off", _("Off")), ("rules", _("Decided by rules")))

    def queryset(self, request: Any, queryset: Any) -> Any:
        value = self.value()
        if value == "on":
            return queryset.filter(everyone=True)
        if value == "off":
            return queryset.filter(everyone=False)
        if value == "rules":
            return queryset.filter(everyone__isnull=True)
        return queryset


class RuleFilter(PlainFilter):
    """Flags whose base rule includes one kind of rule (as the admin's rows mirror it)."""

    title = _("Rule includes")
    parameter_name = "rule"

    LOOKUPS: Mapping[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {
        # value: (label, filter(), exclude())
        "superusers": (_("Superusers"), {"superusers": True}, {}),
        "staff": (_("Staff"), {"staff": True}, {}),
        "authenticated": (_("Authenticated users"), {"authenticated": True}, {}),
        "percent": (_("A percentage"), {"percent__gt": 0}, {}),
        "users": (_("Listed users"), {"users__isnull": False}, {}),
        "groups": (_("Listed groups"), {"groups__isnull": False}, {}),
        "environments": (_("Environment overrides"), {}, {"environments": {}}),
    }

    def lookups(self, request: Any, model_admin: Any) -> Any:
        return [(value, label) for value, (label, _f, _e) in self.LOOKUPS.items()]

    def queryset(self, request: Any, queryset: Any) -> Any:
        lookup = self.LOOKUPS.get(self.value() or "")
        if lookup is None:
            return queryset
        _label, include, exclude = lookup
        if include:
            queryset = queryset.filter(**include)
        if exclude:
            queryset = queryset.exclude(**exclude)
        return queryset.distinct() if self.value() in ("users", "groups") else queryset


# -- the list ---------------------------------------------------------------------------------


class FlagListMixin(AdminBase):
    """The change list of FlagAdmin."""

    list_display = ("name", "rule_summary", "toggles", "note", "zk_version", "modified")
    list_filter = (EveryoneFilter, RuleFilter)
    list_per_page = 100
    search_fields = ("name", "note")
    actions = ("turn_on_for_everyone", "turn_off_for_everyone", "back_to_rules")
    change_list_template = "admin/django_zkflags/flag/change_list.html"

    def get_urls(self) -> list[Any]:
        urls = [
            path(
                "declared/create/",
                self.admin_site.admin_view(self.create_declared_view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_create_declared",
            ),
            path(
                "<path:object_id>/toggle/",
                self.admin_site.admin_view(self.toggle_view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_toggle",
            ),
        ]
        return urls + super().get_urls()

    def get_list_display(self, request: Any) -> Any:
        display = list(super().get_list_display(request))
        if "toggles" in display and not self.has_change_permission(request):
            display.remove("toggles")  # no buttons for those who cannot use them
        return display

    @admin.display(description=_("rule (live)"))
    def rule_summary(self, obj: Flag) -> str:
        snapshot = store.base
        rule = snapshot.flags.get(obj.name)
        if rule is None:
            return format_html('<span title="{}">—</span>', _("not in this process's snapshot"))
        summary = live_summary(rule, snapshot)
        if rule.version != obj.zk_version:
            return format_html(
                '{} <span title="{}">⚠</span>',
                summary,
                _("ZooKeeper is at version %(zk)s, this row mirrors %(row)s")
                % {"zk": rule.version, "row": obj.zk_version},
            )
        return summary

    @admin.display(description=_("for everyone"))
    def toggles(self, obj: Flag) -> str:
        """The row's three buttons and the version they start from, all of the row's toggle
        form (drawn outside the list's own form by change_list.html: forms do not nest).

        That version, and the state shown pressed, are what this process serves (the live
        rule column), else the row's: a flag changed since by any means is refused."""
        rule = store.base.flags.get(obj.name)
        version, state = (
            (rule.version, stored_rule(rule).everyone)
            if rule is not None and rule.version is not None
            else (obj.zk_version, obj.everyone)
        )
        if version is None:
            return format_html(
                '<span title="{}">—</span>', _("Not in ZooKeeper: open the flag and save it.")
            )
        form = f"zkflags-toggle-{obj.pk}"
        html = [
            format_html(
                '<input type="hidden" form="{}" name="name" value="{}">'
                '<input type="hidden" form="{}" name="version" value="{}">',
                form,
                obj.name,
                form,
                version,
            )
        ]
        for value, (everyone, label, title) in TOGGLES.items():
            pressed = state is everyone
            html.append(  # a plain f-string: 300 buttons a page (format_html costs 3 times more)
                f'<button type="submit" form="{form}" name="everyone" value="{value}" '
                f'class="zkflags-toggle" title="{escape(title)}" '
                f'aria-pressed="{"true" if pressed else "false"}"{" disabled" if pressed else ""}>'
                f"{escape(label)}</button>"
            )
        return mark_safe("".join(html))  # escaped above

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        if request.method == "GET":
            self._report_status(request)
        extra_context = {
            **(extra_context or {}),
            "zkflags_toggles": self.has_change_permission(request),
            "zkflags_list_query": request.GET.urlencode(),
            "zkflags_declared": self._declared_missing(),
            "zkflags_can_add": self.has_add_permission(request),
        }
        try:
            return super().changelist_view(request, extra_context)
        except FlagWriteError as exc:  # from a bulk action or bulk delete
            self.message_user(request, str(exc), level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    # -- declared in settings, not in ZooKeeper --------------------------------------------

    def _declared_missing(self) -> list[FlagRule]:
        """Flags declared in ZKFLAGS["FLAGS"] that ZooKeeper does not hold (this process's
        snapshot, as the list's live column): they answer their declared default."""
        held = store.base.flags
        return [rule for name, rule in sorted(conf.declared_flags().items()) if name not in held]

    def create_declared_view(self, request: Any) -> Any:
        """POST ``name``: create a declared flag in ZooKeeper as declared (a versioned
        create through services: refused if it exists by now)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_add_permission(request):
            raise PermissionDenied
        back = self._list_url(request.POST.get("_changelist_filters", ""))
        name = request.POST.get("name", "")
        rule = conf.declared_flags().get(name)
        if rule is None:
            self.message_user(
                request,
                _("“%(name)s” is not declared in settings.") % {"name": name},
                messages.ERROR,
            )
            return HttpResponseRedirect(back)
        try:
            change = services.save_flag(
                rule, expected_version=None, actor=request.user, source="admin (declared)"
            )
        except (FlagWriteError, InvalidFlag) as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return HttpResponseRedirect(back)
        version = change.zk_version if change is not None else 0
        _wait_served(name, version)
        self.message_user(
            request,
            _("“%(name)s” created in ZooKeeper as declared: %(rule)s (version %(version)s)")
            % {"name": name, "rule": rule.summary(), "version": version},
            level=messages.SUCCESS,
        )
        return HttpResponseRedirect(back)

    # -- one-click toggles -----------------------------------------------------------------

    def toggle_view(self, request: Any, object_id: str) -> Any:
        """POST ``everyone`` (on/off/rules), ``version`` (the znode version the row was
        drawn with) and ``name``; back to the list as it was filtered, with what
        happened. A row deleted since is refused like any other change made meanwhile."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        back = self._list_url(request.POST.get("_changelist_filters", ""))
        name = obj.name if obj is not None else request.POST.get("name", "")
        choice = TOGGLES.get(request.POST.get("everyone", ""))
        try:
            version = int(request.POST.get("version", ""))
        except ValueError:
            version = None
        if choice is None or version is None or not name:
            self.message_user(
                request,
                _("Not toggled: %(name)s is not in ZooKeeper yet, or the form was incomplete.")
                % {"name": name or object_id},
                level=messages.ERROR,
            )
            return HttpResponseRedirect(back)
        everyone = choice[0]
        try:
            change = services.toggle_flag(
                name, everyone, expected_version=version, actor=request.user, source="admin toggle"
            )
        except (FlagWriteError, InvalidFlag) as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return HttpResponseRedirect(back)
        if change is None:
            self.message_user(
                request,
                _("“%(name)s” was already %(state)s (version %(version)s); nothing was written.")
                % {"name": name, "state": _state(everyone), "version": version},
                level=messages.INFO,
            )
            return HttpResponseRedirect(back)
        _wait_served(name, change.zk_version)
        rule = FlagRule.from_document(change.after, name=name) if change.after else None
        self.message_user(  # quoted: the admin capitalises a message's first letter
            request,
            _("“%(name)s” %(what)s (version %(version)s)")
            % {"name": name, "what": _toggled(everyone, rule), "version": change.zk_version},
            level=messages.SUCCESS,
        )
        return HttpResponseRedirect(back)

    def _list_url(self, query: str) -> str:
        """The list's URL with its filters, search and page (re-encoded: only a query)."""
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        query = QueryDict(query).urlencode()
        return f"{url}?{query}" if query else url

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
                    "Invalid data in ZooKeeper for %(names)s; serving their last good values "
                    "(off, for a flag whose prerequisite is missing or in a cycle). Run "
                    "'manage.py zkflags check'."
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


def _state(everyone: bool | None) -> Any:
    if everyone is True:
        return _("on for everyone")
    if everyone is False:
        return _("off for everyone")
    return _("decided by its rules")


def _toggled(everyone: bool | None, rule: FlagRule | None) -> Any:
    if everyone is True:
        return _("turned on for everyone")
    if everyone is False:
        return _("turned off for everyone")
    return _("back to its rules: %(rule)s") % {"rule": rule.summary() if rule else "—"}


def _wait_served(name: str, version: int | None) -> None:
    """Wait (bounded) until this process serves ``name`` at ``version`` or later, when it
    watches ZooKeeper: the list drawn after the toggle then shows the toggle."""
    if version is None or not runtime.status().get("watching"):
        return
    deadline = time.monotonic() + SERVED_WAIT
    while time.monotonic() < deadline:
        rule = store.base.flags.get(name)
        if rule is not None and rule.version is not None and rule.version >= version:
            return
        time.sleep(0.005)
