"""A flag's history in the admin, against a real ZooKeeper: the change page's history (a
diff per change, who, when in one time zone, source, links), "restore this version", the
deleted flags page, Django's History button, the audit log page; and who may do what.

Every restore must reach ZooKeeper as a new version, be mirrored by the row and audited;
a refused one (a conflict, no permission, no CSRF token) changes nothing anywhere.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from django_zkflags import services
from django_zkflags.models import Flag, FlagChange
from tests.support.admin_pages import (
    ADMIN,
    change_url,
    data_from_page,
    delete_url,
    make_flag,
    messages_of,
)

from ..conftest import audit, flag_doc, row_state, served_version, wait_until

pytestmark = pytest.mark.django_db

DELETED_URL = f"{ADMIN}deleted/"
AUDIT_URL = "/admin/django_zkflags/flagchange/"


# -- fixtures ------------------------------------------------------------------------------


def logged_in(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser("boss", password="pw")


@pytest.fixture
def admin_client(superuser: User) -> Client:
    return logged_in(superuser)


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_zkflags", codename__in=codenames)
    )
    return user


@pytest.fixture
def viewer() -> User:
    """Staff who may look at flags and the audit log, and change nothing."""
    return staff("viewer", "view_flag", "view_flagchange")


def edit(client: Client, flag: Flag, **changes: Any) -> None:
    """Save the change form as a person would: from the page as drawn, with ``changes``."""
    page = client.get(change_url(flag))
    response = client.post(change_url(flag), data_from_page(page, **changes))
    assert response.status_code == 302, (
        response.context and response.context["adminform"].form.errors
    )


def restore_forms(html: str) -> dict[str, dict[str, str]]:
    """The "restore this version" forms of a page, as a browser sees them: action -> fields."""
    forms = {}
    for match in re.finditer(
        r'<form method="post" action="([^"]+)" class="zkflags-restore">(.*?)</form>', html, re.S
    ):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', match[2]))
        forms[match[1]] = fields
    return forms


def entry_for_version(response: Any, version: int) -> Any:
    [entry] = [
        e
        for e in response.context["history_entries"]
        if e.change.zk_version == version and e.change.after is not None
    ]
    return entry


def post_restore(client: Client, page: Any, version: int, **kwargs: Any) -> Any:
    """Press "Restore this version" on the row of ``version`` of a page drawn earlier."""
    url = entry_for_version(page, version).restore_url
    assert url is not None
    fields = restore_forms(page.content.decode())[url]
    return client.post(url, fields, **kwargs)


# -- the change page's history --------------------------------------------------------------


def test_change_page_shows_diffs_newest_first_with_names_time_zone_and_links(
    zkflags, admin_client, superuser, settings
):
    settings.TIME_ZONE = "Asia/Kathmandu"  # +05:45: no chance of matching UTC by accident
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    flag = make_flag(admin_client, "checkout", percent="10", users=[bob])
    edit(admin_client, flag, percent="25", users=[alice])
    edit(admin_client, flag, value='{"limit": 3}')

    response = admin_client.get(change_url(flag))
    assert response.status_code == 200
    entries = response.context["history_entries"]
    assert [(e.change.action, e.change.zk_version) for e in entries] == [
        ("changed", 2),
        ("changed", 1),
        ("created", 0),
    ]
    assert [str(d) for d in entries[0].diff] == ['value: null → {"limit":3}']
    assert [str(d) for d in entries[1].diff] == ["percent: 10 → 25", "users: +alice −bob"]
    assert [str(d) for d in entries[2].diff] == ["percent: 10", "users: +bob"]
    assert [e.current for e in entries] == [True, False, False]

    html = response.content.decode()
    assert "When (Asia/Kathmandu)" in html
    assert "percent: 10 → 25" in html
    assert "users: +alice −bob" in html
    local = timezone.localtime(entries[1].change.at, timezone=timezone.get_current_timezone())
    assert local.strftime("%Y-%m-%d %H:%M:%S") in html
    assert local.utcoffset().total_seconds() == 5 * 3600 + 45 * 60
    for entry in entries:
        assert f'href="{AUDIT_URL}{entry.change.pk}/change/"' in html
        assert entry.change.source in html
    assert superuser.username in html
    # Every row but the current one has a restore button, from the version shown.
    forms = restore_forms(html)
    assert set(forms) == {e.restore_url for e in entries[1:]}
    assert {f["expected_version"] for f in forms.values()} == {"2"}
    # The audit log's own page of a change shows the same, in the same time zone.
    audit_page = admin_client.get(f"{AUDIT_URL}{entries[1].change.pk}/change/").content.decode()
    assert "users: +alice −bob" in audit_page
    assert local.strftime("%H:%M:%S") in audit_page
    assert str(entries[1].change).endswith(local.strftime("%H:%M:%S +0545"))


def test_restore_an_earlier_version_after_later_changes(zkflags, admin_client, superuser):
    alice = User.objects.create_user("alice")
    flag = make_flag(admin_client, "rollout", percent="10", note="small")
    v0_doc, _ = zkflags.read("rollout")
    edit(admin_client, flag, percent="25", note="bigger")
    edit(admin_client, flag, percent="50", users=[alice], everyone="True")
    v2_doc, version = zkflags.read("rollout")
    assert version == 2

    page = admin_client.get(change_url(flag))
    response = post_restore(admin_client, page, 0, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0].endswith(f"{change_url(flag)}#history")
    message = messages_of(response)[-1]
    assert "Restored flag rollout as it was at version 0" in message
    assert "now at version 3" in message

    # A new version in ZooKeeper with the old document; the row mirrors it; this process
    # serves it; one audit row says who restored what.
    assert zkflags.read("rollout") == (v0_doc, 3)
    assert row_state("rollout") == (v0_doc, 3)
    wait_until(lambda: served_version("rollout") == 3)
    reverted = audit("rollout")[-1]
    assert (reverted.action, reverted.zk_version) == (FlagChange.REVERTED, 3)
    assert (reverted.before, reverted.after) == (v2_doc, v0_doc)
    assert (reverted.user, reverted.username, reverted.source) == (superuser, "boss", "admin")
    assert len(audit("rollout")) == 4

    # The history now shows the restore on top, as the current version, with its diff.
    page = admin_client.get(change_url(flag))
    top = page.context["history_entries"][0]
    assert top.current and top.change == reverted
    assert "everyone: true → null" in [str(d) for d in top.diff]
    assert "restored an earlier version" in page.content.decode()

    # Restoring the version the flag already has writes nothing.
    response = post_restore(admin_client, page, 0, follow=True)
    message = messages_of(response)[-1]
    assert "already is as it was at version 0" in message and "nothing was written" in message
    assert zkflags.read("rollout") == (v0_doc, 3)
    assert len(audit("rollout")) == 4


def test_restore_refused_when_the_flag_moved_since_the_page_was_drawn(zkflags, admin_client):
    flag = make_flag(admin_client, "contested", percent="10")
    edit(admin_client, flag, percent="20")
    page = admin_client.get(change_url(flag))  # shows version 1
    # Meanwhile someone else changes it (another admin, the command, an ORM save...).
    services.update_flag(
        "contested", lambda doc: {**doc, "percent": 90.0}, actor="someone", source="command"
    )
    moved, version = zkflags.read("contested")
    assert version == 2
    rows = len(audit("contested"))

    response = post_restore(admin_client, page, 0, follow=True)
    assert response.status_code == 200
    message = messages_of(response)[-1]
    assert "changed since the page was drawn" in message
    assert "was at version 1 then, and is now at version 2" in message
    assert "Nothing was restored" in message
    assert zkflags.read("contested") == (moved, 2)
    assert row_state("contested") == (moved, 2)
    assert len(audit("contested")) == rows

    # Drawn again, the page offers the restore from version 2, which then succeeds.
    page = admin_client.get(change_url(flag))
    assert post_restore(admin_client, page, 0).status_code == 302
    doc, version = zkflags.read("contested")
    assert (doc["percent"], version) == (10.0, 3)


def test_restore_of_a_flag_deleted_since_the_page_was_drawn_is_refused(zkflags, admin_client):
    flag = make_flag(admin_client, "vanishing", percent="10")
    edit(admin_client, flag, percent="20")
    page = admin_client.get(change_url(flag))
    # The row stays (an ORM row whose znode another editor deleted straight in ZooKeeper).
    zkflags.writer.delete_flag("vanishing", 1)
    response = post_restore(admin_client, page, 0, follow=True)
    assert "and was deleted" in messages_of(response)[-1]
    assert zkflags.read("vanishing") == (None, None)


def test_a_restore_leaves_out_users_that_no_longer_exist(zkflags, admin_client):
    gone = User.objects.create_user("gone")
    kept = User.objects.create_user("kept")
    flag = make_flag(admin_client, "members", users=[gone, kept])
    edit(admin_client, flag, users=[])
    gone_pk = gone.pk
    gone.delete()

    page = admin_client.get(change_url(flag))
    assert f"users: −#{gone_pk} (deleted) −kept" in page.content.decode()
    response = post_restore(admin_client, page, 0, follow=True)
    assert f"Left out users #{gone_pk}" in messages_of(response)[-1]
    doc, version = zkflags.read("members")
    assert (doc["users"], version) == ([kept.pk], 2)
    assert row_state("members") == (doc, 2)


# -- the deleted flags ---------------------------------------------------------------------


def test_deleted_flag_listed_and_restored(zkflags, admin_client, superuser):
    alice = User.objects.create_user("alice")
    flag = make_flag(admin_client, "retired", percent="30", users=[alice], note="old feature")
    edit(admin_client, flag, staff=True)
    before_delete, _ = zkflags.read("retired")
    make_flag(admin_client, "still-here")
    assert admin_client.post(delete_url(flag), {"post": "yes"}).status_code == 302
    assert zkflags.read("retired") == (None, None)
    deleted_row = audit("retired")[-1]
    assert deleted_row.action == FlagChange.DELETED

    # Linked from the change page of any flag and from the audit log.
    other = Flag.objects.get(name="still-here")
    assert f'href="{DELETED_URL}"' in admin_client.get(change_url(other)).content.decode()
    assert f'href="{DELETED_URL}"' in admin_client.get(AUDIT_URL).content.decode()

    page = admin_client.get(DELETED_URL)
    assert page.status_code == 200
    [entry] = page.context["entries"]
    assert entry["change"] == deleted_row
    html = page.content.decode()
    assert "retired" in html and "still-here" not in html
    assert "users: +alice" in html and "staff: true" in html
    assert f'name="change" value="{deleted_row.pk}"' in html

    response = admin_client.post(
        DELETED_URL, {"name": "retired", "change": deleted_row.pk}, follow=True
    )
    restored = Flag.objects.get(name="retired")
    assert response.redirect_chain[-1][0] == change_url(restored)
    assert "Restored flag retired as it was when it was deleted" in messages_of(response)[-1]
    assert zkflags.read("retired") == (before_delete, 0)
    assert row_state("retired") == (before_delete, 0)
    wait_until(lambda: served_version("retired") == 0)
    undeleted = audit("retired")[-1]
    assert (undeleted.action, undeleted.before, undeleted.after) == (
        FlagChange.UNDELETED,
        None,
        before_delete,
    )
    assert (undeleted.user, undeleted.source, undeleted.zk_version) == (superuser, "admin", 0)
    assert admin_client.get(DELETED_URL).context["entries"] == []

    # The same form sent again (a second tab, a double click) restores nothing more.
    response = admin_client.post(
        DELETED_URL, {"name": "retired", "change": deleted_row.pk}, follow=True
    )
    assert "is not deleted" in messages_of(response)[-1]
    assert zkflags.read("retired") == (before_delete, 0)
    assert audit("retired")[-1] == undeleted


def test_undelete_refused_when_the_flag_was_deleted_again_since(zkflags, admin_client):
    flag = make_flag(admin_client, "twice", percent="5")
    admin_client.post(delete_url(flag), {"post": "yes"})
    first_delete = audit("twice")[-1]
    services.undelete_flag("twice", actor="other", source="command")
    services.delete_flag("twice", expected_version=0, actor="other", source="command")

    response = admin_client.post(
        DELETED_URL, {"name": "twice", "change": first_delete.pk}, follow=True
    )
    assert "changed since this page was drawn" in messages_of(response)[-1]
    assert zkflags.read("twice") == (None, None)


def test_undelete_refused_when_zookeeper_has_the_flag(zkflags, admin_client, direct):
    flag = make_flag(admin_client, "reborn", percent="5")
    admin_client.post(delete_url(flag), {"post": "yes"})
    deleted_row = audit("reborn")[-1]
    # Written straight into ZooKeeper, no row, no audit (an operator with zkCli).
    zkflags.put(flag_doc("reborn", everyone=True), None)
    response = admin_client.post(
        DELETED_URL, {"name": "reborn", "change": deleted_row.pk}, follow=True
    )
    assert "exists (version 0)" in messages_of(response)[-1]
    doc, version = zkflags.read("reborn")
    assert (doc["everyone"], version) == (True, 0)
    assert audit("reborn")[-1] == deleted_row


# -- Django's History button -----------------------------------------------------------------


def test_history_button_shows_the_audit_log_with_bulk_actions(zkflags, admin_client):
    flag = make_flag(admin_client, "buttoned", percent="10")
    edit(admin_client, flag, note="edited in the form")
    response = admin_client.post(
        ADMIN, {"action": "turn_on_for_everyone", "_selected_action": [flag.pk]}
    )
    assert response.status_code == 302
    bulk = audit("buttoned")[-1]
    assert bulk.after["everyone"] is True

    page = admin_client.get(f"{change_url(flag)[: -len('change/')]}history/")
    assert page.status_code == 200
    html = page.content.decode()
    assert [e.change for e in page.context["history_entries"]] == audit("buttoned")[::-1]
    assert "everyone: null → true" in html and bulk.source in html
    assert "zk_version_seen" not in html and "Zk version seen" not in html
    assert f"Times in {timezone.get_current_timezone_name()}" in html
    # Its restore buttons work like the change page's.
    response = post_restore(admin_client, page, 0, follow=True)
    assert "Restored flag buttoned as it was at version 0" in messages_of(response)[-1]
    assert zkflags.read("buttoned")[0]["everyone"] is None


# -- who may do what ----------------------------------------------------------------------------


def test_viewer_sees_history_but_cannot_restore(zkflags, admin_client, viewer):
    flag = make_flag(admin_client, "guarded", percent="10")
    edit(admin_client, flag, percent="20")
    make_flag(admin_client, "gone-soon")
    admin_client.post(delete_url(Flag.objects.get(name="gone-soon")), {"post": "yes"})
    deleted_row = audit("gone-soon")[-1]
    page = admin_client.get(change_url(flag))  # what an editor would have drawn
    url = entry_for_version(page, 0).restore_url
    fields = restore_forms(page.content.decode())[url]
    doc, version = zkflags.read("guarded")
    rows = FlagChange.objects.count()

    viewer_client = logged_in(viewer)
    seen = viewer_client.get(f"{change_url(flag)[: -len('change/')]}history/")
    assert seen.status_code == 200
    html = seen.content.decode()
    assert "percent: 10 → 20" in html
    assert restore_forms(html) == {}
    assert all(e.restore_url is None for e in seen.context["history_entries"])
    listing = viewer_client.get(DELETED_URL)
    assert listing.status_code == 200
    assert "gone-soon" in listing.content.decode()
    assert 'name="change"' not in listing.content.decode()

    # Forged POSTs are refused, and change nothing.
    assert viewer_client.post(url, fields).status_code == 403
    assert (
        viewer_client.post(DELETED_URL, {"name": "gone-soon", "change": deleted_row.pk}).status_code
        == 403
    )
    anonymous = Client()
    response = anonymous.post(url, fields)
    assert response.status_code == 302 and "/login/" in response.url
    assert (
        anonymous.post(DELETED_URL, {"name": "gone-soon", "change": deleted_row.pk}).status_code
        == 302
    )
    # A GET does not restore.
    assert admin_client.get(url).status_code == 405
    assert zkflags.read("guarded") == (doc, version)
    assert zkflags.read("gone-soon") == (None, None)
    assert FlagChange.objects.count() == rows


def test_viewer_sees_history_on_the_change_page(zkflags, admin_client, viewer):
    flag = make_flag(admin_client, "looked-at", percent="10")
    edit(admin_client, flag, percent="20")
    seen = logged_in(viewer).get(change_url(flag))
    assert seen.status_code == 200
    html = seen.content.decode()
    assert "percent: 10 → 20" in html
    assert restore_forms(html) == {}
    assert all(e.restore_url is None for e in seen.context["history_entries"])


def test_restore_needs_the_csrf_token(zkflags, superuser):
    client = logged_in(superuser, enforce_csrf_checks=True)
    admin_client = logged_in(superuser)
    flag = make_flag(admin_client, "protected", percent="10")
    edit(admin_client, flag, percent="20")
    page = client.get(change_url(flag))
    url = entry_for_version(page, 0).restore_url
    fields = restore_forms(page.content.decode())[url]
    assert "csrfmiddlewaretoken" in fields  # the page's form carries it

    without = {k: v for k, v in fields.items() if k != "csrfmiddlewaretoken"}
    assert client.post(url, without).status_code == 403
    assert zkflags.read("protected")[1] == 1
    assert client.post(url, fields).status_code == 302
    assert zkflags.read("protected")[1] == 2


def test_restore_needs_the_change_permission_not_just_add(zkflags, admin_client):
    adder = staff("adder", "add_flag", "view_flag")
    flag = make_flag(admin_client, "add-only", percent="10")
    edit(admin_client, flag, percent="20")
    page = admin_client.get(change_url(flag))
    url = entry_for_version(page, 0).restore_url
    fields = restore_forms(page.content.decode())[url]
    assert logged_in(adder).post(url, fields).status_code == 403
    assert zkflags.read("add-only")[1] == 1


# -- the audit log page -----------------------------------------------------------------------


def test_audit_log_page_shows_diffs_in_one_time_zone(zkflags, admin_client, settings):
    settings.TIME_ZONE = "Asia/Kathmandu"
    flag = make_flag(admin_client, "audited", percent="10")
    edit(admin_client, flag, percent="15")
    page = admin_client.get(AUDIT_URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Times in Asia/Kathmandu" in html
    assert "When (Asia/Kathmandu)" in html
    assert "percent: 10 → 15" in html
    change = audit("audited")[-1]
    local = timezone.localtime(change.at).strftime("%Y-%m-%d %H:%M:%S")
    assert local in html
    assert f'href="{change_url(flag)}"' in html  # the flag, while it exists
