"""The ``{% flag %}`` template tag (django_zkflags/templatetags/zkflags.py).

No ZooKeeper: flags are forced with ``override_flag``, or rules are published into the
store in a snapshot built in the test (``publish``). ``{% flag_value %}`` with values read
from ZooKeeper: tests/integration/test_environments.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.template import Template, TemplateSyntaxError

from django_zkflags import flag_is_active_for_user
from django_zkflags.api import RequestFlags
from django_zkflags.rules import FlagRule
from django_zkflags.testing import override_flag

from ..conftest import IF_ELSE, render


class FakeUser:
    def __init__(self, pk=1, *, staff=False, superuser=False, authenticated=True):
        self.pk = pk
        self.is_staff = staff
        self.is_superuser = superuser
        self.is_authenticated = authenticated


def test_tag_on_and_off(rf):
    with override_flag("x"):
        assert render(IF_ELSE) == "A"
        assert render(IF_ELSE, request=rf.get("/")) == "A"
    with override_flag("x", active=False):
        assert render(IF_ELSE) == "B"
        assert render(IF_ELSE, request=rf.get("/")) == "B"


@override_flag("other")
def test_tag_unknown_flag_renders_the_else_branch():
    assert render(IF_ELSE) == "B"


def test_tag_without_else():
    with override_flag("x"):
        assert render('[{% flag "x" %}A{% endflag %}]') == "[A]"
    with override_flag("x", active=False):
        assert render('[{% flag "x" %}A{% endflag %}]') == "[]"


@override_flag("x")
@override_flag("y", active=False)
def test_tag_name_from_a_variable():
    source = "{% flag name %}A{% else %}B{% endflag %}"
    assert render(source, {"name": "x"}) == "A"
    assert render(source, {"name": "y"}) == "B"
    assert render(source, {}) == "B"  # a missing variable is no flag
    assert render(source, {"name": 5}) == "B"
    assert render("{% flag obj.flag %}A{% else %}B{% endflag %}", {"obj": {"flag": "x"}}) == "A"


@override_flag("x")
@override_flag("y", active=False)
def test_tag_nested_and_with_content():
    source = (
        '{% flag "x" %}<{{ who }}{% flag "y" %}+y{% else %}-y{% endflag %}>'
        "{% else %}none{% endflag %}"
    )
    assert render(source, {"who": "me"}) == "<me-y>"


@pytest.mark.parametrize(
    "source",
    [
        "{% flag %}A{% endflag %}",
        '{% flag "a" "b" %}A{% endflag %}',
        '{% flag "a" %}A',
        '{% flag "a" %}A{% else %}B',
        '{% flag "a" %}A{% else %}B{% else %}C{% endflag %}',
        "{% endflag %}",
    ],
)
def test_tag_syntax_errors(source):
    with pytest.raises(TemplateSyntaxError):
        Template("{% load zkflags %}" + source)


def test_tag_error_message_names_the_tag():
    with pytest.raises(TemplateSyntaxError, match="'flag' takes exactly one argument"):
        Template('{% load zkflags %}{% flag "a" "b" %}{% endflag %}')


def test_tag_without_a_request_uses_the_user_in_the_context(publish):
    publish(FlagRule("x", staff=True))
    assert render(IF_ELSE, {"user": FakeUser(staff=True)}) == "A"
    assert render(IF_ELSE, {"user": FakeUser()}) == "B"
    assert render(IF_ELSE, {"user": AnonymousUser()}) == "B"
    assert render(IF_ELSE) == "B"


def test_tag_with_a_request_uses_its_user(publish, rf):
    publish(FlagRule("x", staff=True))
    request = rf.get("/")
    request.user = FakeUser(staff=True)
    assert render(IF_ELSE, request=request) == "A"
    request.user = AnonymousUser()
    # The request's user decides, not a "user" variable in the context.
    assert render(IF_ELSE, {"user": FakeUser(staff=True)}, request=request) == "B"


def test_tag_answers_from_the_requests_snapshot(rf):
    request = rf.get("/")
    request.user = AnonymousUser()
    with override_flag("x"):
        request.flags = RequestFlags(request)
    with override_flag("x", active=False):
        assert flag_is_active_for_user(None, "x") is False  # the process has the new value
        assert render(IF_ELSE, request=request) == "A"  # the request keeps its snapshot


def test_home_template_through_the_client(client):
    with override_flag("banner"):
        assert client.get("/home/").content.strip() == b"BANNER-ON"
    with override_flag("banner", active=False):
        assert client.get("/home/").content.strip() == b"BANNER-OFF"
