"""``django_zkflags.explain`` on flags that came through a real ZooKeeper: the znode
version, the environment whose override decided (the process's environment chain from the
environments document), a prerequisite turned off in ZooKeeper, and a change followed.

The property test against random rules, and each reason: tests/unit/test_explain.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from django_zkflags import explain, flag_is_active, flag_is_active_for_user
from django_zkflags.api import RequestFlags
from django_zkflags.cache import store
from django_zkflags.rules import bucket, validate_environments_document

from ..conftest import served_version, wait_until

pytestmark = pytest.mark.django_db


def test_the_version_environment_and_prerequisite_of_flags_from_zookeeper(
    zkflags, settings, people
):
    users, groups = people
    users[0].groups.add(groups[0])
    zkflags.writer.write_environments(
        validate_environments_document({"parents": {"production": None, "canary": "production"}}),
        None,
    )
    zkflags.write("cart", groups=[groups[0].pk], environments={"canary": {"percent": 100}})
    version = zkflags.write("checkout", everyone=True, requires=["cart"])
    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "canary"}
    wait_until(lambda: store.base.chain == ("production", "canary"))

    member, other = users[0], users[1]
    on = explain(member, "checkout")
    assert (on.active, on.reason, on.version) == (True, "everyone", version)
    cart = explain(other, "cart")
    assert (cart.active, cart.reason, cart.environment, cart.threshold) == (
        True,
        "percent",
        "canary",
        10_000,
    )
    assert cart.bucket == bucket("cart", other.pk)

    # canary's override goes; then cart is on for its group only.
    zkflags.write("cart", environments={})
    off = explain(other, "checkout")
    assert (off.active, off.reason, off.prerequisite, off.environment) == (
        False,
        "prerequisite",
        "cart",
        None,
    )
    assert flag_is_active_for_user(other, "checkout") is False
    assert explain(member, "checkout").active is flag_is_active_for_user(member, "checkout")
    assert explain(member, "cart").reason == "groups"
    assert explain(member, "checkout").version == served_version("checkout")


def test_an_anonymous_request_with_the_middleware_answers_as_its_checks(zkflags, rf):
    zkflags.write("half", percent=50)
    request = rf.get("/")
    request.user = AnonymousUser()
    request.flags = RequestFlags(request)
    explained = explain(request, "half")
    assert explained.reason == "percent" and explained.threshold == 5000
    assert explained.active is flag_is_active(request, "half")
    assert explained.bucket == bucket("half", request.flags.anonymous_id)
