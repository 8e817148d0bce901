"""The admin's Environments page: the environments document, versioned and audited."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User

from django_zkflags import flag_is_active_for_user
from django_zkflags.cache import store
from django_zkflags.models import FlagChange
from django_zkflags.rules import validate_environments_document

from ..conftest import wait_until

pytestmark = pytest.mark.django_db

URL = "/admin/django_zkflags/flag/environments/"
DOC = {"parents": {"production": None, "canary": "production"}, "hosts": {"web-7": "canary"}}


def stored(zkflags):
    """The environments document in ZooKeeper and its version (it must be valid)."""
    environments = zkflags.reader.environments()
    assert environments.error is None, environments.error
    return environments.document, environments.version


def post(client, doc, version):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return client.post(URL, {"document": text, "version_seen": "" if version is None else version})


def test_edit_environments_and_a_pegged_host_moves(zkflags, admin_client, settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "HOSTNAME": "web-7", "ENVIRONMENT": "production"}
    zkflags.write("banner", everyone=False, environments={"canary": {"everyone": True}})
    page = admin_client.get(URL)
    assert page.status_code == 200
    assert page.context["form"].initial == {
        "document": {"parents": {}, "hosts": {}},
        "version_seen": None,
    }
    response = post(admin_client, DOC, None)
    assert response.status_code == 302
    assert stored(zkflags) == (DOC, 0)
    wait_until(lambda: store.base.environment == "canary")
    assert flag_is_active_for_user(None, "banner") is True
    change = FlagChange.objects.get(flag_name="@environments")
    assert (change.action, change.username, change.after) == ("created", "admin", DOC)
    # The list page links here; the page shows history and this process's environment.
    assert URL in admin_client.get("/admin/django_zkflags/flag/").content.decode()
    page = admin_client.get(URL).content.decode()
    assert "zkflags-history" in page and "canary" in page


def test_stale_and_invalid_edits_change_nothing(zkflags, admin_client):
    assert post(admin_client, DOC, None).status_code == 302
    # Someone else saved meanwhile: version 0 -> 1.
    zkflags.writer.write_environments(validate_environments_document({**DOC, "hosts": {}}), 0)
    response = post(admin_client, {**DOC, "hosts": {"web-8": "canary"}}, 0)
    assert response.status_code == 200  # the form again, as typed
    assert "changed by someone else" in " ".join(response.context["form"].non_field_errors())
    assert stored(zkflags) == ({**DOC, "hosts": {}}, 1)
    for bad in (
        "{not json",
        {"parents": {"a": "b", "b": "a"}},
        {"parents": {"a": None}, "hosts": {"h": "nowhere"}},
        {"parents": {"bad name": None}},
    ):
        response = post(admin_client, bad, 1)
        assert response.status_code == 200
        assert response.context["form"].errors
    assert stored(zkflags) == ({**DOC, "hosts": {}}, 1)
    assert FlagChange.objects.filter(flag_name="@environments").count() == 1


def test_permissions(zkflags, client):
    assert client.get(URL).status_code == 302  # anonymous: to the login page
    assert client.post(URL, {"document": json.dumps(DOC)}).status_code == 302
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(URL).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_flag"))
    staff = User.objects.get(pk=staff.pk)
    client.force_login(staff)
    assert client.get(URL).status_code == 200
    assert post(client, DOC, None).status_code == 403
    assert stored(zkflags) == ({"parents": {}, "hosts": {}}, None)
