"""The view guards (django_zkflags/decorators.py): ``flag_required`` and
``FlagRequiredMixin``.

No ZooKeeper: flags are forced with ``override_flag``, or rules are published into the
store in a snapshot built in the test (``publish``).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.views import View

from django_zkflags.decorators import FlagRequiredMixin
from django_zkflags.rules import FlagRule
from django_zkflags.testing import override_flag


def test_flag_required_404_when_off_200_when_on(client):
    assert client.get("/guarded/").status_code == 404  # unknown
    with override_flag("guarded", active=False):
        assert client.get("/guarded/").status_code == 404
    with override_flag("guarded"):
        response = client.get("/guarded/")
    assert response.status_code == 200
    assert response.content == b"guarded content"


def test_flag_required_redirects_when_off(client):
    with override_flag("guarded", active=False):
        response = client.get("/guarded-redirect/")
    assert response.status_code == 302
    assert response["Location"] == "/home/"
    with override_flag("guarded"):
        response = client.get("/guarded-redirect/")
    assert response.status_code == 200
    assert response.content == b"guarded content"


def test_flag_required_mixin(client):
    with override_flag("guarded", active=False):
        assert client.get("/guarded-cbv/").status_code == 404
    with override_flag("guarded"):
        response = client.get("/guarded-cbv/")
    assert response.status_code == 200
    assert response.content == b"guarded cbv content"


def test_flag_required_for_staff_only(publish, client, django_user_model):
    publish(FlagRule("guarded", staff=True))
    assert client.get("/guarded/").status_code == 404
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/guarded/").status_code == 200


def test_flag_required_mixin_needs_a_flag_name(rf):
    class NoName(FlagRequiredMixin, View):
        def get(self, request):
            return HttpResponse("x")

    with pytest.raises(TypeError, match="NoName needs a flag_name"):
        NoName.as_view()(rf.get("/"))


def test_mixin_with_redirect(rf):
    class Redirecting(FlagRequiredMixin, View):
        flag_name = "mixin-flag"
        flag_redirect_to = "/elsewhere/"

        def get(self, request):
            return HttpResponse("x")

    request = rf.get("/")
    request.user = AnonymousUser()
    response = Redirecting.as_view()(request)
    assert (response.status_code, response["Location"]) == (302, "/elsewhere/")
    with override_flag("mixin-flag"):
        assert Redirecting.as_view()(request).status_code == 200
