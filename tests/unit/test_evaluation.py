"""The one evaluator (django_zkflags/evaluation.py), through the public API: RequestFlags,
``flag_is_active_for_user`` and the rules of users, staff, superusers and groups, unknown
flags, and ``?zkflags=`` overrides in tests.

No ZooKeeper: flags are forced with ``override_flag``, or rules are published into the
store in a snapshot built in the test (``publish``). The unknown-flag default across a
snapshot from ZooKeeper: tests/integration/test_evaluation.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.test import override_settings

from django_zkflags import flag_is_active_for_user, get_snapshot
from django_zkflags.api import RequestFlags
from django_zkflags.rules import FlagRule
from django_zkflags.testing import override_flag


@override_flag("on1")
@override_flag("off1", active=False)
def test_request_flags_memoises_and_lists(rf):
    request = rf.get("/")
    request.user = AnonymousUser()
    flags = RequestFlags(request)
    assert flags["on1"] is True and "on1" in flags and "off1" not in flags
    assert flags.active_names() == ["on1"]
    assert flags.snapshot is get_snapshot()


# -- flag_is_active_for_user -----------------------------------------------------------------


@pytest.fixture
def users_by_kind(db, django_user_model):
    make = django_user_model.objects.create_user
    return {
        "plain": make("plain", password="pw"),
        "listed": make("listed", password="pw"),
        "staff": make("staff", password="pw", is_staff=True),
        "super": make("super", password="pw", is_superuser=True),
        "member": make("member", password="pw"),
    }


def test_for_listed_users(publish, users_by_kind):
    publish(FlagRule("f", users=[users_by_kind["listed"].pk]))
    assert flag_is_active_for_user(users_by_kind["listed"], "f") is True
    assert flag_is_active_for_user(users_by_kind["plain"], "f") is False
    assert flag_is_active_for_user(AnonymousUser(), "f") is False
    assert flag_is_active_for_user(None, "f") is False


def test_for_staff_and_superusers(publish, users_by_kind):
    publish(FlagRule("f", staff=True))
    assert flag_is_active_for_user(users_by_kind["staff"], "f") is True
    assert flag_is_active_for_user(users_by_kind["super"], "f") is False
    assert flag_is_active_for_user(users_by_kind["plain"], "f") is False
    publish(FlagRule("f", staff=False, superusers=True))
    assert flag_is_active_for_user(users_by_kind["super"], "f") is True
    assert flag_is_active_for_user(users_by_kind["staff"], "f") is False


def test_for_authenticated(publish, users_by_kind):
    publish(FlagRule("f", authenticated=True))
    assert all(flag_is_active_for_user(u, "f") for u in users_by_kind.values())
    assert flag_is_active_for_user(AnonymousUser(), "f") is False


def test_for_groups(publish, users_by_kind, django_user_model, django_assert_num_queries):
    beta, other = Group.objects.create(name="beta"), Group.objects.create(name="other")
    users_by_kind["member"].groups.add(beta)
    users_by_kind["plain"].groups.add(other)
    plain_flag = FlagRule("plain-flag", staff=True)
    publish(FlagRule("f", groups=[beta.pk]), plain_flag)

    member = django_user_model.objects.get(pk=users_by_kind["member"].pk)
    with django_assert_num_queries(0):
        assert flag_is_active_for_user(member, "plain-flag") is False  # no group rule: no query
    with django_assert_num_queries(1):
        assert flag_is_active_for_user(member, "f") is True
    with django_assert_num_queries(0):
        assert flag_is_active_for_user(member, "f") is True  # ids kept on the user object
    plain = django_user_model.objects.get(pk=users_by_kind["plain"].pk)
    assert flag_is_active_for_user(plain, "f") is False
    with django_assert_num_queries(0):
        assert flag_is_active_for_user(AnonymousUser(), "f") is False
    # The group is removed from the flag (a new snapshot): a fresh user object sees it.
    publish(FlagRule("f", groups=[other.pk]), plain_flag)
    assert flag_is_active_for_user(django_user_model.objects.get(pk=member.pk), "f") is False
    assert flag_is_active_for_user(django_user_model.objects.get(pk=plain.pk), "f") is True


def test_for_groups_through_a_request(publish, users_by_kind, client):
    beta = Group.objects.create(name="beta")
    users_by_kind["member"].groups.add(beta)
    publish(FlagRule("guarded", groups=[beta.pk]))
    client.force_login(users_by_kind["plain"])
    assert client.get("/guarded/").status_code == 404
    client.force_login(users_by_kind["member"])
    assert client.get("/guarded/").status_code == 200


# -- unknown flags ---------------------------------------------------------------------------


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
