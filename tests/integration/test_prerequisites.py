"""Prerequisites against a real ZooKeeper: a flag that requires other flags is on only when
its own rules match and every prerequisite is on for the same user or visitor.

Saves that would make a flag require a missing flag, or close a cycle, are refused through
every door of the write path (services, the admin form, the command, the ORM, imports),
checked by the writer against the snapshot it commits with (so two editors cannot make a
cycle between them); a flag others require cannot be deleted. A cycle or a missing
prerequisite written by hand (around the write path) turns the flags off, is reported in
``status()["invalid_flags"]`` and by ``check``, and hangs nothing. Pure parts:
tests/unit/test_prerequisites.py.
"""

from __future__ import annotations

import json
import threading
from io import StringIO
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import AnonymousUser, User
from django.core.management import CommandError, call_command
from django.db import transaction
from django.http import JsonResponse
from django.test import Client
from django.urls import path

import django_zkflags
from django_zkflags import flag_is_active, flag_is_active_for_user, services
from django_zkflags.cache import store
from django_zkflags.conf import parse_url
from django_zkflags.evaluation import RequestFlags, first_off_prerequisite
from django_zkflags.exceptions import FlagRequired
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import (
    FlagRule,
    LinkedRule,
    PrerequisiteError,
    bucket,
    strongly_connected,
)
from django_zkflags.writer import BatchItem
from tests.support.admin_pages import (
    ADD_URL,
    ADMIN,
    change_url,
    data_from_page,
    delete_url,
    form_data,
)

from ..conftest import audit, row_state, wait_until, writer_for, zkflags_command


def banner(request: Any) -> JsonResponse:
    """A view that checks one flag, as a page would."""
    return JsonResponse({"banner": flag_is_active(request, "banner")})


urlpatterns = [path("admin/", admin.site.urls), path("banner/", banner)]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def save(name: str, **fields: Any) -> FlagChange | None:
    """Create or change a flag through the write path, from what ZooKeeper holds."""
    version = services.read_flag(name).version
    rule = FlagRule(name, **fields)
    return services.save_flag(rule, expected_version=version, source="test")


def serving(zkflags: Any, name: str) -> None:
    zkflags.wait_version(name, services.read_flag(name).version)


@pytest.fixture
def editor() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    return client


# -- evaluation -----------------------------------------------------------------------------


def test_a_dependent_follows_its_prerequisite_for_each_user(zkflags, people):
    users, _groups = people
    save("new-cart", users=[users[0].pk, users[1].pk])
    save("new-checkout", everyone=True, requires=["new-cart"])
    serving(zkflags, "new-checkout")
    assert isinstance(store.current.flags["new-checkout"], LinkedRule)
    answers = [flag_is_active_for_user(user, "new-checkout") for user in users]
    assert answers == [True, True, False]
    off = first_off_prerequisite(store.current, "new-checkout", users[2])
    assert off is not None and off.name == "new-cart"

    # The prerequisite turned off turns the dependent off in this process.
    save("new-cart", everyone=False)
    serving(zkflags, "new-cart")
    assert not any(flag_is_active_for_user(user, "new-checkout") for user in users)
    save("new-cart", everyone=True)
    serving(zkflags, "new-cart")
    assert all(flag_is_active_for_user(user, "new-checkout") for user in users)


def test_anonymous_visitors_are_bucketed_by_the_prerequisite_percentage(zkflags, client):
    """The dependent has no percentage; its prerequisite is at 50 %: each anonymous visitor
    gets the middleware's cookie, and is in exactly when the prerequisite's bucket is."""
    save("rollout", percent=50.0)
    save("banner", everyone=True, requires=["rollout"])
    serving(zkflags, "banner")
    seen = set()
    for _ in range(30):
        visitor = Client()
        response = visitor.get("/banner/")
        flags = response.wsgi_request.flags
        assert isinstance(flags, RequestFlags) and flags.new_anonymous_id
        answer = response.json()["banner"]
        assert answer is (bucket("rollout", flags.anonymous_id) < 5000)
        seen.add(answer)
        # The same visitor (its cookie) keeps its answer on the next requests.
        for _again in range(3):
            again = visitor.get("/banner/")
            assert again.json()["banner"] is answer
            assert again.wsgi_request.flags.anonymous_id == flags.anonymous_id
            assert not again.wsgi_request.flags.new_anonymous_id
    assert seen == {True, False}


def test_override_flag_on_a_prerequisite_reaches_the_dependent(zkflags):
    from django_zkflags.testing import override_flag

    save("base-off", everyone=False)
    save("dependent", everyone=True, requires=["base-off"])
    serving(zkflags, "dependent")
    assert flag_is_active_for_user(AnonymousUser(), "dependent") is False
    with override_flag("base-off"):
        assert flag_is_active_for_user(AnonymousUser(), "dependent") is True
    assert flag_is_active_for_user(AnonymousUser(), "dependent") is False


# -- refused on save: services, admin, command, ORM, imports ---------------------------------


def test_services_refuse_a_missing_prerequisite_and_a_cycle(zkflags):
    save("a", everyone=True)
    save("b", everyone=True, requires=["a"])
    save("c", everyone=True, requires=["b"])
    snapshot_version = zkflags.reader.snapshot().version
    with pytest.raises(PrerequisiteError, match="'d' requires 'nope', which does not exist"):
        save("d", requires=["nope"])
    with pytest.raises(PrerequisiteError, match=r"cycle \('a' -> 'c' -> 'b' -> 'a'\)"):
        save("a", everyone=True, requires=["c"])
    with pytest.raises(PrerequisiteError, match="cannot require itself"):
        save("a", requires=["a"])
    # Nothing was written anywhere.
    assert zkflags.read("d") == (None, None) and zkflags.read("a")[1] == 0
    assert zkflags.reader.snapshot().version == snapshot_version
    assert [c.action for c in audit("a")] == ["created"] and audit("d") == []


def test_a_flag_others_require_cannot_be_deleted(zkflags, editor):
    save("p", everyone=True)
    save("d", everyone=True, requires=["p"])
    save("e", everyone=True, requires=["p"])
    with pytest.raises(FlagRequired, match="'p' is required by 'd', 'e'"):
        services.delete_flag("p", expected_version=0, source="test")
    # The command and the admin say so; the ORM raises; nothing is deleted.
    with pytest.raises(CommandError, match="'p' is required by 'd', 'e'"):
        zkflags_command("delete", "p", "--yes")
    row = Flag.objects.get(name="p")
    response = editor.post(delete_url(row), {"post": "yes"}, follow=True)
    assert "is required by" in response.content.decode()
    with pytest.raises(FlagRequired), transaction.atomic():
        row.delete()
    assert zkflags.read("p")[1] == 0 and Flag.objects.filter(name="p").exists()
    # Taken out of their prerequisites, it goes.
    save("d", everyone=True)
    save("e", everyone=True)
    zkflags_command("delete", "p", "--yes")
    assert zkflags.read("p") == (None, None)


def test_a_flag_and_those_that_require_it_are_deleted_together(zkflags, editor):
    """The admin's bulk delete deletes the flags that require others first, whatever order
    their names come in."""
    save("a-base", everyone=True)
    save("m-middle", everyone=True, requires=["a-base"])
    save("z-top", everyone=True, requires=["m-middle"])
    pks = [str(Flag.objects.get(name=n).pk) for n in ("a-base", "m-middle", "z-top")]
    response = editor.post(
        ADMIN, {"action": "delete_selected", "_selected_action": pks, "post": "yes"}, follow=True
    )
    assert response.status_code == 200
    assert [zkflags.read(n) for n in ("a-base", "m-middle", "z-top")] == [(None, None)] * 3
    assert not Flag.objects.filter(name__in=["a-base", "m-middle", "z-top"]).exists()


def test_the_admin_form_says_what_is_wrong_beside_requires(zkflags, editor):
    save("base", everyone=True)
    response = editor.post(ADD_URL, form_data("child", requires="base, missing-one"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "'child' requires 'missing-one', which does not exist" in " ".join(errors["requires"])
    assert "base, missing-one" in response.content.decode()  # what was typed is kept
    assert zkflags.read("child") == (None, None)

    response = editor.post(ADD_URL, form_data("child", requires="base"))
    assert response.status_code == 302
    assert zkflags.read("child")[0]["requires"] == ["base"]
    assert row_state("child")[0]["requires"] == ["base"]
    # Now make base require child: a cycle, refused beside the field.
    base = Flag.objects.get(name="base")
    page = editor.get(change_url(base))
    response = editor.post(change_url(base), data_from_page(page, requires="child"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "cycle ('base' -> 'child' -> 'base')" in " ".join(errors["requires"])
    response = editor.post(change_url(base), data_from_page(page, requires="base"))
    assert "cannot require itself" in " ".join(
        response.context["adminform"].form.errors["requires"]
    )
    response = editor.post(change_url(base), data_from_page(page, requires="bad/name"))
    assert "is not a flag name" in " ".join(response.context["adminform"].form.errors["requires"])
    assert zkflags.read("base")[1] == 0


def test_the_command_sets_prerequisites_and_refuses_bad_ones(zkflags):
    save("x", everyone=True)
    out = zkflags_command("set", "y", "--on", "--requires", "x")
    assert out.startswith("y: on for everyone (requires x) (version 0)")
    assert zkflags.read("y")[0]["requires"] == ["x"]
    with pytest.raises(CommandError, match="cycle"):
        zkflags_command("set", "x", "--requires", "y")
    with pytest.raises(CommandError, match="'y' requires 'ghost', which does not exist"):
        zkflags_command("set", "y", "--requires", "x,ghost")
    assert zkflags.read("y")[1] == 0
    zkflags_command("set", "y", "--requires", "")
    assert "requires" not in zkflags.read("y")[0]
    assert [c.source for c in audit("y")] == ["command", "command"]


def test_the_orm_refuses_and_keeps_the_row_as_it_was(zkflags):
    Flag.objects.create(name="one", everyone=True)
    with pytest.raises(PrerequisiteError, match="'two' requires 'zero'"):
        Flag.objects.create(name="two", requires=["zero"])
    assert not Flag.objects.filter(name="two").exists()
    two = Flag.objects.create(name="two", requires=["one"])
    one = Flag.objects.get(name="one")
    one.requires = ["two"]
    with pytest.raises(PrerequisiteError, match="cycle"):
        one.save()
    assert Flag.objects.get(name="one").requires == [] and zkflags.read("one")[1] == 0
    assert zkflags.read("two")[0]["requires"] == ["one"] and two.zk_version == 0


def test_imports_are_checked_whole(zkflags, tmp_path):
    save("keep", everyone=True)
    save("needs-keep", everyone=True, requires=["keep"])
    # One batch may create flags that require each other in a chain...
    services.save_flags(
        [
            BatchItem("c1", FlagRule("c1", requires=["c2"]), None),
            BatchItem("c2", FlagRule("c2", requires=["keep"]), None),
        ],
        source="test",
    )
    # ... but not close a cycle, or drop a flag that stays required.
    with pytest.raises(PrerequisiteError, match="cycle"):
        services.save_flags(
            [BatchItem("keep", FlagRule("keep", requires=["c1"]), 0)], source="test"
        )
    path = tmp_path / "flags.json"
    call_command("zkflags", "export", str(path), stdout=StringIO())
    data = json.loads(path.read_text())
    del data["flags"]["keep"]
    path.write_text(json.dumps(data))
    with pytest.raises(CommandError, match="'keep' is required by 'c2', 'needs-keep'"):
        call_command("zkflags", "import", str(path), "--prune", stdout=StringIO())
    assert zkflags.read("keep")[1] == 0


def test_export_then_import_keeps_prerequisites_and_public_and_changes_nothing(zkflags, tmp_path):
    save("base", everyone=True, public=True)
    save("child", percent=20.0, requires=["base"], public=True, value={"k": 1})
    path = tmp_path / "flags.json"
    call_command("zkflags", "export", str(path), stdout=StringIO())
    exported = json.loads(path.read_text())["flags"]
    assert exported["child"]["requires"] == ["base"] and exported["child"]["public"] is True
    out = StringIO()
    call_command("zkflags", "import", str(path), stdout=out)
    assert "Nothing to change." in out.getvalue()


# -- two editors at once ---------------------------------------------------------------------


def test_two_editors_cannot_make_a_cycle_between_them(zkflags, kazoo_clients):
    """a and b require nothing; one editor makes a require b while the other makes b
    require a, at the same moment, several times, each through its own ZooKeeper client
    (two processes, in effect): exactly one wins each time, since the writer checks against
    the snapshot it replaces, and replacing it is serialised by its version."""
    url = parse_url(zkflags.url)
    writers = []
    for _ in range(2):
        writer = writer_for(kazoo_clients(zkflags.server.hosts), url, 10.0)
        writer.check = services.check_prerequisites  # as services' writers have it
        writers.append(writer)

    def edit(writer, name: str, other: str, start: threading.Barrier, outcomes: dict) -> None:
        start.wait()
        try:
            writer.write_flag(FlagRule(name, everyone=True, requires=[other]), 0)
            outcomes[name] = "saved"
        except PrerequisiteError as exc:
            outcomes[name] = exc

    for round_ in range(10):
        a, b = f"a{round_}", f"b{round_}"
        save(a, everyone=True)
        save(b, everyone=True)
        start = threading.Barrier(2)
        outcomes: dict[str, Any] = {}
        threads = [
            threading.Thread(target=edit, args=(writers[0], a, b, start, outcomes)),
            threading.Thread(target=edit, args=(writers[1], b, a, start, outcomes)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(outcome == "saved" for outcome in outcomes.values()) == 1, outcomes
        refused = next(o for o in outcomes.values() if o != "saved")
        assert isinstance(refused, PrerequisiteError) and "cycle" in str(refused)
        requires = [zkflags.read(name)[0].get("requires") for name in (a, b)]
        assert requires.count(None) == 1
    entries, _invalid = zkflags.reader.flag_entries()
    rules = {name: FlagRule.from_document(entry, name=name) for name, entry in entries.items()}
    graph = {name: rule.requires for name, rule in rules.items() if rule.requires}
    assert all(len(component) == 1 for component in strongly_connected(graph))


# -- written by hand, around the write path --------------------------------------------------


def test_a_hand_written_cycle_and_missing_prerequisite_are_off_and_reported(zkflags):
    """Written through a bare writer (as zkCli or a script would, bypassing services): the
    watcher links them, turns them off, reports them, and keeps applying later changes."""
    zkflags.write("loop-a", everyone=True, requires=["loop-b"])
    zkflags.write("loop-b", everyone=True, requires=["loop-a"])
    zkflags.write("orphan", everyone=True, requires=["never-made"])
    zkflags.write("fine", everyone=True)
    invalid = django_zkflags.status()["invalid_flags"]
    assert set(invalid) == {"loop-a", "loop-b", "orphan"}
    assert "cycle of prerequisites ('loop-a' -> 'loop-b' -> 'loop-a')" in invalid["loop-a"]
    assert "requires 'never-made'" in invalid["orphan"]
    for name in ("loop-a", "loop-b", "orphan"):
        assert flag_is_active_for_user(AnonymousUser(), name) is False
    assert flag_is_active_for_user(AnonymousUser(), "fine") is True
    problems = services.check().problems
    assert ("loop-a", next(w for n, w in problems if n == "loop-a" and "cycle" in w)) in problems
    assert any("cycle of prerequisites with loop-b" in w for n, w in problems if n == "loop-a")
    assert any(
        "requires never-made, which ZooKeeper does not hold" in w
        for n, w in problems
        if n == "orphan"
    )

    # A kill switch on a broken flag is still accepted (it adds no requirement)...
    services.toggle_flag("orphan", False, expected_version=0, source="test")
    # ... and fixing it through the write path clears the report.
    save("loop-b", everyone=True)
    serving(zkflags, "loop-b")
    wait_until(lambda: "loop-a" not in django_zkflags.status()["invalid_flags"])
    assert flag_is_active_for_user(AnonymousUser(), "loop-a") is True
    assert set(django_zkflags.status()["invalid_flags"]) == {"orphan"}
