"""Public flags for front ends: ``zkflags/flags.json`` (``path("zkflags/",
include("django_zkflags.urls"))``), against a real ZooKeeper.

Only flags marked public are served (a private flag on for everyone never appears, by
name or value), each evaluated for the request's user or anonymous visitor by the one
evaluator (``request.flags`` with the middleware, else a RequestFlags of its own that
sets the same signed cookie), with headers that keep the answer out of shared caches.
Marking a flag public: the admin's checkbox, ``zkflags set --public/--private``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import include, path

from django_zkflags import conf, services
from django_zkflags.rules import FlagRule, bucket
from tests.support.admin_pages import ADD_URL, change_url, data_from_page, form_data

from ..conftest import zkflags_command

urlpatterns = [
    path("admin/", admin.site.urls),
    path("zkflags/", include("django_zkflags.urls")),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

FLAGS_JSON = "/zkflags/flags.json"


def save(name: str, **fields: Any) -> None:
    version = services.read_flag(name).version
    services.save_flag(FlagRule(name, **fields), expected_version=version, source="test")


def serving_all(zkflags: Any, *names: str) -> None:
    for name in names:
        zkflags.wait_version(name, services.read_flag(name).version)


def fetch(client: Client) -> tuple[Any, dict[str, Any]]:
    response = client.get(FLAGS_JSON)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return response, response.json()


@pytest.fixture
def site(zkflags: Any) -> Any:
    save("dark-mode", everyone=True, public=True, value={"theme": "night"})
    save("beta-banner", staff=True, public=True)
    save("checkout-v2", percent=50.0, public=True)
    save("secret-pricing", everyone=True, value={"discount": 0.3})  # private, on for all
    save("secret-gate", staff=True)  # private
    save("gated-widget", everyone=True, public=True, requires=["secret-gate"])
    serving_all(
        zkflags,
        "dark-mode",
        "beta-banner",
        "checkout-v2",
        "secret-pricing",
        "secret-gate",
        "gated-widget",
    )
    return zkflags


def test_only_public_flags_are_served_with_their_values(site, client):
    response, body = fetch(client)
    assert set(body) == {"flags", "values"}
    assert set(body["flags"]) == {"dark-mode", "beta-banner", "checkout-v2", "gated-widget"}
    assert body["values"] == {"dark-mode": {"theme": "night"}}
    text = response.content.decode()
    assert "secret" not in text and "discount" not in text
    assert body["flags"]["dark-mode"] is True and body["flags"]["beta-banner"] is False
    # A public flag that requires a private one answers for the visitor, naming nothing.
    assert body["flags"]["gated-widget"] is False


def test_headers_keep_the_answer_private(site, client):
    response, _body = fetch(client)
    assert response["Cache-Control"] == "private, no-store"
    assert "Cookie" in response["Vary"]
    assert client.post(FLAGS_JSON).status_code == 405


def test_answers_are_for_the_request_user(site):
    staff = Client()
    staff.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
    _response, body = fetch(staff)
    assert body["flags"]["beta-banner"] is True and body["flags"]["gated-widget"] is True
    user = User.objects.create_user("someone", password="pw")
    member = Client()
    member.force_login(user)
    _response, body = fetch(member)
    assert body["flags"]["beta-banner"] is False and body["flags"]["gated-widget"] is False
    assert body["flags"]["checkout-v2"] is (bucket("checkout-v2", user.pk) < 5000)


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "no-middleware"])
def test_anonymous_visitors_get_a_stable_bucket(site, settings, middleware):
    if not middleware:
        from django_zkflags.checks import MIDDLEWARE_PATH

        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
    cookie_name = conf.get("ANONYMOUS_COOKIE")
    seen = set()
    for _ in range(30):
        visitor = Client()
        response, body = fetch(visitor)
        assert cookie_name in response.cookies  # minted for the percentage
        cookie = visitor.cookies[cookie_name]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        answer = body["flags"]["checkout-v2"]
        seen.add(answer)
        for _again in range(2):
            again, later = fetch(visitor)
            assert later["flags"]["checkout-v2"] is answer
            assert cookie_name not in again.cookies  # kept, not minted again
    assert seen == {True, False}


def test_a_change_reaches_flags_json_and_private_again_disappears(site, client):
    save("dark-mode", everyone=False, public=True, value={"theme": "day"})
    serving_all(site, "dark-mode")
    _response, body = fetch(client)
    assert body["flags"]["dark-mode"] is False
    assert body["values"]["dark-mode"] == {"theme": "day"}
    out = zkflags_command("set", "dark-mode", "--private")
    assert "public" not in out
    serving_all(site, "dark-mode")
    _response, body = fetch(client)
    assert "dark-mode" not in body["flags"] and "dark-mode" not in body["values"]
    out = zkflags_command("set", "dark-mode", "--public")
    assert out.startswith("dark-mode: off for everyone (version ") and ", public)" in out
    serving_all(site, "dark-mode")
    assert "dark-mode" in fetch(client)[1]["flags"]


def test_the_admin_checkbox_marks_a_flag_public(zkflags):
    editor = Client()
    editor.force_login(User.objects.create_superuser("boss", password="pw"))
    response = editor.post(ADD_URL, form_data("shown", everyone=True, public=True))
    assert response.status_code == 302
    assert zkflags.read("shown")[0]["public"] is True
    serving_all(zkflags, "shown")
    assert fetch(Client())[1]["flags"] == {"shown": True}

    from django_zkflags.models import Flag

    row = Flag.objects.get(name="shown")
    assert row.public is True
    page = editor.get(change_url(row))
    response = editor.post(change_url(row), data_from_page(page, public=False))
    assert response.status_code == 302
    assert "public" not in zkflags.read("shown")[0]
    serving_all(zkflags, "shown")
    assert fetch(Client())[1] == {"flags": {}, "values": {}}
