"""Scheduled changes and rollouts on the admin's flag page (django_zkflags/admin/schedules.py),
against a real ZooKeeper: the panel (on the change page's context, and as a page of its
own), scheduling, cancelling, starting, pausing, resuming and aborting a rollout; who may do
it (the change permission; never an anonymous request) and CSRF. The steward that runs
them: tests/integration/test_steward.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_zkflags import schedules
from django_zkflags.models import Flag
from tests.support.admin_pages import change_url, make_flag, messages_of

pytestmark = pytest.mark.django_db


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


@pytest.fixture
def flag(zkflags: Any, admin_client: Client) -> Flag:
    return make_flag(admin_client, "launch", everyone=False)


def url(flag: Flag, tail: str) -> str:
    return change_url(flag).replace("/change/", f"/{tail}")


def pending(name: str) -> list[schedules.Schedule]:
    return [s for s in schedules.store().schedules()[0] if s.flag == name]


def test_the_change_page_carries_the_panel_and_the_page_draws_it(flag, admin_client):
    response = admin_client.get(change_url(flag))
    panel = response.context["schedule_panel"]
    assert panel["can_change"] is True and panel["schedules"] == []
    page = admin_client.get(url(flag, "schedules/"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "No scheduled change of this flag." in html
    assert 'name="csrfmiddlewaretoken"' in html and "Start a stepped rollout" in html


def test_schedule_and_cancel_from_the_admin(flag, admin_client, superuser, settings):
    settings.TIME_ZONE = "Asia/Kathmandu"
    response = admin_client.post(
        url(flag, "schedules/add/"),
        {"at": "2031-01-02T03:04", "change": "percent", "percent": "12.5"},
    )
    assert response.status_code == 302 and response["Location"].endswith("#schedules")
    [created] = pending("launch")
    assert (created.username, created.user_id, created.source) == ("boss", superuser.pk, "admin")
    assert created.change == {"everyone": None, "percent": 12.5}
    assert created.expected_version == 0 and not created.force
    assert created.at.isoformat() == "2031-01-01T21:19:00+00:00"  # 03:04 in Kathmandu
    assert any("Scheduled 12.5% (the rules)" in m for m in messages_of(response))

    page = admin_client.get(url(flag, "schedules/"))
    assert created.id in page.content.decode()
    cancel = admin_client.post(url(flag, f"schedules/{created.id}/cancel/"))
    assert cancel.status_code == 302
    assert pending("launch") == []


def test_a_refused_schedule_comes_back_with_what_was_typed(flag, admin_client):
    response = admin_client.post(
        url(flag, "schedules/add/"), {"at": "next tuesday", "change": "value", "value": "{oops"}
    )
    assert response.status_code == 400
    form = response.context["schedule_panel"]["schedule_form"]
    assert form["at"].value() == "next tuesday" and form["value"].value() == "{oops"
    assert "ISO 8601" in str(form.non_field_errors())
    assert pending("launch") == []


def test_a_rollout_from_the_admin_with_pause_resume_and_abort(flag, admin_client):
    response = admin_client.post(
        url(flag, "rollout/"), {"steps": "1,5,25", "every": "1h", "start": "+1h"}
    )
    assert response.status_code == 302
    steps = pending("launch")
    assert [s.change["percent"] for s in steps] == [1.0, 5.0, 25.0]
    assert [s.expected_version for s in steps] == [0, 1, 2]
    panel = admin_client.get(change_url(flag)).context["schedule_panel"]
    assert [a for a, _ in panel["rollout"]["actions"]] == ["pause", "abort"]
    assert all(entry["cancel_url"] is None for entry in panel["schedules"])  # steps: not alone

    admin_client.post(url(flag, "rollout/pause/"))
    assert schedules.store().rollout("launch").state == "paused" and pending("launch") == []
    admin_client.post(url(flag, "rollout/resume/"))
    assert schedules.store().rollout("launch").state == "running" and len(pending("launch")) == 3
    admin_client.post(url(flag, "rollout/abort/"))
    assert schedules.store().rollout("launch").state == "aborted" and pending("launch") == []


def test_only_people_with_the_change_permission_may_schedule(flag, zkflags):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_flag"))
    as_viewer = logged_in(viewer)
    assert as_viewer.get(url(flag, "schedules/")).status_code == 200
    panel = as_viewer.get(change_url(flag)).context["schedule_panel"]
    assert panel["can_change"] is False
    data = {"at": "+1h", "change": "on"}
    assert as_viewer.post(url(flag, "schedules/add/"), data).status_code == 403
    assert as_viewer.post(url(flag, "rollout/"), {"steps": "1", "every": "1h"}).status_code == 403
    anonymous = Client().post(url(flag, "schedules/add/"), data)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert pending("launch") == []
    assert Client().get(url(flag, "schedules/")).status_code == 302  # to the login page


def test_posts_need_a_csrf_token_and_a_post(flag, superuser):
    strict = logged_in(superuser, enforce_csrf_checks=True)
    data = {"at": "+1h", "change": "on"}
    assert strict.post(url(flag, "schedules/add/"), data).status_code == 403
    assert strict.post(url(flag, "rollout/pause/")).status_code == 403
    assert pending("launch") == []
    assert logged_in(superuser).get(url(flag, "schedules/add/")).status_code == 405
