"""Live configuration values and environments, through a real ZooKeeper."""

from __future__ import annotations

import pytest
from django.core.management import CommandError
from django.template import Context, Template
from django.test import RequestFactory

from django_zkflags import flag_is_active_for_user, get_value, runtime, services
from django_zkflags.api import RequestFlags
from django_zkflags.cache import store
from django_zkflags.exceptions import FlagConflict
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import (
    InvalidFlag,
    thaw_value,
    validate_environments_document,
)

from ..conftest import wait_until, zkflags_command

pytestmark = pytest.mark.django_db


def wait_environment(env: str | None) -> None:
    wait_until(lambda: store.base.environment == env)


def test_values_of_every_json_type_reach_the_cache_read_only(zkflags):
    for name, value in [
        ("limit", 25),
        ("ratio", 0.75),
        ("greeting", "hello"),
        ("switch", False),
        ("layout", {"columns": [1, 2, {"w": 3}], "theme": "dark"}),
    ]:
        zkflags.write(name, value=value)
        assert thaw_value(get_value(name)) == value
    layout = get_value("layout")
    assert layout["theme"] == "dark" and layout["columns"][2]["w"] == 3
    with pytest.raises(TypeError):
        layout["theme"] = "light"  # shared by every request: read-only
    assert isinstance(layout["columns"], tuple)
    assert get_value("missing", default=7) == 7
    zkflags.write("plain")
    assert get_value("plain", "dflt") == "dflt"


def test_value_in_templates_and_request_snapshot(zkflags, rf: RequestFactory):
    zkflags.write("page-size", value=50)
    request = rf.get("/")
    request.flags = RequestFlags(request)
    zkflags.write("page-size", value=100)  # after the request started
    assert request.flags.value("page-size") == 50
    assert get_value("page-size", request=request) == 50
    assert get_value("page-size") == 100
    html = Template(
        '{% load zkflags %}[{% flag_value "page-size" %}][{% flag_value "nope" "none" %}]'
        '{% flag_value "page-size" as size %}<{{ size }}>'
    ).render(Context({"request": request}))
    assert html == "[50][none]<50>"


def test_invalid_values_and_overrides_are_refused_before_zookeeper(zkflags):
    bad_docs = [
        {"name": "x", "value": float("nan")},
        {"name": "x", "environments": {"bad env": {"everyone": True}}},
        {"name": "x", "environments": {"staging": {"note": "not overridable"}}},
        {"name": "x", "environments": {"staging": {"percent": 101}}},
        {"name": "x", "environments": {"staging": ["not", "an", "object"]}},
        {"name": "x", "environments": "staging"},
    ]
    for doc in bad_docs:
        with pytest.raises(InvalidFlag):
            zkflags.put(doc, None)  # refused by FlagRule, before the writer
    assert zkflags.read("x") == (None, None)


def test_environment_overrides_inherit_from_parents(zkflags, settings):
    zkflags.write(
        "checkout",
        everyone=False,
        value={"provider": "old"},
        environments={
            "production": {"value": {"provider": "new"}},
            "canary": {"everyone": True},
            "staging": {"everyone": True, "value": {"provider": "sandbox"}},
        },
    )
    zkflags.writer.write_environments(
        validate_environments_document(
            {"parents": {"production": None, "canary": "production", "staging": None}}
        ),
        None,
    )
    # No environment configured: the base rule.
    wait_until(lambda: store.base.chain == () and "checkout" in store.base.flags)
    assert flag_is_active_for_user(None, "checkout") is False
    assert get_value("checkout")["provider"] == "old"

    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "canary"}
    wait_until(lambda: store.base.chain == ("production", "canary"))
    assert flag_is_active_for_user(None, "checkout") is True  # canary's own override
    assert get_value("checkout")["provider"] == "new"  # inherited from production

    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "production"}
    wait_until(lambda: store.base.chain == ("production",))
    assert flag_is_active_for_user(None, "checkout") is False
    assert get_value("checkout")["provider"] == "new"

    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "staging"}
    wait_until(lambda: store.base.chain == ("staging",))
    assert flag_is_active_for_user(None, "checkout") is True
    assert get_value("checkout")["provider"] == "sandbox"
    assert runtime.status()["environment"] == "staging"


def test_a_host_pegged_to_an_environment_moves_live(zkflags, settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "ENVIRONMENT": "production", "HOSTNAME": "web-7"}
    zkflags.write("banner", everyone=False, environments={"canary": {"everyone": True}})
    assert flag_is_active_for_user(None, "banner") is False
    assert "environment canary: parent=production" in zkflags_command(
        "env", "production"
    ) + zkflags_command("env", "canary", "--parent", "production")
    assert "pegged to canary" in zkflags_command("host", "web-7", "canary")
    wait_until(lambda: store.base.environment == "canary")
    assert flag_is_active_for_user(None, "banner") is True
    zkflags_command("host", "web-7", "--delete")
    wait_until(lambda: store.base.environment == "production")
    assert flag_is_active_for_user(None, "banner") is False
    listing = zkflags_command("env")
    assert "canary\tparent=production" in listing and "host" not in listing
    # Every change of the environments is audited.
    assert FlagChange.objects.filter(flag_name="@environments").count() == 4


def test_environment_document_is_validated_and_versioned(zkflags):
    def save(doc, expected_version):
        return services.save_environments(doc, expected_version=expected_version, source="test")

    def stored():
        environments = zkflags.reader.environments()
        assert environments.error is None
        return environments.document, environments.version

    for bad in (
        {"parents": {"a": "b", "b": "a"}},
        {"parents": {"a": "missing"}},
        {"parents": {"a": None}, "hosts": {"web-1": "nowhere"}},
        {"parents": {"bad name": None}},
        {"parents": {}, "other": 1},
    ):
        with pytest.raises(InvalidFlag):
            validate_environments_document(bad)
        with pytest.raises(InvalidFlag):
            save(bad, None)
    assert stored() == ({"parents": {}, "hosts": {}}, None)
    save({"parents": {"a": None}}, None)
    with pytest.raises(FlagConflict):
        save({"parents": {"b": None}}, None)  # stale: someone wrote v0
    save({"parents": {"a": None, "b": "a"}}, 0)
    assert stored() == ({"parents": {"a": None, "b": "a"}, "hosts": {}}, 1)
    with pytest.raises(CommandError, match="undefined"):
        zkflags_command("host", "web-9", "nowhere")


def test_flag_writes_keep_the_environments_and_repair_restores_them(zkflags):
    zkflags.writer.write_environments(
        validate_environments_document(
            {"parents": {"production": None}, "hosts": {"h": "production"}}
        ),
        None,
    )
    zkflags.write("a", everyone=True)
    assert zkflags.reader.snapshot().environments == {
        "parents": {"production": None},
        "hosts": {"h": "production"},
    }
    # A snapshot rebuilt from the source znodes (repair) carries them too.
    assert "Repaired" in zkflags_command("repair")
    assert zkflags.reader.snapshot().environments["hosts"] == {"h": "production"}


def test_admin_edits_value_and_overrides(zkflags, admin_client):
    response = admin_client.post(
        "/admin/django_zkflags/flag/add/",
        {
            "name": "tuned",
            "note": "",
            "everyone": "",
            "value": '{"limit": 10}',
            "environments": '{"staging": {"value": {"limit": 99}, "everyone": true}}',
            "zk_version_seen": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    doc, version = zkflags.read("tuned")
    assert doc["value"] == {"limit": 10}
    assert doc["environments"] == {"staging": {"value": {"limit": 99}, "everyone": True}}
    zkflags.wait_version("tuned", version)
    assert get_value("tuned")["limit"] == 10
    # Malformed JSON and invalid overrides are form errors: nothing reaches ZooKeeper.
    for field, text in (
        ("value", "{not json"),
        ("environments", '{"staging": {"name": "x"}}'),
        ("environments", '{"bad env": {}}'),
    ):
        data = {"name": "broken", "note": "", "everyone": "", "value": "", "environments": "{}"}
        data[field] = text
        response = admin_client.post("/admin/django_zkflags/flag/add/", data)
        assert response.status_code == 200
        assert response.context["adminform"].form.errors.get(field)
    assert zkflags.read("broken") == (None, None)
    assert not Flag.objects.filter(name="broken").exists()


def test_set_command_with_value_and_environment(zkflags):
    out = zkflags_command("set", "rate", "--value", "3")
    assert "version 0" in out
    zkflags_command("set", "rate", "--env", "staging", "--on", "--value", '"fast"')
    doc, version = zkflags.read("rate")
    assert doc["value"] == 3 and doc["environments"] == {
        "staging": {"everyone": True, "value": "fast"}
    }
    with pytest.raises(CommandError, match="JSON"):
        zkflags_command("set", "rate", "--value", "{oops")
    assert zkflags.read("rate")[1] == version
    assert "agree" in zkflags_command("check")
