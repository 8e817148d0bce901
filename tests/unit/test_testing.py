"""override_flag (django_zkflags/testing.py): forces flags with no ZooKeeper, as a context
manager, a function decorator and a class decorator; undone whatever happens.

An override that outlives a new snapshot from ZooKeeper:
tests/integration/test_testing.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import SimpleTestCase, TestCase

from django_zkflags import flag_is_active, flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.rules import FlagRule
from django_zkflags.testing import override_flag

from ..conftest import IF_ELSE, render


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


def test_override_as_context_manager(publish):
    publish(FlagRule("x", everyone=True))
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


def test_flag_changed_for_overrides(changes):
    with override_flag("o"):
        assert changes[-1][0] == frozenset({"o"})
        assert changes[-1][1].flags["o"].everyone is True
    assert changes[-1][0] == frozenset({"o"})
    assert "o" not in changes[-1][1].flags
