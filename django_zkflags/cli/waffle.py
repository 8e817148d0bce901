"""import-waffle: copy django-waffle's flags, switches and samples into ZooKeeper.

Run in a project that still has django-waffle installed and in ``INSTALLED_APPS`` (its
tables are read). Every waffle object becomes one flag of this app:

- a **Flag** keeps everyone, percent, superusers, staff, authenticated, users, groups and
  its note (user and group ids are the ids of this database, which both apps share);
- a **Switch** becomes a flag on (or off) for everyone;
- a **Sample** becomes a flag on for that percentage of *visitors*. Waffle draws a sample
  at random on every call; this app gives each visitor (user id, or the anonymous cookie)
  a stable answer, and a check that has neither is off below 100 %. The note says so.

Nothing is dropped silently. What a flag of this app cannot express (a waffle flag's
languages, testing mode, rollout mode) is listed per flag; the flag is imported anyway and
its note says what was not carried over. A waffle object that cannot become a flag at all
(a name this app refuses, a flag, switch or sample sharing one name, a percent outside 0
to 100) refuses the whole import, as one invalid flag refuses ``zkflags import``: change it
in waffle's admin (a new name, a percent in range), or leave it out on purpose with
``--exclude NAME``.

The import is planned by :func:`django_zkflags.transfer.plan_import` and applied by
:func:`django_zkflags.services.save_flags`: one ZooKeeper ``multi()``, all or nothing,
audited per flag with source "import-waffle". A flag ZooKeeper already holds with the same
document is left alone (a second import changes nothing); one that differs is refused, with
its diff, unless ``--force`` (waffle's then overwrites it). There is no ``--prune``: waffle
does not know the flags created here since, and deleting flags is not a migration's job
(``zkflags import --prune`` does it from a file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import CommandError

from .. import runtime, services
from ..diff import diff_documents, member_ids
from ..files import FlagFile
from ..rules import FlagRule, InvalidFlag
from ..transfer import ImportPlan, plan_import
from .base import Subcommand

SOURCE = "import-waffle"
KINDS = ("flag", "switch", "sample")
#: How a note written by the import starts (after waffle's own note, on a line of its own).
NOTE_PREFIX = "import-waffle: "
SAMPLE_REMARK = (
    "a waffle sample is on in {percent}% of calls, drawn at random on every call; this flag "
    "is on for {percent}% of visitors, each keeping its answer (a check with no user and no "
    "anonymous cookie is off below 100%)"
)


@dataclass
class WaffleObject:
    """One waffle Flag, Switch or Sample, as a flag document of this app."""

    kind: str  # "flag", "switch" or "sample"
    name: str
    document: dict[str, Any]
    #: (what, why): parts waffle had that this app cannot express; imported without them
    #: (the note says so).
    lost: list[tuple[str, str]] = field(default_factory=list)
    #: Carried over with another meaning (percentages: other visitors, stable answers).
    remarks: list[str] = field(default_factory=list)
    #: Why it cannot become a flag at all ("" when it can).
    refused: str = ""
    excluded: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} (waffle {self.kind})"


@dataclass
class WafflePlan:
    objects: list[WaffleObject]
    plan: ImportPlan
    settings: list[str]
    problems: list[str]


def waffle_models() -> tuple[Any, Any, Any]:
    """waffle's Flag, Switch and Sample models (swapped ones included)."""
    try:
        import waffle
    except ImportError:
        raise CommandError(
            "django-waffle is not installed here: run import-waffle in the project that "
            "still has it (pip install django-waffle)"
        ) from None
    if not apps.is_installed("waffle"):
        raise CommandError(
            "django-waffle is installed but not in INSTALLED_APPS: add 'waffle' there (its "
            "tables are what is read) and run import-waffle again"
        )
    return (
        waffle.get_waffle_flag_model(),
        waffle.get_waffle_switch_model(),
        waffle.get_waffle_sample_model(),
    )


def read_waffle() -> tuple[list[WaffleObject], list[str]]:
    """Every waffle Flag, Switch and Sample in the database, converted (sorted by name,
    then kind), and what waffle's settings do that is not carried over."""
    flag_model, switch_model, sample_model = waffle_models()
    field_names = {f.name for f in flag_model._meta.get_fields()}
    related = [name for name in ("users", "groups") if name in field_names]
    objects = [from_flag(flag) for flag in flag_model.objects.prefetch_related(*related)]
    objects += [from_switch(switch) for switch in switch_model.objects.all()]
    objects += [from_sample(sample) for sample in sample_model.objects.all()]
    objects.sort(key=lambda obj: (obj.name, KINDS.index(obj.kind)))
    _refuse_shared_names(objects)
    return objects, settings_not_carried_over(flag_model)


def from_flag(flag: Any) -> WaffleObject:
    name = flag.name
    lost: list[tuple[str, str]] = []
    languages = (getattr(flag, "languages", "") or "").strip()
    if languages:
        lost.append(
            (
                f"languages ({languages})",
                "waffle turned the flag on for requests in these languages; this app has "
                "no language rule",
            )
        )
    if getattr(flag, "testing", False):
        lost.append(
            (
                "testing mode",
                f"waffle let ?dwft_{name}=1 (and its cookie) turn the flag on or off for one "
                f"browser; here ?zkflags={name}:on does, with ZKFLAGS['TESTING_OVERRIDES'] "
                "and DEBUG only",
            )
        )
    if getattr(flag, "rollout", False):
        lost.append(
            (
                "rollout mode",
                "waffle drew the visitors left out again at every browser session; here "
                "each visitor keeps its answer",
            )
        )
    percent = _percent(flag.percent)
    remarks = []
    if percent and flag.everyone is None:
        remarks.append(
            f"percent {percent:g}: the visitors are chosen again, by a stable hash of the "
            f"user id (or of this app's anonymous cookie); waffle's dwf_{name} cookies are "
            "not read, so not the same visitors are in"
        )
    additions = [f"not carried over: {', '.join(what for what, _ in lost)}"] if lost else []
    note = _note(flag.note, additions)
    document = {
        "name": name,
        "everyone": flag.everyone,
        "percent": percent,
        "superusers": bool(flag.superusers),
        "staff": bool(flag.staff),
        "authenticated": bool(flag.authenticated),
        "users": _pks(flag, "users"),
        "groups": _pks(flag, "groups"),
        "note": note,
    }
    return _checked(WaffleObject("flag", name, document, lost, remarks))


def from_switch(switch: Any) -> WaffleObject:
    document = {**_plain(switch.name), "everyone": bool(switch.active), "note": switch.note}
    return _checked(WaffleObject("switch", switch.name, document))


def from_sample(sample: Any) -> WaffleObject:
    percent = _percent(sample.percent)
    remark = SAMPLE_REMARK.format(percent=f"{percent:g}" if percent is not None else "?")
    document = {
        **_plain(sample.name),
        "percent": percent,
        "note": _note(sample.note, [remark]),
    }
    return _checked(WaffleObject("sample", sample.name, document, remarks=[remark]))


def _plain(name: str) -> dict[str, Any]:
    """The document of a flag with no rule at all. The name is checked later, with the rest
    of the document (a waffle name may not be a valid flag name here)."""
    return {**_NO_RULE, "name": name}


_NO_RULE = FlagRule("x").to_document()


def _percent(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _pks(flag: Any, field_name: str) -> list[Any]:
    related = getattr(flag, field_name, None)
    if related is None:  # a swapped flag model without users or groups
        return []
    return sorted(obj.pk for obj in related.all())


def _note(original: str | None, additions: Iterable[str]) -> str:
    """waffle's note as it is, then one line per addition (the same every run, so that a
    second import finds nothing to change)."""
    note = original or ""
    for addition in additions:
        note += ("\n" if note and not note.endswith("\n") else "") + NOTE_PREFIX + addition
    return note


def _checked(obj: WaffleObject) -> WaffleObject:
    try:
        FlagRule.from_document(obj.document)
    except InvalidFlag as exc:
        obj.refused = str(exc)
    return obj


def _refuse_shared_names(objects: list[WaffleObject]) -> None:
    by_name: dict[str, list[WaffleObject]] = {}
    for obj in objects:
        by_name.setdefault(obj.name, []).append(obj)
    for same in by_name.values():
        if len(same) > 1:
            kinds = " and ".join(f"a waffle {obj.kind}" for obj in same)
            for obj in same:
                obj.refused = obj.refused or (
                    f"{kinds} share the name {obj.name!r}: this app has one flag per name"
                )


def settings_not_carried_over(flag_model: Any) -> list[str]:
    """waffle's settings whose behaviour this app does not have, each with its counterpart."""
    from waffle.models import Flag
    from waffle.utils import get_setting

    lines = []
    if get_setting("OVERRIDE"):
        lines.append(
            "WAFFLE_OVERRIDE = True (?NAME=1 turned any flag on or off): not carried over; "
            "ZKFLAGS['TESTING_OVERRIDES'] lets ?zkflags=NAME:on do it, with DEBUG only"
        )
    for kind in ("FLAG", "SWITCH", "SAMPLE"):
        if get_setting(f"{kind}_DEFAULT"):
            lines.append(
                f"WAFFLE_{kind}_DEFAULT = True (a name waffle does not know is on): here "
                "ZKFLAGS['UNKNOWN_FLAG_ACTIVE'] answers for every unknown name, or declare "
                "the flag with its default in ZKFLAGS['FLAGS']"
            )
        if get_setting(f"CREATE_MISSING_{kind}S"):
            lines.append(
                f"WAFFLE_CREATE_MISSING_{kind}S = True: this app never creates a flag when "
                "it is checked; declare it in ZKFLAGS['FLAGS'] (the admin offers to create it)"
            )
    if flag_model is not Flag:
        own = sorted(
            f.name
            for f in flag_model._meta.get_fields()
            if not f.auto_created and f.name not in {g.name for g in Flag._meta.get_fields()}
        )
        lines.append(
            f"WAFFLE_FLAG_MODEL = {flag_model._meta.label}: its own fields "
            f"({', '.join(own) or 'none'}) and any rule its is_active() adds are not carried over"
        )
    return lines


def plan_waffle_import(
    current: Mapping[str, Any],
    unreadable: Mapping[str, str],
    *,
    force: bool = False,
    exclude: Iterable[str] = (),
) -> WafflePlan:
    """What importing waffle's objects into ZooKeeper (``current``: flag entries with their
    version, ``unreadable``: znodes that do not parse, as :meth:`TreeReader.flag_entries`
    gives) would do, and what refuses it."""
    objects, settings_lines = read_waffle()
    problems: list[str] = []
    excluded = set(exclude)
    for name in sorted(excluded - {obj.name for obj in objects}):
        problems.append(f"--exclude {name!r}: waffle has no flag, switch or sample of this name")
    content = FlagFile()
    for obj in objects:
        if obj.name in excluded:
            obj.excluded = True
        elif obj.refused:
            problems.append(
                f"{obj.label}: {obj.refused}. Change it in waffle's admin, or leave it out "
                f"with --exclude {obj.name!r}"
            )
        elif obj.name in unreadable:
            problems.append(
                f"{obj.label}: ZooKeeper holds an unreadable flag of this name "
                f"({unreadable[obj.name]}); 'zkflags check' and 'repair', or --exclude it"
            )
        else:
            content.flags[obj.name] = obj.document
    plan = plan_import(content, current, None)  # the environments document is not touched
    problems += plan.problems
    if not force:
        kinds = {obj.name: obj.kind for obj in objects}
        problems += [
            f"{change.name} (waffle {kinds[change.name]}): ZooKeeper already has a different "
            "flag of this name (the diff above); --force overwrites it with waffle's"
            for change in plan.changes
            if change.action == "change"
        ]
    return WafflePlan(objects, plan, settings_lines, problems)


def member_names(documents: Iterable[Mapping[str, Any] | None]) -> dict[str, dict[int, str]]:
    """Usernames and group names of the ids ``documents`` list, for the diff."""
    ids = member_ids(documents)
    user_model = get_user_model()
    users = user_model.objects.filter(pk__in=ids["users"]).values_list(
        "pk", user_model.USERNAME_FIELD
    )
    groups = Group.objects.filter(pk__in=ids["groups"]).values_list("pk", "name")
    return {
        "users": {pk: str(username) for pk, username in users},
        "groups": dict(groups),
    }


class ImportWaffle(Subcommand):
    name = "import-waffle"
    help = (
        "Copy django-waffle's flags, switches and samples into ZooKeeper: all or nothing, "
        "audited per flag (source import-waffle)."
    )

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="show the changes only")
        parser.add_argument(
            "--force",
            action="store_true",
            help="overwrite flags ZooKeeper already holds under the same name",
        )
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="NAME",
            help="leave this waffle flag, switch or sample out (repeatable)",
        )

    def handle(self, dry_run: bool, force: bool, exclude: list[str], **options: Any) -> None:
        reader = runtime.get_runtime().reader()
        current, unreadable = reader.flag_entries()
        waffle_plan = plan_waffle_import(current, unreadable, force=force, exclude=exclude)
        self.show(waffle_plan, current)
        plan = waffle_plan.plan
        if waffle_plan.problems:
            raise CommandError(
                f"{len(waffle_plan.problems)} problem(s); nothing was changed:\n  "
                + "\n  ".join(waffle_plan.problems)
            )
        if dry_run or plan.empty:
            self.stdout.write("Dry run: nothing was changed." if dry_run else "Nothing to change.")
            return
        audit = services.save_flags(plan.items, actor=services.command_actor(), source=SOURCE)
        self.stdout.write(
            f"Imported from django-waffle: {len(audit)} change(s) in one transaction "
            f"(audited with source {SOURCE!r})."
        )

    def show(self, waffle_plan: WafflePlan, current: Mapping[str, Any]) -> None:
        objects = waffle_plan.objects
        counts = {kind: sum(obj.kind == kind for obj in objects) for kind in KINDS}
        self.stdout.write(
            f"django-waffle: {counts['flag']} flag(s), {counts['switch']} switch(es), "
            f"{counts['sample']} sample(s)."
        )
        changes = {change.name: change for change in waffle_plan.plan.changes}
        documents = [obj.document for obj in objects if obj.name in changes]
        names = member_names(documents + [current.get(name) for name in changes])
        unchanged = 0
        for obj in objects:
            change = changes.get(obj.name)
            if obj.excluded:
                self.stdout.write(f"excluded {obj.label}: left out with --exclude")
                continue
            if obj.refused:
                self.stdout.write(f"cannot import {obj.label}: {obj.refused}")
                continue
            if change is None:
                if not obj.lost and not obj.remarks:
                    unchanged += 1
                    continue
                self.stdout.write(f"unchanged {obj.label}")
            else:
                self.stdout.write(f"{change.action} {obj.label}")
                old = current.get(obj.name)
                if old is not None:
                    old = {k: v for k, v in old.items() if k != "version"}
                for field_change in diff_documents(old, obj.document, names=names):
                    self.stdout.write(f"    {field_change}")
            for what, why in obj.lost:
                self.stdout.write(f"    not carried over: {what}: {why}")
            for remark in obj.remarks:
                self.stdout.write(f"    carried over differently: {remark}")
        if unchanged:
            self.stdout.write(f"unchanged: {unchanged} flag(s)")
        for line in waffle_plan.settings:
            self.stdout.write(f"setting {line}")
        if any(obj.kind == "sample" and not (obj.excluded or obj.refused) for obj in objects):
            self.stdout.write(
                "Samples become percentages of visitors: waffle drew a sample at random on "
                "every call, this app gives each visitor a stable answer."
            )


COMMANDS: tuple[type[Subcommand], ...] = (ImportWaffle,)
