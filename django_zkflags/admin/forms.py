"""The admin's forms: a flag (starting from what ZooKeeper holds) and the environments
document. Validation happens here once: a valid flag form carries the rule to write."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django.utils.translation import gettext_lazy as _

from .. import services
from ..exceptions import FlagWriteError
from ..models import Flag, percent_from_row
from ..rules import MAX_VALUE_DEPTH, FlagRule, InvalidFlag, json_text_too_deep


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
