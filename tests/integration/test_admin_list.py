"""The admin's flag list against a real ZooKeeper: one-click toggles (versioned, audited,
CSRF-protected, for the change permission only), the live rule summary naming environment
overrides, the filters' plain labels. The list at 10,000 flags: test_admin_list_scale.py.

The toggles are submitted as a browser would: from the form the list page drew for the
row (its action, its version, its CSRF token and the list's filters).
"""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_zkflags import flag_is_active_for_user, services
from django_zkflags.cache import store
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import FlagRule, validate_environments_document
from tests.support.admin_pages import ADMIN, make_flag, messages_of

from ..conftest import audit, flag_doc, served_version, wait_until

pytestmark = pytest.mark.django_db

TOGGLE_SOURCE = "admin toggle"


# -- helpers ------------------------------------------------------------------------------


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    perms = Permission.objects.filter(
        content_type__app_label="django_zkflags", codename__in=codenames
    )
    assert perms.count() == len(codenames)
    user.user_permissions.set(perms)
    return user


def logged_in(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def editor() -> User:
    return staff("editor", "add_flag", "change_flag", "delete_flag", "view_flag")


@pytest.fixture
def editor_client(editor: User) -> Client:
    return logged_in(editor)


def toggle_form(page_html: str, flag: Flag) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the toggle form the list drew for ``flag``, as a
    browser submits it: the inputs inside the form and those of the row that name it in
    their ``form`` attribute."""
    form_id = f"zkflags-toggle-{flag.pk}"
    match = re.search(
        rf'<form id="{form_id}" method="post" action="([^"]+)">(.*?)</form>', page_html, re.S
    )
    assert match, f"no toggle form for {flag.name}"
    inside = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', match.group(2))
    outside = re.findall(
        rf'<input type="hidden" form="{form_id}" name="([^"]+)" value="([^"]*)"', page_html
    )
    fields = {name: html_lib.unescape(value) for name, value in inside + outside}
    return html_lib.unescape(match.group(1)), fields


def buttons(page_html: str, flag: Flag) -> list[tuple[str, bool]]:
    """The row's toggle buttons: (value, disabled)."""
    found = re.findall(
        rf'<button type="submit" form="zkflags-toggle-{flag.pk}" name="everyone" '
        r'value="(\w+)"[^>]*?( disabled)?>',
        page_html,
    )
    return [(value, bool(disabled)) for value, disabled in found]


def toggle(client: Client, flag: Flag, everyone: str, *, query: str = "", **kwargs: Any) -> Any:
    """Draw the list (with ``query``), then press the row's ``everyone`` button."""
    page = client.get(f"{ADMIN}?{query}" if query else ADMIN)
    assert page.status_code == 200
    action, fields = toggle_form(page.content.decode(), flag)
    return client.post(action, {**fields, "everyone": everyone}, **kwargs)


def zk_state(zkflags: Any, name: str) -> tuple[Any, Any]:
    return zkflags.read(name)


def nothing_changed(zkflags: Any, flag: Flag, before: tuple[Any, ...]) -> None:
    assert snapshot_of(zkflags, flag) == before


def snapshot_of(zkflags: Any, flag: Flag) -> tuple[Any, ...]:
    """Everything a toggle could change: ZooKeeper, the row, the audit log."""
    row = Flag.objects.get(pk=flag.pk)
    return (
        zkflags.read(flag.name),
        (row.everyone, row.zk_version, row.modified),
        FlagChange.objects.count(),
    )


# -- toggles ------------------------------------------------------------------------------


def test_toggles_write_zookeeper_serve_here_audit_and_keep_the_list_filters(
    zkflags, editor, editor_client
):
    flag = make_flag(editor_client, "new-checkout", percent="10", note="the new checkout")
    zkflags.wait_version("new-checkout", 0)
    query = "everyone=rules&q=checkout&o=1"

    page = editor_client.get(f"{ADMIN}?{query}").content.decode()
    assert buttons(page, flag) == [("on", False), ("off", False), ("rules", True)]
    action, fields = toggle_form(page, flag)
    assert action == f"{ADMIN}{flag.pk}/toggle/"
    assert fields["version"] == "0"  # the version the page was drawn with
    assert fields["csrfmiddlewaretoken"]
    modified = [Flag.objects.get(pk=flag.pk).modified]

    response = toggle(editor_client, flag, "off", query=query)
    assert response.status_code == 302
    assert response.url == f"{ADMIN}?{query}"  # filters, search and order kept
    listing = editor_client.get(response.url)
    assert "“new-checkout” turned off for everyone (version 1)" in messages_of(listing)
    # ZooKeeper, this process's answer, the row, the audit log.
    doc, version = zkflags.read("new-checkout")
    assert (doc, version) == (
        flag_doc("new-checkout", everyone=False, percent=10.0, note="the new checkout"),
        1,
    )
    assert served_version("new-checkout") == 1  # served when the list is drawn again
    assert flag_is_active_for_user(editor, "new-checkout") is False
    row = Flag.objects.get(pk=flag.pk)
    assert (row.everyone, row.zk_version) == (False, 1)
    assert row.modified > modified[-1]  # "Modified" moves with a toggle
    modified.append(row.modified)
    change = audit("new-checkout")[-1]
    assert (change.action, change.user, change.username, change.source) == (
        FlagChange.CHANGED,
        editor,
        "editor",
        TOGGLE_SOURCE,
    )
    assert (change.before["everyone"], change.after["everyone"], change.zk_version) == (
        None,
        False,
        1,
    )
    # The list drawn after the toggle shows the new state, at the new version (it left
    # the "decided by rules" filter the list was drawn with).
    assert "new-checkout" not in [f.name for f in listing.context["cl"].result_list]
    page = editor_client.get(ADMIN).content.decode()
    assert toggle_form(page, flag)[1]["version"] == "1"
    assert buttons(page, flag) == [("on", False), ("off", True), ("rules", False)]

    response = toggle(editor_client, flag, "on", follow=True)
    assert "“new-checkout” turned on for everyone (version 2)" in messages_of(response)
    assert flag_is_active_for_user(None, "new-checkout") is True
    assert zkflags.read("new-checkout")[0]["everyone"] is True

    response = toggle(editor_client, flag, "rules", follow=True)
    assert "“new-checkout” back to its rules: 10% (version 3)" in messages_of(response)
    assert served_version("new-checkout") == 3
    assert store.base.flags["new-checkout"].everyone is None
    row = Flag.objects.get(pk=flag.pk)
    assert (row.everyone, row.zk_version, row.percent) == (None, 3, 10)
    assert [c.source for c in audit("new-checkout")] == ["admin", *[TOGGLE_SOURCE] * 3]

    # Pressing the state it already has writes nothing (the button is disabled; a POST
    # sent all the same is harmless).
    response = toggle(editor_client, flag, "rules", follow=True)
    assert "“new-checkout” was already decided by its rules (version 3); nothing was written." in (
        messages_of(response)
    )
    assert zkflags.read("new-checkout")[1] == 3
    assert len(audit("new-checkout")) == 4


def test_a_toggle_from_a_page_drawn_before_a_change_is_refused_and_changes_nothing(
    zkflags, editor_client
):
    flag = make_flag(editor_client, "contested")
    page = editor_client.get(ADMIN).content.decode()
    action, fields = toggle_form(page, flag)
    assert fields["version"] == "0"

    # Alice turns it off from her own list meanwhile.
    alice = staff("alice", "change_flag", "view_flag")
    services.toggle_flag("contested", False, expected_version=0, actor=alice, source="admin toggle")
    before = snapshot_of(zkflags, flag)

    response = editor_client.post(action, {**fields, "everyone": "on"}, follow=True)
    assert response.status_code == 200
    [message] = messages_of(response)
    assert message == (
        "Not toggled: contested was changed by alice (admin toggle) since this page was "
        "drawn (at version 0); it is now off for everyone at version 1. Nothing was saved: "
        "look again, then toggle from the page as it is now."
    )
    nothing_changed(zkflags, flag, before)
    assert zkflags.read("contested")[0]["everyone"] is False

    # A change straight to ZooKeeper (no audit row) is refused too, and says so.
    page = editor_client.get(ADMIN).content.decode()
    action, fields = toggle_form(page, flag)
    assert fields["version"] == "1"
    zkflags.write("contested", everyone=None, staff=True)
    before = snapshot_of(zkflags, flag)
    response = editor_client.post(action, {**fields, "everyone": "off"}, follow=True)
    [message] = messages_of(response)
    assert "contested was changed by someone else (no audit row for that version yet)" in message
    assert "it is now staff at version 2" in message
    nothing_changed(zkflags, flag, before)

    # Deleted meanwhile: refused, naming who deleted it; nothing is created again.
    page = editor_client.get(ADMIN).content.decode()
    action, fields = toggle_form(page, flag)
    services.delete_flag("contested", expected_version=2, actor=alice, source="admin")
    response = editor_client.post(action, {**fields, "everyone": "off"}, follow=True)
    assert response.status_code == 200
    [message] = messages_of(response)
    assert message.startswith(
        "Not toggled: contested was deleted by alice (admin) since this page was drawn "
        "(at version 2). Nothing was saved"
    )
    assert zkflags.read("contested") == (None, None)
    assert not Flag.objects.filter(name="contested").exists()
    assert audit("contested")[-1].action == FlagChange.DELETED


def test_a_flag_changed_outside_the_admin_is_drawn_and_toggled_at_the_version_served(
    zkflags, editor_client
):
    """The buttons start from what this process serves (the live column), not from a row
    that a write outside the admin left behind: such a flag is not stuck refusing."""
    flag = make_flag(editor_client, "elsewhere")
    zkflags.write("elsewhere", everyone=True)  # straight to ZooKeeper: the row says v0
    page = editor_client.get(ADMIN).content.decode()
    assert toggle_form(page, flag)[1]["version"] == "1"
    assert buttons(page, flag) == [("on", True), ("off", False), ("rules", False)]
    response = toggle(editor_client, flag, "off", follow=True)
    assert "“elsewhere” turned off for everyone (version 2)" in messages_of(response)
    row = Flag.objects.get(pk=flag.pk)
    assert (row.everyone, row.zk_version) == (False, 2)


def test_a_toggle_racing_a_write_between_its_read_and_its_write_is_refused(zkflags):
    """The version is checked by ZooKeeper itself (a versioned multi), not only by the
    read before it: the race window is closed."""
    services.save_flag(FlagRule("raced"), expected_version=None, source="test")
    zkflags.write("raced", note="other")  # now at version 1
    with pytest.raises(services.StaleToggle) as refused:
        services.toggle_flag("raced", True, expected_version=0, source=TOGGLE_SOURCE)
    assert refused.value.current_version == 1
    assert zkflags.read("raced")[1] == 1
    assert not FlagChange.objects.filter(source=TOGGLE_SOURCE).exists()


@pytest.mark.parametrize("perms", [(), ("view_flag",)], ids=["no-perms", "view-only"])
def test_without_the_change_permission_no_buttons_and_a_forged_post_gets_403(
    zkflags, editor_client, perms
):
    flag = make_flag(editor_client, "locked")
    page = editor_client.get(ADMIN).content.decode()
    action, fields = toggle_form(page, flag)
    before = snapshot_of(zkflags, flag)

    intruder = logged_in(staff("intruder", *perms))
    if perms:
        listing = intruder.get(ADMIN).content.decode()
        assert "locked" in listing
        assert 'form="zkflags-toggle' not in listing  # no buttons
        assert '<form id="zkflags-toggle' not in listing and "/toggle/" not in listing
    for everyone in ("on", "off", "rules"):
        response = intruder.post(action, {**fields, "everyone": everyone})
        assert response.status_code == 403
    nothing_changed(zkflags, flag, before)


def test_anonymous_posts_are_sent_to_login_and_change_nothing(zkflags, editor_client):
    flag = make_flag(editor_client, "guarded")
    page = editor_client.get(ADMIN).content.decode()
    action, fields = toggle_form(page, flag)
    before = snapshot_of(zkflags, flag)
    anonymous = Client()
    for everyone in ("on", "off", "rules"):
        response = anonymous.post(action, {**fields, "everyone": everyone})
        assert response.status_code == 302
        assert response.url.startswith("/admin/login/")
    nothing_changed(zkflags, flag, before)


def test_csrf_is_enforced_and_a_get_changes_nothing(zkflags, editor, editor_client):
    flag = make_flag(editor_client, "csrf-guarded")
    browser = logged_in(editor, enforce_csrf_checks=True)
    page = browser.get(ADMIN).content.decode()
    action, fields = toggle_form(page, flag)
    before = snapshot_of(zkflags, flag)

    forged = {k: v for k, v in fields.items() if k != "csrfmiddlewaretoken"}
    assert browser.post(action, {**forged, "everyone": "on"}).status_code == 403
    bad_token = {**fields, "csrfmiddlewaretoken": "x" * 64, "everyone": "on"}
    assert browser.post(action, bad_token).status_code == 403
    assert browser.get(f"{action}?everyone=on&version=0").status_code == 405
    nothing_changed(zkflags, flag, before)

    # The form as the page drew it passes.
    response = browser.post(action, {**fields, "everyone": "on"})
    assert response.status_code == 302
    assert zkflags.read("csrf-guarded")[0]["everyone"] is True


def test_incomplete_or_bad_toggle_posts_change_nothing(zkflags, editor_client):
    flag = make_flag(editor_client, "careful")
    page = editor_client.get(ADMIN).content.decode()
    action, fields = toggle_form(page, flag)
    before = snapshot_of(zkflags, flag)
    for data in (
        {**fields},  # no button
        {**fields, "everyone": "maybe"},
        {**fields, "everyone": "on", "version": ""},
        {**fields, "everyone": "on", "version": "zero"},
        {k: v for k, v in {**fields, "everyone": "on"}.items() if k != "version"},
    ):
        response = editor_client.post(action, data, follow=True)
        assert response.status_code == 200
        assert any(m.startswith("Not toggled: careful") for m in messages_of(response))
    # A redirect is only ever to the list: the filters field cannot point elsewhere.
    response = editor_client.post(
        action, {**fields, "everyone": "maybe", "_changelist_filters": "//evil.example/"}
    )
    assert response.url.startswith(f"{ADMIN}?")
    nothing_changed(zkflags, flag, before)
    # A row that is gone, with a name ZooKeeper does not have: refused, nothing created.
    gone = {**fields, "everyone": "on", "name": "never-was"}
    response = editor_client.post(f"{ADMIN}999999/toggle/", gone, follow=True)
    assert any("never-was was deleted" in m for m in messages_of(response))
    assert zkflags.read("never-was") == (None, None)
    assert not Flag.objects.filter(name="never-was").exists()


def test_modified_moves_for_list_actions_too(zkflags, editor_client):
    flag = make_flag(editor_client, "touched")
    before = Flag.objects.get(pk=flag.pk).modified
    response = editor_client.post(
        ADMIN, {"action": "turn_off_for_everyone", "_selected_action": [flag.pk]}
    )
    assert response.status_code == 302
    row = Flag.objects.get(pk=flag.pk)
    assert (row.everyone, row.zk_version) == (False, 1)
    assert row.modified > before


# -- the live rule summary --------------------------------------------------------------


def row_cell(page_html: str, flag: Flag, field: str) -> str:
    """The text of one cell of the row of ``flag``."""
    rows = re.findall(r"<tr>(.*?)</tr>", page_html, re.S)
    [row] = [r for r in rows if f'value="{flag.pk}"' in r]
    match = re.search(rf'<td class="field-{field}">(.*?)</td>', row, re.S)
    assert match, f"no {field} cell"
    return match.group(1)


def text_of(cell: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", cell)).split())


def test_the_summary_names_environment_overrides_and_says_when_one_applies_here(
    zkflags, editor_client, settings
):
    zkflags.writer.write_environments(
        validate_environments_document(
            {"parents": {"production": None, "canary": "production", "staging": None}}
        ),
        None,
    )
    services.save_flag(
        FlagRule(
            "new-checkout",
            percent=10,
            environments={
                "staging": {"everyone": True},
                "canary": {"percent": 50, "value": {"provider": "new"}},
            },
        ),
        expected_version=None,
        source="test",
    )
    services.save_flag(FlagRule("plain", staff=True), expected_version=None, source="test")
    zkflags.wait_version("new-checkout", 0)
    zkflags.wait_version("plain", 0)
    flag, plain = Flag.objects.get(name="new-checkout"), Flag.objects.get(name="plain")

    # No environment here: the base rule and each override, nothing applies here.
    page = editor_client.get(ADMIN).content.decode()
    assert text_of(row_cell(page, flag, "rule_summary")) == (
        '10% · canary: 50%, value {"provider": "new"} · staging: on for everyone'
    )
    assert text_of(row_cell(page, plain, "rule_summary")) == "staff"

    # This process in staging: its override is marked, and what it serves is said.
    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "staging"}
    wait_until(lambda: store.base.chain == ("staging",))
    assert flag_is_active_for_user(None, "new-checkout") is True
    cell = row_cell(editor_client.get(ADMIN).content.decode(), flag, "rule_summary")
    assert text_of(cell) == (
        '10% · canary: 50%, value {"provider": "new"} · staging: on for everyone '
        "this process (staging) serves: on for everyone"
    )
    assert re.search(r"<strong [^>]*>staging: on for everyone</strong>", cell)
    assert "applies this override" in cell
    # The toggles show the flag's own setting, not the override: it is decided by rules.
    page = editor_client.get(ADMIN).content.decode()
    assert buttons(page, flag) == [("on", False), ("off", False), ("rules", True)]

    # In canary (child of production): canary's override applies here.
    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "canary"}
    wait_until(lambda: store.base.chain == ("production", "canary"))
    cell = row_cell(editor_client.get(ADMIN).content.decode(), flag, "rule_summary")
    assert text_of(cell).endswith("this process (canary) serves: 50%")
    assert "production → canary" in cell
    assert "serves" not in row_cell(
        editor_client.get(ADMIN).content.decode(), plain, "rule_summary"
    )


def test_the_summary_escapes_what_it_shows(zkflags, editor_client):
    services.save_flag(
        FlagRule("escaped", environments={"x": {"value": "<script>alert(1)</script>"}}),
        expected_version=None,
        source="test",
    )
    zkflags.wait_version("escaped", 0)
    page = editor_client.get(ADMIN).content.decode()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;" in row_cell(page, Flag.objects.get(name="escaped"), "rule_summary")


# -- filters ------------------------------------------------------------------------------


def names_listed(response: Any) -> list[str]:
    return [flag.name for flag in response.context["cl"].result_list]


def test_filters_have_plain_labels_and_filter(zkflags, editor_client):
    users = [User.objects.create_user(f"member{i}") for i in range(2)]
    for rule in (
        FlagRule("f-on", everyone=True),
        FlagRule("f-off", everyone=False),
        FlagRule("f-rules", percent=5),
        FlagRule("f-users", users=[u.pk for u in users]),
        FlagRule("f-staff", staff=True, environments={"staging": {"everyone": True}}),
    ):
        services.save_flag(rule, expected_version=None, source="test")

    response = editor_client.get(ADMIN)
    page = response.content.decode()
    filters = re.search(r'<div id="changelist-filter".*?</nav>', page, re.S)
    text = text_of(filters.group(0) if filters else page)
    assert "For everyone All On Off Decided by rules" in text
    assert (
        "Rule includes All Superusers Staff Authenticated users A percentage Listed users "
        "Listed groups Environment overrides"
    ) in text
    assert "Unknown" not in text and "By " not in text

    def listed(query: str) -> list[str]:
        return names_listed(editor_client.get(f"{ADMIN}?{query}"))

    assert listed("everyone=on") == ["f-on"]
    assert listed("everyone=off") == ["f-off"]
    assert listed("everyone=rules") == ["f-rules", "f-staff", "f-users"]
    assert listed("rule=percent") == ["f-rules"]
    assert listed("rule=users") == ["f-users"]  # once, though it lists two users
    assert listed("rule=staff") == ["f-staff"]
    assert listed("rule=environments") == ["f-staff"]
    assert listed("rule=groups") == []
    assert listed("everyone=rules&rule=staff&q=f-") == ["f-staff"]
