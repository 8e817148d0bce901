"""The Environments page: the environments document, versioned like a flag and audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from .. import runtime, services
from ..exceptions import FlagWriteError
from ..models import FlagChange
from ..rules import InvalidFlag
from ..writer import ENVIRONMENTS
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
