"""``health/`` (``path("zkflags/", include("django_zkflags.urls"))``) and ``manage.py zkflags
status``: what this process serves, for a load balancer, a monitor and a person.

200 while the process serves a snapshot; 503 when it never loaded one, or (with
``ZKFLAGS["HEALTH_MAX_STALENESS"]``) when its snapshot was not confirmed current recently;
``?strict=1`` answers 503 on any problem. With ZooKeeper cut away behind a proxy:
tests/system/test_health.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management.base import CommandError
from django.urls import include, path

import django_zkflags
from django_zkflags import runtime
from django_zkflags.cache import store
from django_zkflags.snapshot import EMPTY

from ..conftest import wait_until, zkflags_command

urlpatterns = [path("zkflags/", include("django_zkflags.urls"))]

pytestmark = pytest.mark.urls(__name__)

HEALTH = "/zkflags/health/"
FIELDS = {
    "ok",
    "problem",
    "serving",
    "source",
    "flags",
    "version",
    "zxid",
    "environment",
    "connected",
    "last_heard_seconds_ago",
    "confirmed_seconds_ago",
    "confirmed_limit_seconds",
    "max_staleness_seconds",
    "missed_changes",
    "invalid_flags",
    "status_code",
    "strict_status_code",
    "pid",
    "library",
}


def health(client: Any, query: str = "") -> tuple[int, dict[str, Any]]:
    response = client.get(HEALTH + query)
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response.get("Cache-Control", "")
    return response.status_code, response.json()


def test_serving_a_snapshot_from_zookeeper_is_200(zkflags, direct, client):
    zkflags.write("banner", everyone=True)
    stat = direct.exists(f"{zkflags.root}/snapshot")
    wait_until(lambda: runtime.status()["version"] == stat.version)
    code, body = health(client)
    assert code == 200
    assert FIELDS <= set(body)
    assert body["ok"] is True and body["problem"] is None
    assert body["serving"] is True and body["source"] == "zookeeper"
    assert (body["version"], body["zxid"]) == (stat.version, stat.mzxid)
    assert body["connected"] is True and body["last_heard_seconds_ago"] == 0.0
    assert 0 <= body["confirmed_seconds_ago"] < body["confirmed_limit_seconds"]
    assert body["invalid_flags"] == [] and body["missed_changes"] == 0
    assert body["max_staleness_seconds"] is None
    assert body["library"] == django_zkflags.__version__
    assert health(client, "?strict=1")[0] == 200
    assert health(client, "?strict=0")[0] == 200
    # Nothing about where ZooKeeper is, or who the app is there.
    assert zkflags.server.hosts not in json.dumps(body) and zkflags.root not in json.dumps(body)


def test_an_empty_tree_is_a_snapshot_too(zkflags, client):
    """No flag was ever written: ZooKeeper answered "no snapshot", which is "no flags"."""
    code, body = health(client)
    assert code == 200 and body["serving"] is True and body["flags"] == 0


def test_invalid_flags_are_named(zkflags, direct, client):
    from django_zkflags.reader import read_view
    from django_zkflags.snapshot import encode_entries

    zkflags.write("good", everyone=True)
    entries = read_view(direct, zkflags.root)["flags"]  # written back by hand, as format 1
    entries["broken"] = {"name": "broken", "percent": 500, "version": 0}
    direct.set(f"{zkflags.root}/snapshot", encode_entries(entries))
    wait_until(lambda: runtime.status()["invalid_flags"], what="the invalid flag")
    code, body = health(client)
    assert code == 200  # the other flags are served
    assert body["invalid_flags"] == ["broken"]


def test_never_loaded_a_snapshot_is_503(settings, client):
    settings.ZKFLAGS_URL = "zk://127.0.0.1:1/nowhere"  # nothing listens there; no disk copy
    store.publish(EMPTY)
    runtime.start(wait=0)
    try:
        code, body = health(client)
        assert code == 503
        assert body["serving"] is False and body["source"] == "empty"
        assert body["connected"] is False and body["last_heard_seconds_ago"] is None
        assert "no snapshot" in body["problem"]
        assert health(client, "?strict=0")[0] == 503
    finally:
        runtime.stop()


def test_no_runtime_and_no_snapshot_is_503(client):
    runtime.stop()
    store.publish(EMPTY)
    code, body = health(client)
    assert code == 503 and body["serving"] is False


def test_max_staleness_turns_an_unconfirmed_snapshot_into_503(zkflags, client, settings):
    zkflags.write("banner", everyone=True)
    # The tests verify every second; 0.05 s is exceeded between two checks.
    settings.ZKFLAGS = {**settings.ZKFLAGS, "HEALTH_MAX_STALENESS": 0.05}
    code, body = wait_until(
        lambda: (result := health(client))[0] == 503 and result, what="a 503 for staleness"
    )
    assert body["serving"] is True and body["max_staleness_seconds"] == 0.05
    assert body["confirmed_seconds_ago"] > 0.05
    settings.ZKFLAGS = {**settings.ZKFLAGS, "HEALTH_MAX_STALENESS": 60}
    assert health(client)[0] == 200


# -- manage.py zkflags status ---------------------------------------------------------------


def test_status_for_a_person(zkflags, direct):
    zkflags.write("banner", everyone=True)
    stat = direct.exists(f"{zkflags.root}/snapshot")
    wait_until(lambda: runtime.status()["version"] == stat.version)
    out = zkflags_command("status")
    assert "Health:       200 OK" in out
    assert f"Snapshot:     v{stat.version} (zxid {stat.mzxid:#x}), 1 flag(s), from ZooKeeper" in out
    assert f"{zkflags.server.hosts}{zkflags.root}: connected" in out
    assert "Confirmed:    current" in out
    assert "Fleet entry:" in out
    assert not out.lstrip().startswith("{")


def test_status_as_json(zkflags):
    zkflags.write("banner", everyone=True)
    data = json.loads(zkflags_command("status", "--json"))
    assert data["watching"] is True and data["flags"] == 1
    assert data["health"]["status_code"] == 200 and data["health"]["serving"] is True


def test_status_fails_when_health_would_be_503(settings):
    settings.ZKFLAGS_URL = "zk://127.0.0.1:1/nowhere"
    store.publish(EMPTY)
    try:
        with pytest.raises(CommandError, match="health/ would answer 503: no snapshot"):
            zkflags_command("status", "--wait", "0")
    finally:
        runtime.stop()
