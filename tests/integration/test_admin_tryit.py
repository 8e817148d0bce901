"""The "Try it" box on the admin's flag page (django_zkflags/admin/tryit.py), against a real
ZooKeeper: a username in, the answer and the reason out; an unknown username; an anonymous
visitor with and without an id (its percentage bucket); the view permission is enough;
nothing is written.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_zkflags.models import Flag
from django_zkflags.rules import bucket
from tests.support.admin_pages import change_url, make_flag

from ..conftest import audit

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    return client


@pytest.fixture
def flag(zkflags: Any, admin_client: Client, people: Any) -> Flag:
    users, _groups = people
    created = make_flag(admin_client, "checkout", percent=30, users=[users[0]])
    zkflags.wait_version("checkout", created.zk_version)
    return created


def try_it(client: Client, flag: Flag, **params: str) -> tuple[Any, str]:
    response = client.get(change_url(flag), {f"tryit-{k}": v for k, v in params.items()})
    assert response.status_code == 200
    return response.context["tryit"], response.content.decode()


def test_a_username_in_the_answer_and_the_reason_out(flag, admin_client, people):
    users, _groups = people
    panel, html = try_it(admin_client, flag, who="user", username="person0")
    answer = panel["answer"]
    assert (answer.active, answer.reason, answer.version) == (True, "users", flag.zk_version)
    assert 'id="tryit"' in html and "zkflags-tryit-on" in html and ">users</code>" in html

    panel, html = try_it(admin_client, flag, who="user", username="person1")
    answer = panel["answer"]
    assert answer.reason == "percent" and answer.threshold == 3000
    assert answer.bucket == bucket("checkout", users[1].pk)
    assert answer.active is (answer.bucket < 3000)
    assert f"bucket {answer.bucket} of 10000, threshold 3000" in html


def test_an_unknown_username_says_so(flag, admin_client):
    panel, html = try_it(admin_client, flag, who="user", username="nobody")
    assert panel["answer"] is None
    assert "No user named nobody." in html
    panel, html = try_it(admin_client, flag, who="user", username="")
    assert panel["answer"] is None and "Give a username." in html


def test_an_anonymous_visitor_with_and_without_an_id(flag, admin_client):
    panel, html = try_it(admin_client, flag, who="anonymous", visitor="v-123")
    answer = panel["answer"]
    assert answer.reason == "percent" and answer.bucket == bucket("checkout", "v-123")
    assert "anonymous visitor v-123" in html
    panel, _html = try_it(admin_client, flag, who="anonymous", visitor="")
    assert (panel["answer"].active, panel["answer"].reason) == (False, "no-match")
    assert panel["answer"].bucket is None


def test_the_box_is_there_before_it_is_used_and_keeps_the_list_filters(flag, admin_client):
    response = admin_client.get(change_url(flag), {"_changelist_filters": "q=check"})
    assert response.context["tryit"]["answer"] is None
    html = response.content.decode()
    assert 'name="tryit-username"' in html and 'method="get" action="#tryit"' in html
    assert 'name="_changelist_filters" value="q=check"' in html


def test_the_view_permission_is_enough_and_nothing_is_written(flag, zkflags):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_flag"))
    client = Client()
    client.force_login(viewer)
    before = (zkflags.read("checkout"), len(audit("checkout")))
    panel, _html = try_it(client, flag, who="user", username="person0")
    assert panel["answer"].active is True
    assert (zkflags.read("checkout"), len(audit("checkout"))) == before


def test_an_anonymous_request_gets_no_answer(flag):
    response = Client().get(change_url(flag), {"tryit-who": "user", "tryit-username": "boss"})
    assert response.status_code == 302 and "/login/" in response["Location"]
