"""A flag's history in the admin, from the audit log: on its change page and behind
Django's "History" button (newest first, a diff per change, who, when, from where), with
"restore this version" on each change; and the deleted flags, restorable.

Restores go through :mod:`django_zkflags.services` like every change: a new versioned
write from the version the page showed (refused if the flag moved since), audited. They
are POSTs (CSRF-checked by the admin site) that need the change permission (the add
permission for a deleted flag); viewing needs the view permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from .. import services
from ..diff import FieldChange, diff_documents
from ..exceptions import FlagConflict, FlagWriteError
from ..models import Flag, FlagChange
from ..rules import FlagRule, InvalidFlag

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object

#: Changes shown on the change page (the History page shows them all, a page at a time).
CHANGE_PAGE_ROWS = 20
HISTORY_PAGE_ROWS = 50
DELETED_PAGE_ROWS = 50


@dataclass
class HistoryEntry:
    """One audit row as the history shows it."""

    change: FlagChange
    diff: list[FieldChange]
    current: bool  # the version ZooKeeper held when the page was drawn
    restore_url: str | None  # None: not restorable from here (or not by this user)
    audit_url: str | None  # its page in the audit log (None: the user cannot see it)


def time_zone_name() -> str:
    """The one time zone the admin shows times in (the project's TIME_ZONE unless a
    middleware activated another)."""
    return timezone.get_current_timezone_name()


def local(at: Any) -> Any:
    return timezone.localtime(at) if timezone.is_aware(at) else at


def describe_change(change: FlagChange) -> str:
    """``version 3 (changed by alice at 2026-12-02 10:04:05 CST)``, for messages."""
    by = change.username or _("the system")
    at = local(change.at).strftime("%Y-%m-%d %H:%M:%S %Z")
    version = change.zk_version if change.zk_version is not None else "—"
    return _("version %(v)s (%(action)s by %(by)s at %(at)s)") % {
        "v": version,
        "action": change.get_action_display(),
        "by": by,
        "at": at,
    }


def dropped_text(dropped: dict[str, list[int]]) -> str:
    if not dropped:
        return ""
    parts = [f"{kind} {', '.join(f'#{pk}' for pk in pks)}" for kind, pks in dropped.items()]
    return " " + _("Left out %(what)s: they no longer exist.") % {"what": "; ".join(parts)}


class HistoryMixin(AdminBase):
    """The flag's history on its change page and on the History page; restores."""

    # -- pages ------------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        urls = [
            path(
                "deleted/",
                self.admin_site.admin_view(self.deleted_flags_view),
                name=f"{prefix}_deleted",
            ),
            path(
                "<path:object_id>/history/restore/<int:change_pk>/",
                self.admin_site.admin_view(self.restore_version_view),
                name=f"{prefix}_restore",
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
            form = context["adminform"].form if context.get("adminform") else None
            seen = obj.zk_version
            if form is not None and "zk_version_seen" in form.fields:
                seen = _version_or_none(form["zk_version_seen"].value(), default=seen)
            changes = FlagChange.objects.filter(flag_name=obj.name).order_by("-at", "-pk")
            context.update(
                self.history_context(
                    request, obj, list(changes[:CHANGE_PAGE_ROWS]), expected_version=seen
                )
            )
            context["history_total"] = changes.count()
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def history_view(self, request: Any, object_id: Any, extra_context: Any = None) -> Any:
        """Django's "History" button: this flag's audit log (not Django's LogEntry rows,
        which know nothing of changes made outside the change form)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        try:
            expected: int | None = services.read_flag(obj.name).version
            reachable = True
        except FlagWriteError as exc:
            expected, reachable = obj.zk_version, False
            self.message_user(
                request,
                _("ZooKeeper is unreachable: restoring is not possible until it is back. (%s)")
                % exc,
                level=messages.WARNING,
            )
        changes = FlagChange.objects.filter(flag_name=obj.name).order_by("-at", "-pk")
        page = Paginator(changes, HISTORY_PAGE_ROWS).get_page(request.GET.get("p"))
        context = {
            **self.admin_site.each_context(request),
            "title": _("History of flag %s") % obj.name,
            "subtitle": None,
            "object": obj,
            "opts": self.opts,
            "page_obj": page,
            "history_total": page.paginator.count,
            "preserved_filters": self.get_preserved_filters(request),
            **self.history_context(
                request,
                obj,
                list(page.object_list),
                expected_version=expected,
                allow_restore=reachable,
            ),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/django_zkflags/flag/object_history.html", context)

    def history_context(
        self,
        request: Any,
        obj: Flag,
        changes: list[FlagChange],
        *,
        expected_version: int | None,
        allow_restore: bool = True,
    ) -> dict[str, Any]:
        """What the history table needs: the entries (with their diffs, users and groups
        by name, looked up in two queries), the version the page shows, the time zone."""
        names = services.member_names(
            doc for change in changes for doc in (change.before, change.after)
        )
        can_restore = allow_restore and self.has_change_permission(request, obj)
        audit_link = self._can_view_audit(request)
        entries = []
        for index, change in enumerate(changes):
            current = (
                index == 0
                and change.after is not None
                and change.zk_version == expected_version
                and change.flag_name == obj.name
            )
            restorable = isinstance(change.after, dict) and "omitted" not in change.after
            entries.append(
                HistoryEntry(
                    change=change,
                    diff=diff_documents(change.before, change.after, names=names),
                    current=current,
                    restore_url=(
                        self._url("restore", obj.pk, change.pk)
                        if can_restore and restorable and not current
                        else None
                    ),
                    audit_url=self._audit_url(change.pk) if audit_link else None,
                )
            )
        return {
            "history_entries": entries,
            "history_expected_version": expected_version,
            "history_time_zone": time_zone_name(),
            "history_url": self._url("history", obj.pk),
            "audit_log_url": self._audit_changelist_url(obj.name) if audit_link else None,
            "deleted_flags_url": self._url("deleted"),
        }

    # -- restore a version --------------------------------------------------------------------

    def restore_version_view(self, request: Any, object_id: Any, change_pk: int) -> Any:
        """POST: restore the flag as it was after audit row ``change_pk``, from the version
        the page showed (``expected_version``)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        change = FlagChange.objects.filter(pk=change_pk, flag_name=obj.name).first()
        if change is None:
            raise Http404(_("No such change of this flag."))
        next_url = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            next_url = self._url("change", obj.pk)
        back = HttpResponseRedirect(f"{next_url.split('#')[0]}#history")
        if "expected_version" not in request.POST:
            self.message_user(
                request,
                _("Not restored: the page did not say which version of the flag it showed."),
                level=messages.ERROR,
            )
            return back
        try:
            expected = _version_or_none(request.POST["expected_version"], strict=True)
        except ValueError:
            self.message_user(request, _("Not restored: a bad version."), level=messages.ERROR)
            return back
        try:
            restored = services.revert_to_change(
                change, expected_version=expected, actor=request.user, source="admin"
            )
        except (FlagWriteError, InvalidFlag) as exc:
            prefix = "" if isinstance(exc, FlagConflict) else _("Not restored: ")
            self.message_user(request, prefix + str(exc), level=messages.ERROR)
            return back
        what = describe_change(change)
        if restored.change is None:
            self.message_user(
                request,
                _("Flag %(name)s already is as it was at %(what)s; nothing was written.")
                % {"name": obj.name, "what": what},
                level=messages.INFO,
            )
        else:
            self.message_user(
                request,
                _("Restored flag %(name)s as it was at %(what)s. It is now at version %(version)s.")
                % {"name": obj.name, "what": what, "version": restored.version}
                + dropped_text(restored.dropped),
                level=messages.SUCCESS,
            )
        return back

    # -- deleted flags ------------------------------------------------------------------------

    def deleted_flags_view(self, request: Any) -> Any:
        """Flags deleted and not back (GET); POST ``name`` and ``change`` (the delete row
        the page showed) to create one again as it was when it was deleted."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_restore = self.has_add_permission(request)
        if request.method == "POST":
            if not can_restore:
                raise PermissionDenied
            return self._undelete(request)
        page = Paginator(services.deleted_flags(), DELETED_PAGE_ROWS).get_page(request.GET.get("p"))
        rows = list(page.object_list)
        names = services.member_names(row.before for row in rows)
        audit_link = self._can_view_audit(request)
        entries = [
            {
                "change": row,
                "summary": _summary(row.flag_name, row.before),
                "fields": diff_documents(None, row.before, names=names)
                if isinstance(row.before, dict)
                else [],
                "restorable": isinstance(row.before, dict) and "omitted" not in row.before,
                "audit_url": self._audit_url(row.pk) if audit_link else None,
                "audit_log_url": self._audit_changelist_url(row.flag_name) if audit_link else None,
            }
            for row in rows
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": _("Deleted flags"),
            "subtitle": None,
            "opts": self.opts,
            "page_obj": page,
            "entries": entries,
            "can_restore": can_restore,
            "history_time_zone": time_zone_name(),
            "audit_log_url": self._audit_changelist_url() if audit_link else None,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/django_zkflags/flag/deleted.html", context)

    def _undelete(self, request: Any) -> Any:
        back = HttpResponseRedirect(self._url("deleted"))
        name = request.POST.get("name", "")
        try:
            seen = int(request.POST.get("change", ""))
        except ValueError:
            self.message_user(
                request,
                _("Not restored: the page did not say which deletion it showed."),
                level=messages.ERROR,
            )
            return back
        try:
            restored = services.undelete_flag(
                name, actor=request.user, source="admin", deleted_change=seen
            )
        except (FlagWriteError, InvalidFlag) as exc:
            prefix = "" if isinstance(exc, FlagConflict) else _("Not restored: ")
            self.message_user(request, prefix + str(exc), level=messages.ERROR)
            return back
        self.message_user(
            request,
            _("Restored flag %(name)s as it was when it was deleted (version %(version)s).")
            % {"name": name, "version": restored.version}
            + dropped_text(restored.dropped),
            level=messages.SUCCESS,
        )
        row = Flag.objects.filter(name=name).first()
        if row is not None and self.has_view_or_change_permission(request, row):
            return HttpResponseRedirect(self._url("change", row.pk))
        return back

    # -- Django's own LogEntry ----------------------------------------------------------------

    def construct_change_message(self, request: Any, form: Any, formsets: Any, add: bool) -> Any:
        """Django's LogEntry message, without the form's bookkeeping field."""
        message = super().construct_change_message(request, form, formsets, add)
        for part in message:
            fields = part.get("changed", {}).get("fields")
            if fields:
                part["changed"]["fields"] = [f for f in fields if f != "zk_version_seen"]
        return [part for part in message if part.get("changed", {}).get("fields", True)]

    # -- links --------------------------------------------------------------------------------

    def _url(self, view: str, *args: Any) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_{view}",
            args=args,
            current_app=self.admin_site.name,
        )

    def _can_view_audit(self, request: Any) -> bool:
        audit_admin = self.admin_site._registry.get(FlagChange)
        return audit_admin is not None and audit_admin.has_view_permission(request)

    def _audit_url(self, pk: int) -> str | None:
        try:
            return reverse(
                "admin:django_zkflags_flagchange_change",
                args=[pk],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return None

    def _audit_changelist_url(self, name: str | None = None) -> str | None:
        try:
            url = reverse(
                "admin:django_zkflags_flagchange_changelist", current_app=self.admin_site.name
            )
        except NoReverseMatch:
            return None
        return url if name is None else f"{url}?{urlencode({'flag_name': name})}"


def _summary(name: str, doc: Any) -> str:
    if not isinstance(doc, dict):
        return _("not recorded")
    try:
        return FlagRule.from_document(doc, name=name).summary()
    except InvalidFlag as exc:
        return _("invalid: %s") % exc


def _version_or_none(value: Any, *, default: int | None = None, strict: bool = False) -> Any:
    """A version from a form value: "" or None is None (the flag did not exist)."""
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        if strict:
            raise ValueError(value) from None
        return default
