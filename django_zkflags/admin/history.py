"""A flag's history on its change page (the audit log)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..models import FlagChange

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object


class HistoryMixin(AdminBase):
    """Adds the flag's audit rows to its change page."""

    def changeform_view(
        self, request: Any, object_id: Any = None, form_url: str = "", extra_context: Any = None
    ) -> Any:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            obj = self.get_object(request, object_id)
            if obj is not None:
                extra_context["flag_history"] = FlagChange.objects.filter(flag_name=obj.name)[:50]
        return super().changeform_view(request, object_id, form_url, extra_context)
