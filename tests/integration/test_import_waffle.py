"""manage.py zkflags import-waffle against the real django-waffle and a real ZooKeeper:
after the import this app answers as waffle did for every deterministic rule and every kind
of user; samples become percentages (said in the note and the output); what cannot be
carried over is listed per flag; a dry run and a second import change nothing; a waffle
object that cannot become a flag, or a name ZooKeeper already holds, refuses the whole
import (unless --exclude, or --force)."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
import waffle
from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import RequestFactory, override_settings

import django_zkflags
from django_zkflags import services
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import FlagRule

from ..conftest import audit, flag_doc, zkflags_command

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def wf(django_db_setup: Any, django_db_blocker: Any) -> Iterator[SimpleNamespace]:
    """django-waffle in INSTALLED_APPS, with its tables, for this module only.

    Not in tests/settings.py: waffle's Flag model brings a second "view_flag" permission,
    which other tests look up by codename alone. Its tables are created here without a
    migration (so without permissions or content types) and dropped at the end; its admin
    pages stay out of the admin site. Gives waffle's models: ``wf.Flag``, ``wf.Switch``,
    ``wf.Sample``."""
    # Two overrides: Django installs the apps (and the admin imports waffle.admin, which
    # reads WAFFLE_ENABLE_ADMIN_PAGES) before it applies the other settings of an override.
    no_admin_pages = override_settings(WAFFLE_ENABLE_ADMIN_PAGES=False)
    installed = override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "waffle"])
    with django_db_blocker.unblock(), no_admin_pages, installed:
        # Models' relation caches (User's reverse relations) were filled before waffle was
        # installed, and Django does not expire them while it repopulates the registry.
        django_apps.clear_cache()
        from waffle.models import Flag, Sample, Switch

        with connection.schema_editor() as editor:
            for model in (Flag, Switch, Sample):
                editor.create_model(model)  # with the users and groups tables
        try:
            yield SimpleNamespace(Flag=Flag, Switch=Switch, Sample=Sample)
        finally:
            with connection.schema_editor() as editor:
                for model in (Flag, Switch, Sample):
                    editor.delete_model(model)


def command(*args: str) -> str:
    out = StringIO()
    call_command("zkflags", "import-waffle", *args, stdout=out)
    return out.getvalue()


def refused(*args: str) -> tuple[str, str]:
    """The output and the error of an import-waffle that is refused."""
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("zkflags", "import-waffle", *args, stdout=out)
    return out.getvalue(), str(caught.value)


@pytest.fixture(autouse=True)
def waffle_cache():
    """waffle caches its objects in the default cache, which outlives a test."""
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def people() -> dict[str, Any]:
    """One user of each kind, by name."""
    testers = Group.objects.create(name="beta-testers")
    member = User.objects.create_user("member")
    member.groups.add(testers)
    return {
        "anonymous": AnonymousUser(),
        "plain": User.objects.create_user("plain"),
        "staff": User.objects.create_user("staff", is_staff=True),
        "superuser": User.objects.create_superuser("superuser"),
        "member": member,
        "listed": User.objects.create_user("listed"),
    }


def request_for(user: Any) -> Any:
    request = RequestFactory().get("/")
    request.user = user
    return request


def wait_served(zkflags: Any, names: list[str]) -> None:
    """This process serves every flag in ``names`` at the version ZooKeeper holds."""
    for name in names:
        version = zkflags.read(name)[1]
        assert version is not None, f"{name} is not in ZooKeeper"
        zkflags.wait_version(name, version)


#: waffle Flag fields (waffle's defaults otherwise: superusers is True), and who should
#: see each flag on, as waffle decides it.
FLAGS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "everyone-on": (
        {"everyone": True},
        {"anonymous", "plain", "staff", "superuser", "member", "listed"},
    ),
    "everyone-off": ({"everyone": False, "staff": True}, set()),
    "superusers": ({}, {"superuser"}),
    "nobody": ({"superusers": False}, set()),
    "staff": ({"staff": True, "superusers": False}, {"staff", "superuser"}),
    "authenticated": (
        {"authenticated": True, "superusers": False},
        {"plain", "staff", "superuser", "member", "listed"},
    ),
    "listed-users": ({"superusers": False}, {"listed"}),
    "groups": ({"superusers": False}, {"member"}),
    "mixed": ({"staff": True}, {"staff", "superuser", "member", "listed"}),
}
SWITCHES = {"switch-on": True, "switch-off": False}


def make_waffle_objects(wf: SimpleNamespace, people: dict[str, Any]) -> None:
    testers = Group.objects.get(name="beta-testers")
    for name, (fields, _expected) in FLAGS.items():
        flag = wf.Flag.objects.create(name=name, note=f"waffle's note on {name}", **fields)
        if name in ("listed-users", "mixed"):
            flag.users.add(people["listed"])
        if name in ("groups", "mixed"):
            flag.groups.add(testers)
    for name, active in SWITCHES.items():
        wf.Switch.objects.create(name=name, active=active)


def test_after_the_import_this_app_answers_as_waffle_did(wf, zkflags, people):
    make_waffle_objects(wf, people)
    out = command()
    assert "django-waffle: 9 flag(s), 2 switch(es), 0 sample(s)." in out
    assert "create mixed (waffle flag)" in out
    assert "users: +listed" in out and "groups: +beta-testers" in out
    assert "create switch-on (waffle switch)" in out
    assert "Imported from django-waffle: 11 change(s) in one transaction" in out
    wait_served(zkflags, [*FLAGS, *SWITCHES])

    for name, (_fields, expected) in FLAGS.items():
        on_in_waffle = {
            who for who, user in people.items() if waffle.flag_is_active(request_for(user), name)
        }
        assert on_in_waffle == expected, name  # the rule is what the test means it to be
        for who, user in people.items():
            request = request_for(user)
            assert django_zkflags.flag_is_active(request, name) is bool(
                waffle.flag_is_active(request, name)
            ), (name, who)
            assert django_zkflags.flag_is_active_for_user(user, name) is (who in expected), (
                name,
                who,
            )
    for name, active in SWITCHES.items():
        assert waffle.switch_is_active(name) is active
        assert django_zkflags.flag_is_active_for_user(None, name) is active
        for who, user in people.items():
            assert django_zkflags.flag_is_active(request_for(user), name) is active, (name, who)

    assert zkflags.read("mixed")[0] == flag_doc(
        "mixed",
        superusers=True,
        staff=True,
        users=[people["listed"].pk],
        groups=[Group.objects.get(name="beta-testers").pk],
        note="waffle's note on mixed",
    )
    assert zkflags.read("switch-off")[0] == flag_doc("switch-off", everyone=False)
    for name in [*FLAGS, *SWITCHES]:
        assert [(c.action, c.source) for c in audit(name)] == [("created", "import-waffle")]
    mixed = Flag.objects.get(name="mixed")  # the admin's row mirrors it
    assert set(mixed.users.all()) == {people["listed"]} and mixed.staff is True
    assert "agree" in zkflags_command("check")


def block(out: str, heading: str) -> list[str]:
    """The indented lines under ``heading`` in the output."""
    lines = out.split("\n")
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("    ")), None)
    return [line.strip() for line in lines[start:end]]


def test_samples_become_percentages_and_say_so(wf, zkflags, people):
    wf.Sample.objects.create(name="sampled", percent="30.0", note="log 30% of searches")
    wf.Sample.objects.create(name="always", percent="100.0")
    wf.Sample.objects.create(name="never", percent="0.0")
    out = command()
    assert "create sampled (waffle sample)" in out
    assert "percent: 30" in out
    assert "carried over differently: a waffle sample is on in 30% of calls" in out
    assert "Samples become percentages of visitors" in out
    wait_served(zkflags, ["sampled", "always", "never"])

    doc = zkflags.read("sampled")[0]
    assert doc["percent"] == 30.0 and doc["everyone"] is None and doc["superusers"] is False
    assert doc["note"].startswith("log 30% of searches\nimport-waffle: a waffle sample is on")
    assert "each keeping its answer" in doc["note"]
    assert zkflags.read("always")[0]["percent"] == 100.0
    # 100 % and 0 % are as deterministic here as in waffle, with or without a visitor.
    assert waffle.sample_is_active("always") is True
    assert django_zkflags.flag_is_active_for_user(None, "always") is True
    assert django_zkflags.flag_is_active_for_user(people["plain"], "never") is False
    # A percentage of visitors: a user keeps the answer it got.
    first = django_zkflags.flag_is_active_for_user(people["plain"], "sampled")
    assert all(
        django_zkflags.flag_is_active_for_user(people["plain"], "sampled") is first
        for _ in range(20)
    )


def test_what_cannot_be_carried_over_is_listed_and_the_flag_imported(wf, zkflags, settings):
    settings.WAFFLE_OVERRIDE = True
    wf.Flag.objects.create(
        name="localised",
        note="German and French shops",
        languages="de,fr",
        testing=True,
        rollout=True,
        percent="12.5",
        superusers=False,
    )
    wf.Flag.objects.create(name="plain-one", superusers=False, staff=True)
    out = command()
    assert "create localised (waffle flag)" in out
    assert "not carried over: languages (de,fr): waffle turned the flag on" in out
    assert "not carried over: testing mode: waffle let ?dwft_localised=1" in out
    assert "not carried over: rollout mode:" in out
    assert "carried over differently: percent 12.5: the visitors are chosen again" in out
    assert "setting WAFFLE_OVERRIDE = True" in out
    assert block(out, "create plain-one (waffle flag)") == ["staff: true"]
    wait_served(zkflags, ["localised", "plain-one"])

    doc = zkflags.read("localised")[0]
    assert doc["percent"] == 12.5
    assert doc["note"] == (
        "German and French shops\n"
        "import-waffle: not carried over: languages (de,fr), testing mode, rollout mode"
    )
    assert zkflags.read("plain-one")[0]["note"] == ""
    # Listed again on every run, though nothing changes.
    again = command()
    assert "unchanged localised (waffle flag)" in again
    assert "not carried over: languages (de,fr)" in again
    assert "Nothing to change." in again


def test_a_waffle_object_that_cannot_be_a_flag_refuses_the_whole_import(wf, zkflags):
    wf.Flag.objects.create(name="fine", everyone=True)
    wf.Flag.objects.create(name="has space", everyone=True)
    wf.Flag.objects.create(name="twice", staff=True)
    wf.Switch.objects.create(name="twice", active=True)
    wf.Sample.objects.create(name="too-much", percent="150.0")
    before = FlagChange.objects.count()

    out, error = refused()
    assert "4 problem(s); nothing was changed" in error
    assert "has space (waffle flag): Invalid flag name 'has space'" in error
    assert "--exclude 'has space'" in error
    assert "twice (waffle flag): a waffle flag and a waffle switch share the name 'twice'" in error
    assert "twice (waffle switch): a waffle flag and a waffle switch" in error
    assert "too-much (waffle sample): Percent must be from 0 to 100" in error
    assert "cannot import twice (waffle switch)" in out
    assert zkflags.read("fine") == (None, None)
    assert FlagChange.objects.count() == before

    _out, error = refused("--exclude", "has space", "--exclude", "twice", "--exclude", "typo")
    assert "--exclude 'typo': waffle has no flag, switch or sample of this name" in error
    assert zkflags.read("fine") == (None, None)

    out = command("--exclude", "has space", "--exclude", "twice", "--exclude", "too-much")
    assert "excluded has space (waffle flag): left out with --exclude" in out
    assert "excluded twice (waffle switch)" in out
    assert "Imported from django-waffle: 1 change(s)" in out
    assert zkflags.read("fine")[0]["everyone"] is True
    assert zkflags.read("twice") == (None, None)


def test_a_dry_run_changes_nothing(wf, zkflags, people):
    services.save_flag(FlagRule("already-here", everyone=True), expected_version=None, source="t")
    make_waffle_objects(wf, people)
    snapshot_version = zkflags.reader.snapshot().version
    before = FlagChange.objects.count()
    out = command("--dry-run")
    assert "create everyone-on (waffle flag)" in out and "Dry run: nothing was changed." in out
    assert zkflags.reader.flag_names() == ["already-here"]
    assert zkflags.reader.snapshot().version == snapshot_version
    assert FlagChange.objects.count() == before
    assert not Flag.objects.exclude(name="already-here").exists()


def test_a_second_import_changes_nothing(wf, zkflags, people):
    make_waffle_objects(wf, people)
    wf.Sample.objects.create(name="sampled", percent="30.0")
    command()
    names = [*FLAGS, *SWITCHES, "sampled"]
    versions = {name: zkflags.read(name)[1] for name in names}
    snapshot_version = zkflags.reader.snapshot().version
    before = FlagChange.objects.count()
    out = command()
    assert "Nothing to change." in out and "unchanged: 11 flag(s)" in out
    assert "unchanged sampled (waffle sample)" in out  # its remark is shown again
    assert {name: zkflags.read(name)[1] for name in names} == versions
    assert zkflags.reader.snapshot().version == snapshot_version
    assert FlagChange.objects.count() == before


def test_a_name_zookeeper_already_has_is_refused_whole_unless_forced(wf, zkflags, people):
    services.save_flag(
        FlagRule("staff", percent=50.0, note="made here"), expected_version=None, source="t"
    )
    make_waffle_objects(wf, people)
    before = FlagChange.objects.count()
    out, error = refused()
    assert "1 problem(s); nothing was changed" in error
    assert "staff (waffle flag): ZooKeeper already has a different flag of this name" in error
    assert "change staff (waffle flag)" in out
    assert "percent: 50 → null" in out and "staff: false → true" in out
    assert zkflags.read("staff")[0]["note"] == "made here"
    assert zkflags.read("everyone-on") == (None, None)  # nothing else was imported either
    assert FlagChange.objects.count() == before

    out = command("--force")
    assert "Imported from django-waffle: 11 change(s)" in out
    wait_served(zkflags, [*FLAGS, *SWITCHES])
    assert zkflags.read("staff")[0] == flag_doc("staff", staff=True, note="waffle's note on staff")
    assert [(c.action, c.source) for c in audit("staff")][-1] == ("changed", "import-waffle")
    for who, user in people.items():
        request = request_for(user)
        assert django_zkflags.flag_is_active(request, "staff") is waffle.flag_is_active(
            request, "staff"
        ), who
