"""The flag list shows flags declared in settings that ZooKeeper does not hold, with one
click to create them (a versioned create through services, audited)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from django_zkflags import flag_is_active_for_user

from ..conftest import audit

pytestmark = pytest.mark.django_db
LIST = "/admin/django_zkflags/flag/"
CREATE = "/admin/django_zkflags/flag/declared/create/"


@pytest.fixture
def declared(zkflags, settings):
    settings.ZKFLAGS = {
        **settings.ZKFLAGS,
        "FLAGS": {"new-checkout": False, "search-v2": {"default": True, "note": "new search"}},
    }
    zkflags.write("search-v2", everyone=False)  # ZooKeeper holds this one
    return zkflags


def test_the_list_offers_to_create_declared_flags(declared, admin_client):
    page = admin_client.get(LIST).content.decode()
    assert "Declared in settings, not in ZooKeeper" in page
    assert "new-checkout" in page and "off for everyone" in page
    assert page.count("Create in ZooKeeper") == 1  # search-v2 is in ZooKeeper
    assert flag_is_active_for_user(None, "new-checkout") is False  # the declared default

    response = admin_client.post(CREATE, {"name": "new-checkout"})
    assert response.status_code == 302
    assert declared.read("new-checkout") == (declared.read("new-checkout")[0], 0)
    assert declared.read("new-checkout")[0]["everyone"] is False
    [created] = audit("new-checkout")
    assert (created.action, created.source, created.username) == (
        "created",
        "admin (declared)",
        "admin",
    )
    declared.wait_version("new-checkout", 0)
    assert "Declared in settings, not in ZooKeeper" not in admin_client.get(LIST).content.decode()
    # A second click (a stale page) is refused: it exists now; nothing changes.
    admin_client.post(CREATE, {"name": "new-checkout"})
    assert len(audit("new-checkout")) == 1


def test_only_users_who_may_add_flags_create_them(declared, client):
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_flag"))
    client.login(username="viewer", password="pw")
    assert "Create in ZooKeeper" not in client.get(LIST).content.decode()
    assert client.post(CREATE, {"name": "new-checkout"}).status_code == 403
    assert declared.read("new-checkout") == (None, None)
    client.logout()
    assert client.post(CREATE, {"name": "new-checkout"}).status_code == 302  # to login
    assert declared.read("new-checkout") == (None, None)


def test_an_undeclared_name_is_refused(declared, admin_client):
    response = admin_client.post(CREATE, {"name": "not-declared"}, follow=True)
    assert "is not declared in settings" in response.content.decode()
    assert declared.read("not-declared") == (None, None)
