"""The admin's forms: a flag (starting from what ZooKeeper holds) and the environments
document. Validation happens here once: a valid flag form carries the rule to write.

No input gives a server error: every text box is parsed here, with what is wrong said next
to it. A JSON box left empty (or blank) means "none", and is shown empty (never ``null``);
what was typed is shown back exactly as typed.

A form can also show a save that ZooKeeper refused (:attr:`FlagForm.refusal`, set by the
admin for one request): the bound form, with everything that was typed, says why as a
non-field error and is not valid, so nothing is saved. For a conflict it shows next to each
field what ZooKeeper holds now, and takes that version as the one to save over.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput, JSONString
from django.utils.text import Truncator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import services
from ..exceptions import FlagConflict, FlagWriteError, ZooKeeperUnavailable
from ..models import Flag, percent_from_row
from ..rules import (
    MAX_VALUE_DEPTH,
    FlagRule,
    InvalidFlag,
    PrerequisiteError,
    json_text_too_deep,
    validate_name,
    validate_requires,
)
from . import offline

#: ZooKeeper's znode versions are 32-bit signed integers.
MAX_ZNODE_VERSION = 2**31 - 1


class TypedText(str):
    """Text as typed in a JSON box: shown back verbatim, never parsed again."""


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{Truncator(text).chars(40)} is too large for a JSON number")
    return number


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


class BoundedJSONField(forms.JSONField):
    """A JSON box that gives a form error for anything it cannot take, never a server
    error: text nesting lists and objects deeper than ``max_depth`` is refused before it is
    parsed (``json.loads`` of a few hundred levels on the admin's deep stack raises
    RecursionError), as are integers too long for Python (over 4,300 digits), NaN and
    infinities. Empty or blank text is ``empty_value`` (None: no value), shown as an empty
    box; text that was typed is shown back as typed."""

    max_depth = MAX_VALUE_DEPTH

    def __init__(self, *, empty_value: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.empty_value = empty_value

    def to_python(self, value: Any) -> Any:
        if self.disabled:
            return value
        if value is None or (isinstance(value, str) and not value.strip()):
            return copy.deepcopy(self.empty_value)
        if not isinstance(value, str) or isinstance(value, JSONString):
            return super().to_python(value)
        if json_text_too_deep(value, self.max_depth):
            raise ValidationError(
                _(
                    "Nested too deeply: a value may nest lists and objects at most "
                    "%(depth)d levels deep."
                ),
                code="too_deep",
                params={"depth": MAX_VALUE_DEPTH},
            )
        try:
            converted = json.loads(value, parse_float=_finite_float, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                _("Not valid JSON: %(error)s (line %(line)d, column %(column)d)."),
                code="invalid",
                params={"error": exc.msg, "line": exc.lineno, "column": exc.colno},
            ) from None
        except (ValueError, RecursionError) as exc:  # an integer over 4,300 digits, NaN...
            raise ValidationError(
                _("Not usable JSON: %(error)s."),
                code="invalid",
                params={"error": Truncator(str(exc).split(";")[0]).chars(120)},
            ) from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled:
            return initial
        if isinstance(data, str):
            return TypedText(data)  # shown back as typed, never parsed here
        return super().bound_data(data, initial)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (TypedText, InvalidJSONInput)):
            return value
        if value is None or value == self.empty_value:
            return ""
        return super().prepare_value(value)


class RequiresField(forms.CharField):
    """Flag names separated by commas (or spaces), as a list: ``"new-cart, payments-v2"``.
    A comma list scales to any number of flags without a widget, and reads as the
    command's ``--requires a,b``."""

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, (list, tuple)):
            return [str(item) for item in value]
        text = super().to_python(value) or ""
        names = [part for part in text.replace(",", " ").split() if part]
        for name in names:
            try:
                validate_name(name)
            except InvalidFlag:
                raise ValidationError(
                    _("%(name)s is not a flag name: letters, digits, '-', '_' and '.'."),
                    code="invalid",
                    params={"name": Truncator(name).chars(60)},
                ) from None
        return names

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return ", ".join(str(item) for item in value)
        return value


class FlagForm(forms.ModelForm):
    """Starts from what ZooKeeper holds (not the row) and remembers the znode version it
    showed; :meth:`clean` turns the input into the rule that will be written.

    While ZooKeeper cannot be read, an unbound change form shows what this process last saw
    (its snapshot; else the row), every field disabled, and says so in :attr:`last_seen`.
    """

    zk_version_seen = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_ZNODE_VERSION, widget=forms.HiddenInput
    )
    requires = RequiresField(
        label=_("Requires"),
        required=False,
        widget=forms.TextInput(attrs={"class": "vTextField", "size": 80}),
        help_text=_(
            "Flags that must all be on for the same user for this one to be on (its own "
            "rules must match too), separated by commas: e.g. new-cart, payments-v2. They "
            "must exist; a cycle is refused. The same in every environment."
        ),
    )

    #: Set by the admin for one request (FlagAdmin.get_form): a save ZooKeeper refused. The
    #: bound form then shows it, with what was typed, and is not valid.
    refusal: Exception | None = None
    #: Set by the admin for one request: seconds an unbound change form waits for
    #: ZooKeeper before showing what this process last saw (None: the admin's timeout).
    read_wait: float | None = None

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
            "requires",
            "public",
        )
        field_classes = {"value": BoundedJSONField, "environments": BoundedJSONField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        environments = self.fields.get("environments")  # not on a view-only page
        if isinstance(environments, BoundedJSONField):
            # {"env": {"value": ...}}: an override's value sits two levels down.
            environments.max_depth = MAX_VALUE_DEPTH + 2
            environments.empty_value = {}  # the column's "none" (it is NOT NULL)
            environments.help_text = _("%(help)s Empty: no overrides.") % {
                "help": Flag._meta.get_field("environments").help_text
            }
        self.last_seen: str | None = None  # why the page shows what this process last saw
        self.stored_error: str | None = None  # what is wrong with the znode, if invalid
        self.rule: FlagRule | None = None
        instance = self.instance
        if self.is_bound:
            if isinstance(self.refusal, FlagConflict) and instance.pk is not None:
                # Saving again replaces what ZooKeeper holds now (shown beside each field).
                _save_over(self, "zk_version_seen", self.refusal.current_version)
            return
        if instance.pk is None:
            return
        wait = offline.admin_write_timeout() if self.read_wait is None else self.read_wait
        try:
            offline.wait_for_zookeeper(wait)
            stored = services.read_flag(instance.name)
        except FlagWriteError as exc:
            self._show_last_seen(exc)
            return
        self.initial["zk_version_seen"] = stored.version
        if stored.rule is not None:
            self._start_from(stored.rule)
        elif stored.error is not None:
            self.stored_error = stored.error

    def _start_from(self, rule: FlagRule) -> None:
        values = Flag.values_from_rule(rule)
        self.initial.update(values)
        self.initial["users"] = sorted(rule.users)
        self.initial["groups"] = sorted(rule.groups)
        # A view-only page shows the instance's values: the same ones (never saved).
        for name, value in values.items():
            setattr(self.instance, name, value)

    def _show_last_seen(self, exc: FlagWriteError) -> None:
        """ZooKeeper cannot be read: show this process's last snapshot of the flag (else
        the row), read-only."""
        instance = self.instance
        why = (
            gettext("ZooKeeper is unreachable")
            if isinstance(exc, ZooKeeperUnavailable)
            else gettext("ZooKeeper cannot be read (%(error)s)") % {"error": exc}
        )
        rule = offline.last_seen_flag(instance.name)
        if rule is not None:
            self._start_from(rule)
            self.initial["zk_version_seen"] = rule.version
            self.last_seen = gettext(
                "%(why)s: showing what this process last saw, version %(version)s; saving "
                "is disabled until it is back."
            ) % {"why": why, "version": rule.version}
        else:
            self.initial["zk_version_seen"] = instance.zk_version
            self.last_seen = gettext(
                "%(why)s and this process has not seen this flag: showing the database copy "
                "(version %(version)s), which may be stale; saving is disabled until it is "
                "back."
            ) % {"why": why, "version": instance.zk_version}
        for field in self.fields.values():
            field.disabled = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        refusal = self.refusal
        if isinstance(refusal, PrerequisiteError) and "requires" in self.fields:
            self.add_error("requires", refusal_text(refusal))
        elif refusal is not None:
            self.add_error(None, refusal_text(refusal, adding=self.instance.pk is None))
            if isinstance(refusal, FlagConflict):
                self._show_current(refusal)
        if self.errors:
            return cleaned
        name = cleaned.get("name") or self.instance.name
        try:
            validate_requires(cleaned.get("requires") or (), name)
        except InvalidFlag as exc:
            self.add_error("requires", str(exc))
            return cleaned
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
                requires=cleaned.get("requires") or (),
                public=bool(cleaned.get("public")),
            )
        except InvalidFlag as exc:
            raise forms.ValidationError(str(exc)) from None
        try:
            services.refuse_undefined_environments(self.rule)
        except InvalidFlag as exc:
            self.add_error("environments", str(exc))
        return cleaned

    def _show_current(self, conflict: FlagConflict) -> None:
        """Beside each field typed otherwise: what ZooKeeper holds now."""
        if conflict.current is None:
            return
        try:
            rule = FlagRule.from_document(conflict.current)
        except InvalidFlag:
            return
        current: dict[str, Any] = {
            **Flag.values_from_rule(rule),
            "users": set(rule.users),
            "groups": set(rule.groups),
        }
        for name, theirs in current.items():
            if name not in self.cleaned_data or name in self.errors:
                continue
            mine = self.cleaned_data[name]
            if name in ("users", "groups"):
                mine = {obj.pk for obj in mine or ()}
            elif name == "environments":
                mine = mine or {}
            if _comparable(mine) != _comparable(theirs):
                self.add_error(
                    name,
                    gettext("ZooKeeper now holds: %(value)s")
                    % {"value": _shown(name, theirs) or gettext("(empty)")},
                )


def refusal_text(exc: Exception, *, adding: bool = False) -> str:
    """What a form says about a save that ZooKeeper refused (or could not take)."""
    text = str(exc).strip()
    if isinstance(exc, FlagConflict):
        if adding:
            return gettext(
                "%(error)s What you typed is kept below, with what ZooKeeper holds beside "
                "each field that differs; change that flag from its own page."
            ) % {"error": text}
        if exc.current_version is None:
            now = gettext("ZooKeeper no longer has the flag: saving again creates it anew.")
        else:
            now = gettext(
                "Beside each field that differs is what ZooKeeper holds now (version "
                "%(version)s); saving again replaces it with what is in the form."
            ) % {"version": exc.current_version}
        return gettext("%(error)s What you typed is kept below. %(now)s") % {
            "error": text,
            "now": now,
        }
    if not text.endswith("."):
        text += "."
    if isinstance(exc, ZooKeeperUnavailable):
        if "nothing was saved" not in text.lower() and "outcome" not in text.lower():
            text += " " + gettext("Nothing was saved.")
        return gettext(
            "%(error)s What you typed is kept below: save again once ZooKeeper is back."
        ) % {"error": text}
    return gettext("%(error)s What you typed is kept below.") % {"error": text}


def _save_over(form: forms.BaseForm, field: str, version: int | None) -> None:
    """Make the bound ``form`` save over ``version`` (what ZooKeeper holds now, shown)."""
    data: Any = form.data.copy()
    data[form.add_prefix(field)] = "" if version is None else str(version)
    form.data = data


def _comparable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _shown(name: str, value: Any) -> str:
    """A field's value as a person reads it, short."""
    if name == "everyone":
        return str(dict(Flag.EVERYONE_CHOICES).get(value, gettext("decided by the rules")))
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if name == "requires":
        return Truncator(", ".join(value or ())).chars(300)
    if name in ("users", "groups"):
        model: Any = get_user_model() if name == "users" else Group
        found = {obj.pk: str(obj) for obj in model.objects.filter(pk__in=value)}
        return ", ".join(found.get(pk, f"#{pk}") for pk in sorted(value))
    if name in ("value", "environments"):
        return "" if value is None or value == {} else Truncator(json.dumps(value)).chars(300)
    if value is None:
        return ""
    return Truncator(str(value)).chars(300)


class EnvironmentsForm(forms.Form):
    """The environments document: parents and hosts pegged to an environment."""

    document = BoundedJSONField(
        label=_("Environments"),
        required=False,
        empty_value={},
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField"}),
        help_text=_(
            '{"parents": {"production": null, "canary": "production"}, '
            '"hosts": {"web-7": "canary"}}. An environment applies its parents\' overrides, '
            "then its own; a pegged host resolves flags for its environment. Empty: no "
            "environments."
        ),
    )
    version_seen = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_ZNODE_VERSION, widget=forms.HiddenInput
    )

    def show_refusal(self, exc: Exception) -> None:
        """A save ZooKeeper refused: say why, keep what was typed; for a conflict, show what
        ZooKeeper holds now and take its version as the one to save over."""
        if isinstance(exc, FlagConflict):
            version = exc.current_version
            _save_over(self, "version_seen", version)
            self.current = {
                "version": version,
                "document": json.dumps(exc.current, indent=2, sort_keys=True),
            }
            self.add_error(
                None,
                gettext(
                    "%(error)s What you typed is kept below, and what ZooKeeper holds now "
                    "(version %(version)s) beside it; saving again replaces it with what is "
                    "in the form."
                )
                % {"error": str(exc).strip(), "version": version},
            )
        else:
            self.add_error(None, refusal_text(exc))

    current: dict[str, Any] | None = None
