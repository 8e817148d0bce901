"""Django models: the admin's front end to ZooKeeper, and the audit log.

ZooKeeper holds the truth. A ``Flag`` row mirrors one flag znode (``zk_version`` is the
znode version it mirrors); :meth:`Flag.to_rule` and :meth:`Flag.values_from_rule` are the
one mapping between a row and a rule. Rows are written by :mod:`django_zkflags.services`
only; an ORM ``save()``/``delete()`` or many-to-many edit reaches it through the signal
receivers in :mod:`django_zkflags.receivers`. ``FlagChange`` is the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .rules import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    FlagRule,
    InvalidFlag,
    freeze_value,
    validate_environments,
    validate_requires,
)

validate_flag_name = RegexValidator(
    regex=rf"\A{NAME_PATTERN.pattern}\Z",
    message=_("Use only letters, digits, '-', '_' and '.' (at most 100 characters)."),
    code="invalid_flag_name",
)


class Flag(models.Model):
    EVERYONE_CHOICES = ((True, _("On for everyone")), (False, _("Off for everyone")))

    name = models.CharField(
        _("name"), max_length=NAME_MAX_LENGTH, unique=True, validators=[validate_flag_name]
    )
    note = models.TextField(_("note"), blank=True, help_text=_("What the flag is for."))
    everyone = models.BooleanField(
        _("everyone"),
        null=True,
        blank=True,
        choices=EVERYONE_CHOICES,
        help_text=_("On or off for everyone (a kill switch). Empty: decided by the rules below."),
    )
    percent = models.DecimalField(
        _("percent"),
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text=_("On for this share of visitors (0 to 100, one decimal), stable per visitor."),
    )
    superusers = models.BooleanField(_("superusers"), default=False)
    staff = models.BooleanField(_("staff"), default=False)
    authenticated = models.BooleanField(_("authenticated users"), default=False)
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="zkflags", verbose_name=_("users")
    )
    groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="zkflags", verbose_name=_("groups")
    )
    value = models.JSONField(
        _("value"),
        null=True,
        blank=True,
        help_text=_(
            "Live configuration: any JSON (a number, a string, an object...), read with "
            "django_zkflags.get_value(name). Empty: no value."
        ),
    )
    environments = models.JSONField(
        _("environment overrides"),
        default=dict,
        blank=True,
        help_text=_(
            'Per-environment overrides, e.g. {"staging": {"everyone": true}, '
            '"canary": {"percent": 50, "value": 3}}. An environment inherits its parent\'s '
            "overrides and applies its own on top."
        ),
    )
    requires = models.JSONField(
        _("requires"),
        default=list,
        blank=True,
        help_text=_(
            "Prerequisites: names of flags that must all be on for the same user for this "
            "one to be on (its own rules must match too). Empty: none."
        ),
    )
    public = models.BooleanField(
        _("public"),
        default=False,
        help_text=_(
            "Served to browsers by zkflags/flags.json (its state and value for the visitor). "
            "Leave off for anything a visitor must not see."
        ),
    )
    created = models.DateTimeField(_("created"), auto_now_add=True)
    modified = models.DateTimeField(_("modified"), auto_now=True)
    zk_version = models.IntegerField(
        _("ZooKeeper version"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("Version of the flag znode this row mirrors."),
    )

    class Meta:
        ordering = ("name",)
        verbose_name = _("flag")
        verbose_name_plural = _("flags")

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> Flag:
        instance = super().from_db(db, field_names, values)
        if "name" in instance.__dict__:
            instance.remember_name()
        return instance

    def remember_name(self) -> None:
        """The name this row is stored under (to refuse a rename later)."""
        self._loaded_name = self.name

    def check_not_renamed(self) -> None:
        loaded = getattr(self, "_loaded_name", None)
        if loaded is not None and loaded != self.name:
            raise ValidationError({"name": _("A flag cannot be renamed; create a new one.")})

    def clean(self) -> None:
        super().clean()
        self.check_not_renamed()
        if self.name in (".", ".."):  # the regex allows them; ZooKeeper paths do not
            raise ValidationError({"name": _("'.' and '..' cannot be flag names.")})
        try:
            freeze_value(self.value)
        except InvalidFlag as exc:
            raise ValidationError({"value": str(exc)}) from None
        except RecursionError:
            raise ValidationError({"value": _("The value is nested too deeply.")}) from None
        try:
            validate_environments(self.environments, self.name or "flag")
        except InvalidFlag as exc:
            raise ValidationError({"environments": str(exc)}) from None
        except RecursionError:
            raise ValidationError({"environments": _("Nested too deeply.")}) from None
        try:
            validate_requires(self.requires, self.name or "flag")
        except InvalidFlag as exc:
            raise ValidationError({"requires": str(exc)}) from None

    # -- the one mapping between a row and a rule ------------------------------------------

    def to_rule(
        self, user_ids: Iterable[int] | None = None, group_ids: Iterable[int] | None = None
    ) -> FlagRule:
        """The rule this row describes (raises InvalidFlag). Many-to-many ids are read from
        the database unless given."""
        if user_ids is None:
            user_ids = self.users.values_list("pk", flat=True) if self.pk else ()
        if group_ids is None:
            group_ids = self.groups.values_list("pk", flat=True) if self.pk else ()
        return FlagRule(
            self.name,
            everyone=self.everyone,
            percent=percent_from_row(self.percent),
            superusers=self.superusers,
            staff=self.staff,
            authenticated=self.authenticated,
            users=[int(i) for i in user_ids],
            groups=[int(i) for i in group_ids],
            note=self.note,
            value=self.value,
            environments=self.environments or None,
            requires=self.requires or (),
            public=self.public,
        )

    @staticmethod
    def values_from_rule(rule: FlagRule) -> dict[str, Any]:
        """The column values of a row mirroring ``rule`` (not the many-to-many ones)."""
        doc = rule.to_document()
        return {
            "note": rule.note,
            "everyone": rule.everyone,
            "percent": percent_to_row(rule.percent),
            "superusers": rule.superusers,
            "staff": rule.staff,
            "authenticated": rule.authenticated,
            "value": doc.get("value"),
            "environments": doc.get("environments") or {},
            "requires": list(rule.requires),
            "public": rule.public,
        }

    def mirrors(self, rule: FlagRule, version: int | None) -> bool:
        """Does this row (with its many-to-many rows) mirror ``rule`` at ``version``? The
        row keeps percentages to one decimal: a znode written by other means with more
        decimals still counts as mirrored."""
        if self.zk_version != version:
            return False
        try:
            mine = self.to_rule().to_document()
        except InvalidFlag:
            return False
        theirs = rule.to_document()
        if theirs.get("percent") is not None:
            theirs["percent"] = round(theirs["percent"], 1)
        return mine == theirs


def percent_from_row(value: Any) -> float | None:
    """The row's percent as a rule takes it. The column keeps one decimal: more would be
    written to ZooKeeper and lost in the row (endless drift), so it is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise InvalidFlag(f"Percent must be a number from 0 to 100, got {value!r}")
    try:
        exact = Decimal(str(value))
    except ArithmeticError:
        raise InvalidFlag(f"Percent must be a number from 0 to 100, got {value!r}") from None
    if not exact.is_finite() or exact != exact.quantize(Decimal("0.1"), rounding="ROUND_HALF_EVEN"):
        raise InvalidFlag(f"Percent takes at most one decimal, got {value}")
    return float(exact)


def percent_to_row(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 1)))


class FlagChange(models.Model):
    """One change that reached ZooKeeper. Written by django-zkflags only, never edited."""

    CREATED = "created"
    CHANGED = "changed"
    DELETED = "deleted"
    REPAIRED = "repaired"
    RESTORED = "restored"
    REVERTED = "reverted"
    UNDELETED = "undeleted"
    ACTIONS = (
        (CREATED, _("created")),
        (CHANGED, _("changed")),
        (DELETED, _("deleted")),
        (REPAIRED, _("repaired from ZooKeeper")),
        (RESTORED, _("restored to ZooKeeper")),
        (REVERTED, _("restored an earlier version")),
        (UNDELETED, _("restored after deletion")),
    )

    flag_name = models.CharField(_("flag"), max_length=NAME_MAX_LENGTH, db_index=True)
    action = models.CharField(_("action"), max_length=10, choices=ACTIONS)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("user"),
    )
    username = models.CharField(
        _("username"), max_length=150, blank=True, help_text=_("Kept if the user is deleted.")
    )
    at = models.DateTimeField(_("at"), default=timezone.now, db_index=True)
    before = models.JSONField(_("before"), null=True, blank=True)
    after = models.JSONField(_("after"), null=True, blank=True)
    zk_version = models.IntegerField(_("ZooKeeper version"), null=True, blank=True)
    source = models.CharField(_("source"), max_length=40, blank=True)
    change_id = models.CharField(
        _("change id"),
        max_length=32,
        null=True,
        blank=True,
        unique=True,
        editable=False,
        help_text=_("The id of the change record written to ZooKeeper with the change."),
    )
    scheduled_for = models.DateTimeField(
        _("scheduled for"),
        null=True,
        blank=True,
        help_text=_(
            'A scheduled change (source "schedule"): when it was due. It ran at "at"; '
            "the difference is how late (a schedule missed while no steward ran)."
        ),
    )

    class Meta:
        ordering = ("-at", "-pk")
        verbose_name = _("flag change")
        verbose_name_plural = _("flag changes")

    def __str__(self) -> str:
        at = timezone.localtime(self.at) if timezone.is_aware(self.at) else self.at
        return f"{self.flag_name} {self.action} by {self.username or 'system'} at {at:%Y-%m-%d %H:%M:%S %Z}"

    @property
    def late_by(self) -> Any:
        """How late a scheduled change ran (a ``timedelta``), None for other changes."""
        if self.scheduled_for is None or self.at is None:
            return None
        return self.at - self.scheduled_for

    def changed_fields(self) -> list[str]:
        before = self.before or {}
        after = self.after or {}
        return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
