"""The consumers: template tag, view guards, middleware, override_flag, signal, user API.

A test that only needs a flag on or off for everyone forces it with ``override_flag`` (no
ZooKeeper). Flags with rules (staff, users, groups, percentages), and tests about snapshots
arriving from ZooKeeper, are written in a real ZooKeeper (the ``zkflags`` fixture) and read
back through this process's watcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.http import HttpRequest, HttpResponse
from django.template import Context, RequestContext, Template, TemplateSyntaxError
from django.test import SimpleTestCase, TestCase, override_settings
from django.views import View

from django_zkflags import flag_is_active, flag_is_active_for_user, get_snapshot, runtime
from django_zkflags.api import RequestFlags
from django_zkflags.cache import store
from django_zkflags.checks import MIDDLEWARE_PATH
from django_zkflags.decorators import FlagRequiredMixin
from django_zkflags.evaluation import ANONYMOUS_SALT
from django_zkflags.rules import bucket
from django_zkflags.signals import flag_changed
from django_zkflags.testing import override_flag
from tests.conftest import wait_until
from tests.testapp import views

COOKIE = "zkflags_uid"


# -- helpers ---------------------------------------------------------------------------------


def render(source: str, context: dict | None = None, request=None) -> str:
    template = Template("{% load zkflags %}" + source)
    if request is not None:
        return template.render(RequestContext(request, context or {}))
    return template.render(Context(context or {}))


IF_ELSE = '{% flag "x" %}A{% else %}B{% endflag %}'


class FakeUser:
    def __init__(self, pk=1, *, staff=False, superuser=False, authenticated=True):
        self.pk = pk
        self.is_staff = staff
        self.is_superuser = superuser
        self.is_authenticated = authenticated


@pytest.fixture
def hook() -> Iterator[Callable]:
    """Set ``views.between_checks.hook`` for this test only."""

    def set_hook(fn):
        views.between_checks.hook = fn

    yield set_hook
    views.between_checks.__dict__.pop("hook", None)


@pytest.fixture
def no_middleware(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]


def cookie_id(value: str) -> str:
    """The anonymous id inside a signed cookie value (raises if the signature is bad)."""
    request = HttpRequest()
    request.COOKIES[COOKIE] = value
    return request.get_signed_cookie(COOKIE, salt=ANONYMOUS_SALT)


def signed(anonymous_id: str) -> str:
    """A cookie value signed the way the middleware signs it (as Django would)."""
    response = HttpResponse()
    response.set_signed_cookie(COOKIE, anonymous_id, salt=ANONYMOUS_SALT)
    return response.cookies[COOKIE].value


# -- template tag ----------------------------------------------------------------------------


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


def test_tag_without_a_request_uses_the_user_in_the_context(zkflags):
    zkflags.write("x", staff=True)
    assert render(IF_ELSE, {"user": FakeUser(staff=True)}) == "A"
    assert render(IF_ELSE, {"user": FakeUser()}) == "B"
    assert render(IF_ELSE, {"user": AnonymousUser()}) == "B"
    assert render(IF_ELSE) == "B"


def test_tag_with_a_request_uses_its_user(zkflags, rf):
    zkflags.write("x", staff=True)
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


# -- view guards -----------------------------------------------------------------------------


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


def test_flag_required_for_staff_only(zkflags, client, django_user_model):
    zkflags.write("guarded", staff=True)
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


# -- middleware: one snapshot per request ----------------------------------------------------


def test_a_request_sees_one_snapshot(zkflags, client, hook):
    zkflags.write("consistent", everyone=True)
    changed = []

    def change_in_between():
        # Change the flag in ZooKeeper and wait until this process has the new version.
        zkflags.write("consistent", everyone=False)
        changed.append(store.current.flags["consistent"].everyone)

    hook(change_in_between)
    assert client.get("/two-checks/").content == b"True True"
    assert changed == [False]  # the process did have the new value during the request
    hook(None)
    assert client.get("/two-checks/").content == b"False False"


def test_without_the_middleware_each_check_reads_the_current_snapshot(
    zkflags, client, hook, no_middleware
):
    zkflags.write("consistent", everyone=True)
    hook(lambda: zkflags.write("consistent", everyone=False))
    # No middleware: flag_is_active still works, but answers from the current snapshot.
    assert client.get("/two-checks/").content == b"True False"


def test_without_the_middleware_flag_is_active_works(client, no_middleware, rf):
    with override_flag("guarded"):
        assert client.get("/guarded/").status_code == 200
    with override_flag("guarded", active=False):
        assert client.get("/guarded/").status_code == 404
    with override_flag("banner"):
        response = client.get("/home/")
        assert response.content.strip() == b"BANNER-ON"
        assert COOKIE not in response.cookies
        request = rf.get("/")
        assert not hasattr(request, "flags")
        assert flag_is_active(request, "banner") is True


@override_flag("on1")
@override_flag("off1", active=False)
def test_request_flags_memoises_and_lists(rf):
    request = rf.get("/")
    request.user = AnonymousUser()
    flags = RequestFlags(request)
    assert flags["on1"] is True and "on1" in flags and "off1" not in flags
    assert flags.active_names() == ["on1"]
    assert flags.snapshot is get_snapshot()


# -- middleware: the anonymous cookie --------------------------------------------------------


def test_anonymous_cookie_set_signed_and_stable(zkflags, client):
    zkflags.write("banner", percent=50)
    response = client.get("/home/")
    morsel = response.cookies[COOKIE]
    anonymous_id = cookie_id(morsel.value)  # raises if it is not signed by us
    assert len(anonymous_id) >= 16
    assert morsel["httponly"] and morsel["samesite"] == "Lax"
    assert int(morsel["max-age"]) == 60 * 60 * 24 * 365
    expected = b"BANNER-ON" if bucket("banner", anonymous_id) < 5000 else b"BANNER-OFF"
    assert response.content.strip() == expected
    for _ in range(5):
        again = client.get("/home/")
        assert COOKIE not in again.cookies  # not set again: the id is read back
        assert again.content.strip() == expected
    assert cookie_id(client.cookies[COOKIE].value) == anonymous_id


def test_anonymous_id_decides_the_answer(zkflags, client):
    zkflags.write("banner", percent=50)
    inside = next(f"id-{i}" for i in range(1000) if bucket("banner", f"id-{i}") < 5000)
    outside = next(f"id-{i}" for i in range(1000) if bucket("banner", f"id-{i}") >= 5000)
    client.cookies[COOKIE] = signed(inside)
    response = client.get("/home/")
    assert response.content.strip() == b"BANNER-ON"
    assert COOKIE not in response.cookies
    client.cookies[COOKIE] = signed(outside)
    assert client.get("/home/").content.strip() == b"BANNER-OFF"


def _signed_with(value: str, *, salt: str = ANONYMOUS_SALT, secret: str | None = None) -> str:
    response = HttpResponse()
    if secret is None:
        response.set_signed_cookie(COOKIE, value, salt=salt)
    else:
        with override_settings(SECRET_KEY=secret):
            response.set_signed_cookie(COOKIE, value, salt=salt)
    return response.cookies[COOKIE].value


@pytest.mark.parametrize("how", ["unsigned", "forged-signature", "other-salt", "other-key"])
def test_tampered_cookie_is_ignored(zkflags, client, how):
    zkflags.write("banner", percent=50)
    chosen = next(f"id-{i}" for i in range(1000) if bucket("banner", f"id-{i}") < 5000)
    value = {
        "unsigned": chosen,
        "forged-signature": chosen + ":" + "A" * 27,
        "other-salt": _signed_with(chosen, salt="another-salt"),
        "other-key": _signed_with(chosen, secret="not-the-secret"),
    }[how]
    client.cookies[COOKIE] = value
    response = client.get("/home/")
    # The visitor is treated as new: a fresh id, and the answer is that id's answer.
    new_id = cookie_id(response.cookies[COOKIE].value)
    assert new_id != chosen
    expected = b"BANNER-ON" if bucket("banner", new_id) < 5000 else b"BANNER-OFF"
    assert response.content.strip() == expected


def test_no_cookie_without_a_percentage_flag(zkflags, client):
    zkflags.write("banner", everyone=True)
    assert COOKIE not in client.get("/home/").cookies
    zkflags.write("banner", everyone=None, staff=True)
    assert COOKIE not in client.get("/home/").cookies
    # A percentage flag that is forced on or off needs no identity either.
    zkflags.write("banner", everyone=False, staff=False, percent=50)
    assert COOKIE not in client.get("/home/").cookies


def test_no_cookie_when_the_percentage_flag_is_not_evaluated(zkflags, client):
    zkflags.write("banner", percent=50)
    zkflags.write("guarded", everyone=True)
    response = client.get("/guarded/")
    assert response.status_code == 200
    assert COOKIE not in response.cookies


def test_unknown_flag_sets_no_cookie(zkflags, client):
    assert COOKIE not in client.get("/home/").cookies


def test_no_cookie_for_logged_in_users(zkflags, client, django_user_model):
    zkflags.write("banner", percent=50)
    user = django_user_model.objects.create_user("u", password="pw")
    client.force_login(user)
    response = client.get("/home/")
    assert COOKIE not in response.cookies
    expected = b"BANNER-ON" if bucket("banner", user.pk) < 5000 else b"BANNER-OFF"
    assert response.content.strip() == expected


# -- override_flag ---------------------------------------------------------------------------


def test_override_needs_no_zookeeper(client):
    # No zk fixture: ZKFLAGS_URL of the test settings points at a closed port.
    assert runtime.status()["watching"] is False
    assert store.base.flags == {}
    assert flag_is_active_for_user(None, "no-zk") is False
    assert client.get("/guarded/").status_code == 404
    with override_flag("no-zk"), override_flag("guarded"):
        assert flag_is_active_for_user(None, "no-zk") is True
        assert render('{% flag "no-zk" %}A{% else %}B{% endflag %}') == "A"
        assert client.get("/guarded/").status_code == 200
    assert flag_is_active_for_user(None, "no-zk") is False
    assert client.get("/guarded/").status_code == 404
    assert store.current.flags == {}


def test_override_as_context_manager(zkflags):
    zkflags.write("x", everyone=True)
    with override_flag("x", active=False):
        assert flag_is_active_for_user(None, "x") is False
        assert render(IF_ELSE) == "B"
    assert flag_is_active_for_user(None, "x") is True


def test_override_nesting():
    with override_flag("n"):
        assert flag_is_active_for_user(None, "n") is True
        with override_flag("n", active=False):
            assert flag_is_active_for_user(None, "n") is False
            with override_flag("n"):
                assert flag_is_active_for_user(None, "n") is True
            assert flag_is_active_for_user(None, "n") is False
        assert flag_is_active_for_user(None, "n") is True
    assert flag_is_active_for_user(None, "n") is False


def test_same_override_object_nested():
    on = override_flag("same")
    with on:
        with override_flag("same", active=False):
            with on:
                assert flag_is_active_for_user(None, "same") is True
            assert flag_is_active_for_user(None, "same") is False
        assert flag_is_active_for_user(None, "same") is True
    assert flag_is_active_for_user(None, "same") is False


def test_override_undone_on_exception():
    with pytest.raises(RuntimeError), override_flag("boom"):
        assert flag_is_active_for_user(None, "boom") is True
        raise RuntimeError
    assert flag_is_active_for_user(None, "boom") is False


@override_flag("decorated")
@override_flag("decorated-off", active=False)
def test_override_as_function_decorator(rf):
    # Decorating a pytest test keeps its fixtures (rf) working.
    assert flag_is_active_for_user(None, "decorated") is True
    assert flag_is_active_for_user(None, "decorated-off") is False
    request = rf.get("/")
    request.user = AnonymousUser()
    assert flag_is_active(request, "decorated") is True


def test_decorated_function_restores_afterwards():
    @override_flag("inner")
    def check():
        return flag_is_active_for_user(None, "inner")

    assert check() is True
    assert check() is True  # the decorator can be used again
    assert flag_is_active_for_user(None, "inner") is False


@override_flag("class-flag")
class OverrideOnSimpleTestCase(SimpleTestCase):
    def test_on_in_every_test(self):
        self.assertTrue(flag_is_active_for_user(None, "class-flag"))

    def test_method_override_wins(self):
        with override_flag("class-flag", active=False):
            self.assertFalse(flag_is_active_for_user(None, "class-flag"))
        self.assertTrue(flag_is_active_for_user(None, "class-flag"))

    def test_through_the_client(self):
        with override_flag("guarded"):
            self.assertEqual(self.client.get("/guarded/").status_code, 200)


@override_flag("guarded")
class OverrideOnTestCase(TestCase):
    def test_guarded_view_is_served(self):
        self.assertEqual(self.client.get("/guarded/").status_code, 200)

    def test_with_a_user(self):
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.create_user("cls", password="pw")
        self.assertTrue(flag_is_active_for_user(user, "guarded"))


def test_class_overrides_are_gone_after_the_classes():
    # Runs after the classes above in this module (pytest keeps file order).
    assert "class-flag" not in store.current.flags
    assert "guarded" not in store.current.flags


def test_override_survives_a_new_snapshot(zkflags):
    zkflags.write("x", everyone=True)
    with override_flag("x", active=False):
        zkflags.write("x", everyone=True, note="edited meanwhile")  # a new version of x
        zkflags.write("y", everyone=True)
        assert store.base.flags["x"].note == "edited meanwhile"
        assert flag_is_active_for_user(None, "x") is False  # still overridden
        assert flag_is_active_for_user(None, "y") is True  # the new snapshot shows through
    # Undone over the new snapshot, not back to the one from before.
    assert store.current.flags["x"].note == "edited meanwhile"
    assert flag_is_active_for_user(None, "x") is True
    assert flag_is_active_for_user(None, "y") is True
    zkflags.write("x", everyone=False)
    assert flag_is_active_for_user(None, "x") is False


# -- flag_changed ----------------------------------------------------------------------------


@pytest.fixture
def changes() -> Iterator[list]:
    received: list = []
    lock = threading.Lock()

    def receiver(sender, names, snapshot, **kwargs):
        with lock:
            received.append((names, snapshot))

    flag_changed.connect(receiver, weak=False, dispatch_uid="test-consumers-changes")
    yield received
    flag_changed.disconnect(dispatch_uid="test-consumers-changes")


def _wait_names(received: list, name: str) -> tuple:
    return wait_until(lambda: next((c for c in received if name in c[0]), None))


def test_flag_changed_is_sent_with_the_changed_names(zkflags, changes):
    version = zkflags.write("a", everyone=True)
    names, snapshot = _wait_names(changes, "a")
    assert names == frozenset({"a"})
    assert snapshot.flags["a"].version == version
    changes.clear()

    zkflags.write("b", everyone=False)
    names, snapshot = _wait_names(changes, "b")
    assert names == frozenset({"b"})  # "a" did not change
    assert set(snapshot.flags) == {"a", "b"}
    changes.clear()

    version = zkflags.write("a", everyone=False)
    names, _ = _wait_names(changes, "a")
    assert names == frozenset({"a"})
    changes.clear()

    zkflags.writer.delete_flag("a", version)
    zkflags.wait_version("a", None)
    names, snapshot = _wait_names(changes, "a")
    assert names == frozenset({"a"}) and "a" not in snapshot.flags


def test_flag_changed_for_overrides(changes):
    with override_flag("o"):
        assert changes[-1][0] == frozenset({"o"})
        assert changes[-1][1].flags["o"].everyone is True
    assert changes[-1][0] == frozenset({"o"})
    assert "o" not in changes[-1][1].flags


# -- flag_is_active_for_user -----------------------------------------------------------------


@pytest.fixture
def people(db, django_user_model):
    make = django_user_model.objects.create_user
    return {
        "plain": make("plain", password="pw"),
        "listed": make("listed", password="pw"),
        "staff": make("staff", password="pw", is_staff=True),
        "super": make("super", password="pw", is_superuser=True),
        "member": make("member", password="pw"),
    }


def test_for_listed_users(zkflags, people):
    zkflags.write("f", users=[people["listed"].pk])
    assert flag_is_active_for_user(people["listed"], "f") is True
    assert flag_is_active_for_user(people["plain"], "f") is False
    assert flag_is_active_for_user(AnonymousUser(), "f") is False
    assert flag_is_active_for_user(None, "f") is False


def test_for_staff_and_superusers(zkflags, people):
    zkflags.write("f", staff=True)
    assert flag_is_active_for_user(people["staff"], "f") is True
    assert flag_is_active_for_user(people["super"], "f") is False
    assert flag_is_active_for_user(people["plain"], "f") is False
    zkflags.write("f", staff=False, superusers=True)
    assert flag_is_active_for_user(people["super"], "f") is True
    assert flag_is_active_for_user(people["staff"], "f") is False


def test_for_authenticated(zkflags, people):
    zkflags.write("f", authenticated=True)
    assert all(flag_is_active_for_user(u, "f") for u in people.values())
    assert flag_is_active_for_user(AnonymousUser(), "f") is False


def test_for_groups(zkflags, people, django_user_model, django_assert_num_queries):
    beta, other = Group.objects.create(name="beta"), Group.objects.create(name="other")
    people["member"].groups.add(beta)
    people["plain"].groups.add(other)
    zkflags.write("f", groups=[beta.pk])
    zkflags.write("plain-flag", staff=True)

    member = django_user_model.objects.get(pk=people["member"].pk)
    with django_assert_num_queries(0):
        assert flag_is_active_for_user(member, "plain-flag") is False  # no group rule: no query
    with django_assert_num_queries(1):
        assert flag_is_active_for_user(member, "f") is True
    with django_assert_num_queries(0):
        assert flag_is_active_for_user(member, "f") is True  # ids kept on the user object
    plain = django_user_model.objects.get(pk=people["plain"].pk)
    assert flag_is_active_for_user(plain, "f") is False
    with django_assert_num_queries(0):
        assert flag_is_active_for_user(AnonymousUser(), "f") is False
    # The group is removed from the flag in ZooKeeper: a fresh user object sees it.
    zkflags.write("f", groups=[other.pk])
    assert flag_is_active_for_user(django_user_model.objects.get(pk=member.pk), "f") is False
    assert flag_is_active_for_user(django_user_model.objects.get(pk=plain.pk), "f") is True


def test_for_groups_through_a_request(zkflags, people, client):
    beta = Group.objects.create(name="beta")
    people["member"].groups.add(beta)
    zkflags.write("guarded", groups=[beta.pk])
    client.force_login(people["plain"])
    assert client.get("/guarded/").status_code == 404
    client.force_login(people["member"])
    assert client.get("/guarded/").status_code == 200


# -- unknown flags ---------------------------------------------------------------------------


@pytest.mark.parametrize("default", [True, False])
def test_unknown_flag_uses_the_setting(zkflags, settings, client, default):
    zkflags.write("known-off", everyone=False)
    settings.ZKFLAGS = {**settings.ZKFLAGS, "UNKNOWN_FLAG_ACTIVE": default}
    assert flag_is_active_for_user(None, "nope") is default
    assert flag_is_active_for_user(None, "known-off") is False  # a known flag keeps its rule
    assert render('{% flag "nope" %}A{% else %}B{% endflag %}') == ("A" if default else "B")
    assert client.get("/guarded/").status_code == (200 if default else 404)
    # A new snapshot from ZooKeeper keeps the default.
    zkflags.write("known-on", everyone=True)
    assert flag_is_active_for_user(None, "nope") is default


def test_unknown_flag_default_is_restored(settings):
    with override_settings(ZKFLAGS={**settings.ZKFLAGS, "UNKNOWN_FLAG_ACTIVE": True}):
        assert flag_is_active_for_user(None, "nope") is True
    assert flag_is_active_for_user(None, "nope") is False


# -- TESTING_OVERRIDES -----------------------------------------------------------------------


@pytest.fixture
def testing_overrides(settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "TESTING_OVERRIDES": True}
    settings.DEBUG = True
    return settings


@override_flag("guarded", active=False)
def test_query_forces_a_flag_on_with_the_setting_and_debug(client, testing_overrides):
    assert client.get("/guarded/").status_code == 404
    assert client.get("/guarded/?zkflags=guarded:on").status_code == 200
    assert client.get("/guarded/?zkflags=other:on,guarded:1").status_code == 200
    assert client.get("/guarded/?zkflags=guarded:maybe").status_code == 404
    assert client.get("/guarded/?zkflags=other:on").status_code == 404
    # Only for that request.
    assert client.get("/guarded/").status_code == 404


@override_flag("guarded")
def test_query_forces_a_flag_off(client, testing_overrides):
    assert client.get("/guarded/?zkflags=guarded:off").status_code == 404
    assert client.get("/guarded/?zkflags=guarded:0").status_code == 404
    assert client.get("/guarded/").status_code == 200


def test_query_param_name_is_configurable(client, testing_overrides):
    testing_overrides.ZKFLAGS = {**testing_overrides.ZKFLAGS, "TESTING_OVERRIDES_PARAM": "ff"}
    assert client.get("/guarded/?ff=guarded:on").status_code == 200
    assert client.get("/guarded/?zkflags=guarded:on").status_code == 404


@pytest.mark.parametrize(
    ("overrides", "debug"),
    [(False, False), (True, False), (False, True)],
    ids=["default", "setting-without-debug", "debug-without-setting"],
)
def test_query_is_ignored_otherwise(client, settings, overrides, debug):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "TESTING_OVERRIDES": overrides}
    settings.DEBUG = debug
    with override_flag("guarded", active=False):
        assert client.get("/guarded/?zkflags=guarded:on").status_code == 404
    with override_flag("guarded"):
        assert client.get("/guarded/?zkflags=guarded:off").status_code == 200


def test_query_is_ignored_by_default_even_for_an_unknown_flag(client):
    assert client.get("/guarded/?zkflags=guarded:on").status_code == 404
