"""The "Try it" box on the admin's flag page: a username (or an anonymous visitor's id) in,
the flag's answer and the reason out (``django_zkflags.explain``).

A GET form on the change page itself (``?tryit-who=user&tryit-username=alice#tryit``): it
changes nothing, so it needs no CSRF token and the view permission is enough (the change
page asks for it). The answer is this process's, from the snapshot it serves, in its
environment, as the flag's checks in this process would answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.admin.views.main import IS_POPUP_VAR
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..api import explain
from ..cache import store

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object

PREFIX = "tryit"
#: GET parameters of the change page kept by the box's form (the list's filters).
KEPT = ("_changelist_filters", IS_POPUP_VAR)


class TryItForm(forms.Form):
    who = forms.ChoiceField(
        label=gettext_lazy("For"),
        choices=(
            ("user", gettext_lazy("a user")),
            ("anonymous", gettext_lazy("an anonymous visitor")),
        ),
        initial="user",
        widget=forms.RadioSelect,
    )
    username = forms.CharField(label=gettext_lazy("Username"), required=False, max_length=150)
    visitor = forms.CharField(
        label=gettext_lazy("Visitor id"),
        required=False,
        max_length=100,
        help_text=gettext_lazy(
            "An anonymous visitor's id: its cookie's value up to the first ':' (the rest is the "
            "signature). Empty: a visitor without one."
        ),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("who") == "user" and not data.get("username"):
            self.add_error("username", _("Give a username."))
        return data


class TryItMixin(AdminBase):
    """Adds the "Try it" box (``tryit``, drawn by flag/tryit.html) to FlagAdmin's change
    page."""

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
            context["tryit"] = self.tryit_panel(request, obj)
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def tryit_panel(self, request: Any, obj: Any) -> dict[str, Any]:
        """What flag/tryit.html draws: the form, and once it is sent the answer (an
        :class:`~django_zkflags.evaluation.Explanation`) or why there is none."""
        asked = f"{PREFIX}-who" in request.GET
        form = TryItForm(request.GET if asked else None, prefix=PREFIX)
        snapshot = store.current
        panel: dict[str, Any] = {
            "form": form,
            "kept": [(key, request.GET[key]) for key in KEPT if key in request.GET],
            "environment": snapshot.environment,
            "answer": None,
            "who": None,
            "error": None,
        }
        if not asked or not form.is_valid():
            return panel
        data = form.cleaned_data
        if data["who"] == "user":
            user = self._tryit_user(data["username"])
            if user is None:
                panel["error"] = _("No user named %(name)s.") % {"name": data["username"]}
                return panel
            panel["who"] = _("user %(name)s") % {"name": user.get_username()}
            panel["answer"] = explain(user, obj.name)
        else:
            visitor = data["visitor"] or None
            panel["who"] = (
                _("anonymous visitor %(id)s") % {"id": visitor}
                if visitor
                else _("an anonymous visitor without an id")
            )
            panel["answer"] = explain(AnonymousUser(), obj.name, anonymous_id=visitor)
        return panel

    def _tryit_user(self, username: str) -> Any:
        model = get_user_model()
        try:
            return model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist:
            return None
