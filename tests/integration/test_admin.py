"""The admin, end to end through the Django test client, against a real ZooKeeper.

Every edit must reach ZooKeeper (the flag znode and the snapshot this process watches),
the database row must mirror the znode version it came from, and each change that reached
ZooKeeper leaves exactly one audit row. A refused edit (a conflict, no permission, invalid
input) changes nothing anywhere. With ZooKeeper stopped: tests/system/test_admin.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from django_zkflags.cache import store
from django_zkflags.models import Flag, FlagChange
from tests.support.admin_pages import (
    ADD_URL,
    ADMIN,
    CONFLICT_TEXT,
    change_url,
    data_from_page,
    delete_url,
    form_data,
    make_flag,
    messages_of,
)

from ..conftest import audit, wait_until
from ..conftest import flag_doc as expected_doc

pytestmark = pytest.mark.django_db

# -- fixtures ------------------------------------------------------------------------------


def _staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    perms = Permission.objects.filter(
        content_type__app_label="django_zkflags", codename__in=codenames
    )
    assert perms.count() == len(codenames)
    user.user_permissions.set(perms)
    return user


@pytest.fixture(params=["staff", "superuser"])
def editor(request: Any) -> User:
    """A staff user with exactly the flag permissions, or a superuser."""
    if request.param == "superuser":
        return User.objects.create_superuser("root", password="pw")
    return _staff("editor", "add_flag", "change_flag", "delete_flag", "view_flag")


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser("boss", password="pw")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def editor_client(editor: User) -> Client:
    return logged_in(editor)


@pytest.fixture
def admin_client(superuser: User) -> Client:
    return logged_in(superuser)


@pytest.fixture
def members() -> tuple[list[User], list[Group]]:
    users = [User.objects.create_user(f"member{i}") for i in range(3)]
    groups = [Group.objects.create(name=f"team{i}") for i in range(2)]
    return users, groups


# -- add ----------------------------------------------------------------------------------


def test_add_reaches_zookeeper_snapshot_row_and_audit(zkflags, editor, editor_client, members):
    users, groups = members
    response = editor_client.post(
        ADD_URL,
        form_data(
            "new-checkout",
            note="The new checkout",
            percent="25.5",
            staff=True,
            users=users[:2],
            groups=groups[1:],
        ),
    )
    assert response.status_code == 302
    assert response.url == ADMIN

    want = expected_doc(
        "new-checkout",
        note="The new checkout",
        percent=25.5,
        staff=True,
        users=sorted(u.pk for u in users[:2]),
        groups=[groups[1].pk],
    )
    doc, version = zkflags.read("new-checkout")
    assert doc == want
    assert version == 0

    # This process's snapshot follows through the watch.
    zkflags.wait_version("new-checkout", version)
    rule = store.base.flags["new-checkout"]
    assert rule.to_document() == want

    row = Flag.objects.get(name="new-checkout")
    assert row.zk_version == version
    assert row.to_rule().to_document() == want
    assert row.percent == Decimal("25.5")

    [change] = audit("new-checkout")
    assert change.action == FlagChange.CREATED
    assert change.user == editor
    assert change.username == editor.username
    assert change.before is None
    assert change.after == want
    assert change.zk_version == version
    assert change.source == "admin"


def test_add_of_a_name_that_already_exists_in_zookeeper_is_refused(zkflags, admin_client):
    zkflags.write("taken", everyone=True, note="written elsewhere")
    response = admin_client.post(ADD_URL, form_data("taken", note="mine"), follow=True)
    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()  # the form, as typed
    assert any("already exists in ZooKeeper" in e for e in errors)
    doc, version = zkflags.read("taken")
    assert (doc["note"], doc["everyone"], version) == ("written elsewhere", True, 0)
    assert not Flag.objects.filter(name="taken").exists()
    assert audit("taken") == []


# -- change -------------------------------------------------------------------------------


def test_change_page_shows_zookeeper_values_and_version(zkflags, editor_client, members):
    users, groups = members
    flag = make_flag(editor_client, "shown", note="from the admin", users=users[:1])
    # Someone changes the flag straight in ZooKeeper; the row still mirrors version 0.
    version = zkflags.write(
        "shown", note="from zookeeper", everyone=False, percent=12.5, groups=[groups[0].pk]
    )
    assert version == 1
    flag.refresh_from_db()
    assert (flag.zk_version, flag.note) == (0, "from the admin")

    response = editor_client.get(change_url(flag))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form["note"].value() == "from zookeeper"
    assert form["everyone"].value() is False
    assert form["percent"].value() == Decimal("12.5")
    assert list(form["users"].value()) == [users[0].pk]
    assert list(form["groups"].value()) == [groups[0].pk]
    assert form["zk_version_seen"].value() == 1
    html = response.content.decode()
    assert 'name="zk_version_seen" value="1"' in html
    assert "from zookeeper" in html


def test_change_writes_zookeeper_version_plus_one_and_audits(
    zkflags, editor, editor_client, members
):
    users, groups = members
    flag = make_flag(editor_client, "edited", note="v0", users=users[:1])
    page = editor_client.get(change_url(flag))
    data = data_from_page(
        page, note="v1", authenticated=True, percent="50", users=users[1:], groups=groups
    )
    response = editor_client.post(change_url(flag), data)
    assert response.status_code == 302, (
        response.context and response.context["adminform"].form.errors
    )

    before = expected_doc("edited", note="v0", users=[users[0].pk])
    after = expected_doc(
        "edited",
        note="v1",
        authenticated=True,
        percent=50.0,
        users=sorted(u.pk for u in users[1:]),
        groups=sorted(g.pk for g in groups),
    )
    doc, version = zkflags.read("edited")
    assert (doc, version) == (after, 1)
    zkflags.wait_version("edited", 1)
    assert store.base.flags["edited"].to_document() == after

    flag.refresh_from_db()
    assert flag.zk_version == 1
    assert flag.to_rule().to_document() == after

    created, changed = audit("edited")
    assert created.action == FlagChange.CREATED
    assert changed.action == FlagChange.CHANGED
    assert changed.user == editor
    assert (changed.before, changed.after, changed.zk_version) == (before, after, 1)
    assert changed.changed_fields() == ["authenticated", "groups", "note", "percent", "users"]


def test_change_page_shows_history(zkflags, admin_client, superuser):
    flag = make_flag(admin_client, "historic", note="first")
    page = admin_client.get(change_url(flag))
    admin_client.post(change_url(flag), data_from_page(page, note="second", staff=True))
    make_flag(admin_client, "other-flag")  # not part of this flag's history

    response = admin_client.get(change_url(flag))
    entries = response.context["history_entries"]
    assert [e.change.action for e in entries] == ["changed", "created"]
    html = response.content.decode()
    assert "History (audit log)" in html
    assert html.count('class="zkflags-history"') == 2
    assert "staff: false → true" in html  # the diff of the fields the change touched
    assert superuser.username in html


def test_changelist_shows_the_live_rule_and_flags_a_stale_row(zkflags, admin_client):
    make_flag(admin_client, "listed", staff=True)
    zkflags.wait_version("listed", 0)
    html = admin_client.get(ADMIN).content.decode()
    assert "staff" in html and "⚠" not in html
    zkflags.write("listed", everyone=True)  # straight to ZooKeeper: the row still says v0
    html = admin_client.get(ADMIN).content.decode()
    assert "on for everyone" in html
    assert "ZooKeeper is at version 1, this row mirrors 0" in html


# -- conflicts ----------------------------------------------------------------------------


def test_stale_form_is_refused_and_changes_nothing(zkflags, admin_client):
    flag = make_flag(admin_client, "contested", note="original")
    page = admin_client.get(change_url(flag))
    assert page.context["adminform"].form["zk_version_seen"].value() == 0

    # Another writer gets there first.
    other = zkflags.write("contested", note="the other writer", everyone=True)
    assert other == 1

    response = admin_client.post(
        change_url(flag), data_from_page(page, note="mine", staff=True), follow=True
    )
    assert response.status_code == 200
    texts = response.context["adminform"].form.non_field_errors()  # the form, as typed
    assert any(CONFLICT_TEXT in t and "version 0" in t and "version 1" in t for t in texts)
    assert CONFLICT_TEXT in response.content.decode()

    doc, version = zkflags.read("contested")
    assert (doc["note"], doc["everyone"], doc["staff"], version) == (
        "the other writer",
        True,
        False,
        1,
    )
    flag.refresh_from_db()
    assert (flag.note, flag.staff, flag.everyone, flag.zk_version) == (
        "original",
        False,
        None,
        0,
    )
    assert [c.action for c in audit("contested")] == ["created"]

    # Reloading the page shows the other writer's values; saving from them works.
    page = admin_client.get(change_url(flag))
    assert page.context["adminform"].form["note"].value() == "the other writer"
    response = admin_client.post(change_url(flag), data_from_page(page, note="merged"))
    assert response.status_code == 302
    doc, version = zkflags.read("contested")
    assert (doc["note"], doc["everyone"], version) == ("merged", True, 2)
    assert [c.action for c in audit("contested")] == ["created", "changed"]


def test_delete_of_a_flag_changed_meanwhile_is_refused(zkflags, admin_client):
    flag = make_flag(admin_client, "doomed")
    zkflags.write("doomed", note="changed elsewhere")
    response = admin_client.post(delete_url(flag), {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert any(CONFLICT_TEXT in m for m in messages_of(response))
    assert zkflags.read("doomed")[1] == 1
    assert Flag.objects.filter(pk=flag.pk).exists()
    assert [c.action for c in audit("doomed")] == ["created"]


# -- delete -------------------------------------------------------------------------------


def test_delete_from_the_change_page(zkflags, editor, editor_client):
    flag = make_flag(editor_client, "short-lived", staff=True)
    zkflags.wait_version("short-lived", 0)
    response = editor_client.post(delete_url(flag), {"post": "yes"})
    assert response.status_code == 302

    assert zkflags.read("short-lived") == (None, None)
    wait_until(lambda: "short-lived" not in store.base.flags)
    assert not Flag.objects.filter(name="short-lived").exists()
    created, deleted = audit("short-lived")
    assert deleted.action == FlagChange.DELETED
    assert deleted.user == editor
    assert deleted.before == expected_doc("short-lived", staff=True)
    assert deleted.after is None
    assert deleted.zk_version is None


def test_bulk_delete_selected(zkflags, admin_client, superuser):
    flags = [make_flag(admin_client, f"bulk-{i}") for i in range(3)]
    keep = flags[2]
    zkflags.wait_version(keep.name, 0)
    page = admin_client.post(
        ADMIN,
        {"action": "delete_selected", "_selected_action": [f.pk for f in flags[:2]]},
    )
    assert page.status_code == 200  # the confirmation page; nothing gone yet
    assert zkflags.read("bulk-0")[1] == 0
    response = admin_client.post(
        ADMIN,
        {"action": "delete_selected", "_selected_action": [f.pk for f in flags[:2]], "post": "yes"},
    )
    assert response.status_code == 302

    for flag in flags[:2]:
        assert zkflags.read(flag.name) == (None, None)
        assert not Flag.objects.filter(pk=flag.pk).exists()
        assert [c.action for c in audit(flag.name)] == ["created", "deleted"]
        assert audit(flag.name)[1].user == superuser
    wait_until(lambda: not {"bulk-0", "bulk-1"} & set(store.base.flags))
    assert zkflags.read("bulk-2")[1] == 0
    assert "bulk-2" in store.base.flags
    assert Flag.objects.filter(pk=keep.pk).exists()
    assert [c.action for c in audit("bulk-2")] == ["created"]


# -- bulk actions -------------------------------------------------------------------------


def run_action(client: Client, action: str, flags: list[Flag], **kwargs: Any) -> Any:
    return client.post(
        ADMIN, {"action": action, "_selected_action": [f.pk for f in flags]}, **kwargs
    )


def test_bulk_actions_write_zookeeper_rows_and_one_audit_row_per_changed_flag(
    zkflags, editor, editor_client
):
    a = make_flag(editor_client, "act-a", staff=True)
    b = make_flag(editor_client, "act-b", everyone="True")
    c = make_flag(editor_client, "act-c")
    # b's znode moved on meanwhile; the action starts from what ZooKeeper holds now.
    zkflags.write("act-b", note="edited elsewhere")

    def state() -> dict[str, tuple[Any, int | None]]:
        result = {}
        for name in ("act-a", "act-b", "act-c"):
            doc, version = zkflags.read(name)
            result[name] = (doc["everyone"], version)
        return result

    def rows() -> dict[str, tuple[Any, int | None]]:
        return {f.name: (f.everyone, f.zk_version) for f in Flag.objects.all()}

    def changes() -> int:
        return FlagChange.objects.filter(source="admin action").count()

    response = run_action(editor_client, "turn_on_for_everyone", [a, b], follow=True)
    assert response.status_code == 200
    assert "1 flag(s) turned on for everyone." in messages_of(response)
    assert state() == {"act-a": (True, 1), "act-b": (True, 1), "act-c": (None, 0)}
    assert rows()["act-a"] == (True, 1)
    assert changes() == 1  # b was already on: nothing written, nothing recorded
    row_b = Flag.objects.get(name="act-b")
    assert row_b.zk_version == 0  # untouched: b's row was not part of a write

    response = run_action(editor_client, "turn_off_for_everyone", [a, b, c], follow=True)
    assert "3 flag(s) turned off for everyone." in messages_of(response)
    assert state() == {"act-a": (False, 2), "act-b": (False, 2), "act-c": (False, 1)}
    assert rows() == state()
    # The row mirrors the whole document that was written, including the other edit.
    assert Flag.objects.get(name="act-b").note == "edited elsewhere"
    assert Flag.objects.get(name="act-a").staff is True
    assert changes() == 4

    response = run_action(editor_client, "back_to_rules", [a, c], follow=True)
    assert "2 flag(s) back to their rules." in messages_of(response)
    assert state() == {"act-a": (None, 3), "act-b": (False, 2), "act-c": (None, 2)}
    assert rows() == state()
    assert changes() == 6
    zkflags.wait_version("act-a", 3)
    zkflags.wait_version("act-c", 2)
    assert store.base.flags["act-a"].everyone is None
    assert store.base.flags["act-b"].everyone is False

    last = FlagChange.objects.filter(flag_name="act-a").first()
    assert last.action == FlagChange.CHANGED
    assert last.user == editor
    assert (last.before["everyone"], last.after["everyone"], last.zk_version) == (False, None, 3)
    assert last.after == expected_doc("act-a", staff=True)
    for name, count in (("act-a", 4), ("act-b", 2), ("act-c", 3)):
        # created by the add form + one per action that changed it
        assert len(audit(name)) == count, name


# -- the audit log is read-only -----------------------------------------------------------


def test_flagchange_admin_is_read_only(zkflags, admin_client):
    make_flag(admin_client, "logged")
    change = FlagChange.objects.get(flag_name="logged")
    base = "/admin/django_zkflags/flagchange/"

    listing = admin_client.get(base)
    assert listing.status_code == 200
    assert "logged" in listing.content.decode()
    assert f'href="{base}add/"' not in listing.content.decode()
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.post(f"{base}add/", {"flag_name": "forged"}).status_code == 403

    view = admin_client.get(f"{base}{change.pk}/change/")
    assert view.status_code == 200  # view only
    assert 'name="_save"' not in view.content.decode()
    response = admin_client.post(
        f"{base}{change.pk}/change/", {"flag_name": "forged", "action": "deleted"}
    )
    assert response.status_code == 403
    assert admin_client.post(f"{base}{change.pk}/delete/", {"post": "yes"}).status_code == 403
    response = admin_client.post(
        base, {"action": "delete_selected", "_selected_action": [change.pk], "post": "yes"}
    )
    change.refresh_from_db()
    assert (change.flag_name, change.action) == ("logged", "created")
    assert FlagChange.objects.count() == 1


# -- permissions --------------------------------------------------------------------------


def test_anonymous_is_sent_to_login_and_nothing_is_written(zkflags, admin_client):
    flag = make_flag(admin_client, "guarded-flag")
    anonymous = Client()
    attempts = [
        (ADD_URL, form_data("anon-flag", everyone="True")),
        (change_url(flag), form_data(note="anon", everyone="True", zk_version_seen=0)),
        (delete_url(flag), {"post": "yes"}),
        (ADMIN, {"action": "turn_on_for_everyone", "_selected_action": [flag.pk]}),
        (
            ADMIN,
            {"action": "delete_selected", "_selected_action": [flag.pk], "post": "yes"},
        ),
    ]
    for url, data in attempts:
        response = anonymous.post(url, data)
        assert response.status_code == 302, url
        assert response.url.startswith("/admin/login/"), url
    assert anonymous.get(change_url(flag)).url.startswith("/admin/login/")

    assert zkflags.read("anon-flag") == (None, None)
    doc, version = zkflags.read("guarded-flag")
    assert (doc["everyone"], doc["note"], version) == (None, "", 0)
    flag.refresh_from_db()
    assert (flag.everyone, flag.zk_version) == (None, 0)
    assert not Flag.objects.filter(name="anon-flag").exists()
    assert FlagChange.objects.count() == 1


@pytest.mark.parametrize("perms", [(), ("view_flag",)], ids=["no-perms", "view-only"])
def test_staff_without_permission_gets_403_and_nothing_is_written(zkflags, admin_client, perms):
    flag = make_flag(admin_client, "locked")
    intruder = logged_in(_staff("intruder", *perms))

    response = intruder.post(ADD_URL, form_data("sneaky", everyone="True"))
    assert response.status_code == 403
    response = intruder.post(
        change_url(flag), form_data(note="sneaky", everyone="True", zk_version_seen=0)
    )
    assert response.status_code == 403
    response = intruder.post(delete_url(flag), {"post": "yes"})
    assert response.status_code == 403

    for action in ("turn_on_for_everyone", "turn_off_for_everyone", "delete_selected"):
        response = intruder.post(
            ADMIN, {"action": action, "_selected_action": [flag.pk], "post": "yes"}
        )
        if perms:  # may see the list, but the action is not offered
            assert response.status_code in (200, 302)
            assert not any("flag(s)" in m for m in messages_of(response))
        else:
            assert response.status_code == 403
    if perms:
        listing = intruder.get(ADMIN)
        assert listing.status_code == 200
        assert "turn_on_for_everyone" not in listing.content.decode()

    assert zkflags.read("sneaky") == (None, None)
    doc, version = zkflags.read("locked")
    assert (doc["everyone"], doc["note"], version) == (None, "", 0)
    flag.refresh_from_db()
    assert (flag.everyone, flag.note, flag.zk_version) == (None, "", 0)
    assert not Flag.objects.filter(name="sneaky").exists()
    assert FlagChange.objects.count() == 1


def test_staff_with_change_but_not_add_permission(zkflags, admin_client):
    flag = make_flag(admin_client, "half-open")
    changer = logged_in(_staff("changer", "change_flag", "view_flag"))
    assert changer.post(ADD_URL, form_data("not-allowed")).status_code == 403
    assert zkflags.read("not-allowed") == (None, None)
    page = changer.get(change_url(flag))
    response = changer.post(change_url(flag), data_from_page(page, note="allowed"))
    assert response.status_code == 302
    assert zkflags.read("half-open")[0]["note"] == "allowed"


# -- invalid input ------------------------------------------------------------------------

BAD_NAMES = {
    "space": "two words",
    "slash": "a/b",
    "too-long": "x" * 101,
    "empty": "",
    "unicode": "café",
    "dot": ".",
    "dotdot": "..",
    "newline": "new\nline",  # (surrounding whitespace is stripped by the form)
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_names_are_form_errors(zkflags, admin_client, name):
    response = admin_client.post(ADD_URL, form_data(name))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "name" in errors
    assert not Flag.objects.exists()
    assert zkflags.reader.flag_names() == []
    assert FlagChange.objects.count() == 0


@pytest.mark.parametrize("percent", ["-1", "100.5", "12.34", "1e400", "nan", "abc"])
def test_bad_percent_is_a_form_error_on_add_and_change(zkflags, admin_client, percent):
    response = admin_client.post(ADD_URL, form_data("pct", percent=percent))
    assert response.status_code == 200
    assert "percent" in response.context["adminform"].form.errors
    assert zkflags.read("pct") == (None, None)
    assert not Flag.objects.filter(name="pct").exists()

    flag = make_flag(admin_client, "pct-ok", percent="10")
    page = admin_client.get(change_url(flag))
    response = admin_client.post(change_url(flag), data_from_page(page, percent=percent))
    assert response.status_code == 200
    assert "percent" in response.context["adminform"].form.errors
    doc, version = zkflags.read("pct-ok")
    assert (doc["percent"], version) == (10.0, 0)
    flag.refresh_from_db()
    assert flag.percent == Decimal("10")
    assert FlagChange.objects.filter(flag_name="pct").count() == 0
    assert [c.action for c in audit("pct-ok")] == ["created"]


def test_edge_percents_are_accepted(zkflags, admin_client):
    for name, percent, want in (("p0", "0", 0.0), ("p100", "100", 100.0), ("p01", "0.1", 0.1)):
        flag = make_flag(admin_client, name, percent=percent)
        assert zkflags.read(name)[0]["percent"] == want
        assert flag.percent == Decimal(percent)
