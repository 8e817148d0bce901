"""The Environments page: the environments document, versioned like a flag and audited.

Like the flag form: a save waits at most ``ZKFLAGS["ADMIN_WRITE_TIMEOUT"]`` for ZooKeeper,
and a refused save shows the page again with what was typed and why (for a conflict, what
ZooKeeper holds now beside it). Opened while ZooKeeper cannot be read, the page shows the
document this process last saw, read-only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import conf, runtime, services
from ..exceptions import FlagWriteError
from ..models import FlagChange
from ..rules import InvalidFlag
from ..writer import ENVIRONMENTS
from . import offline
from .forms import EnvironmentsForm

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object


class EnvironmentsMixin(AdminBase):
    """Adds ``environments/`` to FlagAdmin's URLs."""

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
                    offline.wait_for_zookeeper(offline.admin_write_timeout())
                    change = services.save_environments(
                        form.cleaned_data["document"],
                        expected_version=form.cleaned_data["version_seen"],
                        actor=request.user,
                        source="admin",
                    )
                except InvalidFlag as exc:
                    form.add_error("document", str(exc))  # shown with what was typed
                except FlagWriteError as exc:
                    form.show_refusal(exc)  # shown with what was typed
                else:
                    if change is None:
                        self.message_user(
                            request,
                            _("Nothing changed: the environments already are as the form says."),
                            level=messages.INFO,
                        )
                    else:
                        self.message_user(
                            request,
                            _("Environments saved (version %(version)s).")
                            % {"version": change.zk_version},
                        )
                    return HttpResponseRedirect(request.get_full_path())
        else:
            form = self._unbound_form(request)
            if form.fields["document"].disabled:
                can_change = False
        context = {
            **self.admin_site.each_context(request),
            "title": _("Environments"),
            "opts": self.model._meta,
            "form": form,
            "can_change": can_change,
            "this_process": runtime.status(),
            "this_host": conf.hostname(),
            "current": form.current,
            "history": FlagChange.objects.filter(flag_name=ENVIRONMENTS)[:20],
        }
        return TemplateResponse(request, "admin/django_zkflags/environments.html", context)

    def _unbound_form(self, request: Any) -> EnvironmentsForm:
        """The document as ZooKeeper holds it; while it cannot be read, as this process
        last saw it, read-only."""
        try:
            offline.wait_for_zookeeper(offline.page_wait())
            stored = services.read_environments()
        except FlagWriteError as exc:
            document = offline.last_seen_environments()
            if document is not None:
                text = gettext(
                    "ZooKeeper is unreachable: showing the environments this process last "
                    "saw; saving is disabled until it is back. (%(error)s)"
                )
            else:
                text = gettext(
                    "ZooKeeper is unreachable and this process has no copy of the "
                    "environments document; saving is disabled until it is back. (%(error)s)"
                )
            self.message_user(request, text % {"error": exc}, level=messages.WARNING)
            form = EnvironmentsForm(initial={"document": document, "version_seen": None})
            for field in form.fields.values():
                field.disabled = True
            return form
        if stored.error is not None:
            self.message_user(
                request,
                _("The environments document in ZooKeeper is invalid (%s); saving replaces it.")
                % stored.error,
                level=messages.WARNING,
            )
        return EnvironmentsForm(
            initial={"document": stored.document, "version_seen": stored.version}
        )
