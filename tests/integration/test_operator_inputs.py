"""Operator slips and attacks on the app's inputs, against a real ZooKeeper: a decompression
bomb in the snapshot znode (issue 8, item 6), the environments znode edited by hand into
something invalid and overrides naming undefined environments (item 9), a value nested
hundreds of levels deep typed into the admin (item 10c).

The operator is a second kazoo client, or Debian's ``zkCli.sh`` where an operator would
use it. Each test prints the figures docs/reliability.md quotes (``pytest -s``).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from kazoo.client import KazooClient

from django_zkflags import runtime, services
from django_zkflags.cache import store
from django_zkflags.exceptions import FlagTooLarge
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import FlagRule, InvalidFlag
from django_zkflags.snapshot import MAGIC
from tests.support.operator import zkcli, zkcli_path

from ..conftest import wait_until

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
ADD_URL = "/admin/django_zkflags/flag/add/"
ENVIRONMENTS_URL = "/admin/django_zkflags/flag/environments/"


def command(*args: str) -> str:
    out = StringIO()
    call_command("zkflags", *args, stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def operator(zkflags: Any) -> Iterator[KazooClient]:
    """A second client with the same rights, as an operator's own tools would have."""
    client = KazooClient(hosts=zkflags.server.hosts, timeout=10.0)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def last_error() -> str:
    return str(runtime.status().get("last_error") or "")


def problems() -> list[tuple[str, str]]:
    return services.check().problems


# -- 6: a decompression bomb ----------------------------------------------------------------


def bomb(inflated_mib: int) -> bytes:
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b" " * MIB) for _ in range(inflated_mib)]
    return MAGIC + b"".join(parts) + compressor.flush()


def test_a_bomb_in_the_snapshot_is_refused_and_the_next_write_rebuilds_it(zkflags, operator):
    services.save_flag(FlagRule("kept", everyone=True), expected_version=None, source="test")
    zkflags.wait_version("kept", 0)
    data = bomb(1000)  # 995 KB: near the znode limit, 1,000 MiB inflated
    written = time.monotonic()
    operator.set(f"{zkflags.root}/snapshot", data)
    wait_until(lambda: "MAX_SNAPSHOT_BYTES" in last_error(), timeout=30)
    refused_in = time.monotonic() - written
    assert store.base.flags["kept"].everyone is True  # the last good snapshot is served
    # check reports it; the writer's reads are bounded too: the next write rebuilds it.
    assert any(name == "(snapshot)" and "MAX_SNAPSHOT_BYTES" in what for name, what in problems())
    started = time.monotonic()
    services.save_flag(FlagRule("next", staff=True), expected_version=None, source="test")
    rebuilt_in = time.monotonic() - started
    zkflags.wait_version("next", 0)
    assert sorted(store.base.flags) == ["kept", "next"]
    assert last_error() == ""
    print(
        f"\n[bomb] {len(data) // 1024} KB znode, 1000 MiB inflated: refused by this process "
        f"{refused_in:.2f} s after the write; the next save (rebuilding the snapshot) took "
        f"{rebuilt_in:.2f} s"
    )


def test_a_writer_never_writes_a_snapshot_over_the_bound(zkflags, settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "MAX_SNAPSHOT_BYTES": 4000}
    zkflags.write("small", everyone=True)
    before = zkflags.runtime.client.exists(f"{zkflags.root}/snapshot").mzxid
    long_note = "x" * 5000  # compresses to almost nothing: only the inflated size is over
    with pytest.raises(FlagTooLarge, match="MAX_SNAPSHOT_BYTES"):
        zkflags.put({"name": "noted", "note": long_note}, None)
    assert zkflags.read("noted") == (None, None)
    assert zkflags.runtime.client.exists(f"{zkflags.root}/snapshot").mzxid == before


# -- 10c: a value nested hundreds of levels deep, typed into the admin ------------------------


def nested_text(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def add_form(name: str, **fields: str) -> dict[str, str]:
    data = {"name": name, "note": "", "everyone": "", "value": "", "environments": "{}"}
    data.update(fields)
    return {**data, "zk_version_seen": ""}


@pytest.mark.parametrize("levels", [65, 300, 500, 700, 900, 2_000, 100_000])
def test_a_deep_value_is_a_form_error_in_the_admin(zkflags, admin_client, levels):
    admin_client.raise_request_exception = True  # a 500 would raise here
    response = admin_client.post(ADD_URL, add_form("deep", value=nested_text(levels)))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Nested too deeply" in " ".join(errors.get("value", [])), errors
    assert list(errors) == ["value"]
    # The text is shown back as typed.
    assert nested_text(levels)[:200] in response.content.decode()
    overrides = '{"staging": {"value": ' + nested_text(levels) + "}}"
    response = admin_client.post(ADD_URL, add_form("deep", environments=overrides))
    assert response.status_code == 200
    assert "Nested too deeply" in str(response.context["adminform"].form.errors["environments"])
    assert zkflags.read("deep") == (None, None)
    assert not Flag.objects.filter(name="deep").exists()


def test_a_value_at_the_limit_is_saved_through_the_admin(zkflags, admin_client):
    response = admin_client.post(ADD_URL, add_form("deep64", value=nested_text(64)))
    assert response.status_code == 302, response.content.decode()[:2000]
    zkflags.wait_version("deep64", 0)
    response = admin_client.post(ADD_URL, add_form("deep65", value=nested_text(65)))
    assert "Nested too deeply" in str(response.context["adminform"].form.errors["value"])
    # 65 levels parse fine: the rule refuses them, with the same message, for every writer.
    with pytest.raises(InvalidFlag, match="nested too deeply"):
        services.update_flag(
            "deep64", lambda doc: {**doc, "value": json.loads(nested_text(65))}, source="test"
        )


def test_a_deep_value_written_by_hand_is_reported_not_raised(zkflags, operator):
    operator.ensure_path(f"{zkflags.root}/flags")
    doc = {"name": "hand", "value": json.loads(nested_text(900))}
    operator.create(f"{zkflags.root}/flags/hand", json.dumps(doc).encode())
    stored = zkflags.reader.flag("hand")
    assert stored.rule is None and "nested too deeply" in str(stored.error)
    assert ("hand", f"flag znode is invalid: {stored.error}") in problems()


# -- 9: the environments znode edited by hand -----------------------------------------------

BROKEN_ENVIRONMENTS = [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'"production"', "must be a JSON object"),
    (b'{"parents": {"a": ["x"]}}', "must be an environment name or null"),
    (b'{"parents": []}', "'parents' must be a JSON object"),
    (b'{"parents": {"a": null}, "hosts": {"web-1": ["a"]}}', "pegged to an environment name"),
    (b'{"parents": {"s": "s"}}', "its own parent"),
    (b'{"parents": {"a": "b", "b": "c", "c": "a"}}', "cycle of parents"),
    (b'{"parents": {"a": "gone"}}', "undefined parent"),
    (b'{"parents": {"a": null}, "hosts": {"web 1": "a"}}', "Invalid host name"),
]


@pytest.mark.parametrize("data, message", BROKEN_ENVIRONMENTS)
def test_a_broken_environments_znode_is_reported_everywhere_and_never_raises(
    zkflags, operator, admin_client, data, message
):
    services.save_environments(
        {"parents": {"production": None}}, expected_version=None, source="test"
    )
    zkflags.write("f", everyone=True)
    operator.set(f"{zkflags.root}/environments", data)
    stored = zkflags.reader.environments()
    assert stored.version == 1 and message in str(stored.error)
    assert stored.document == {"parents": {}, "hosts": {}}
    assert ("(environments)", f"the environments document is invalid: {stored.error}") in problems()
    # The command line: listing says so, a change says how to repair, check exits non-zero.
    assert "The environments document is invalid" in command("env")
    with pytest.raises(CommandError, match="replace it whole"):
        command("env", "staging", "--parent", "production")
    with pytest.raises(CommandError, match="problem"):
        command("check")
    assert "(environments): left as it was in the snapshot" in command("repair")
    # The admin: the page opens and says so.
    admin_client.raise_request_exception = True
    page = admin_client.get(ENVIRONMENTS_URL)
    assert page.status_code == 200
    shown = " ".join(str(m) for m in get_messages(page.wsgi_request))
    assert "is invalid" in shown and message.split("'")[0] in shown
    assert admin_client.get("/admin/django_zkflags/flag/").status_code == 200
    # Flags are still written, and served.
    zkflags.write("f", everyone=False)
    assert store.base.flags["f"].everyone is False


def zkcli_or_skip() -> None:
    if zkcli_path() is None:
        from ..conftest import require_zookeeper

        require_zookeeper(FileNotFoundError("zkCli.sh (Debian's zookeeper package)"))


def test_an_environments_znode_broken_with_zkcli_is_repaired_with_env_replace(
    zkflags, zk_server, tmp_path, settings
):
    zkcli_or_skip()
    settings.ZKFLAGS = {**settings.ZKFLAGS, "HOSTNAME": "web-7"}
    path = f"{zkflags.root}/environments"
    zkflags.write("banner", everyone=False, environments={"canary": {"everyone": True}})
    started = time.monotonic()
    zkcli(zk_server.hosts, "create", path, '{"parents": {"a": ["x"]}}')
    zkcli_seconds = time.monotonic() - started
    stored = zkflags.reader.environments()
    assert stored.version == 0 and "must be an environment name" in str(stored.error)
    with pytest.raises(CommandError):
        command("check")

    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"parents": {"canary": null,}')
    self_parent = tmp_path / "self.json"
    self_parent.write_text('{"parents": {"canary": "canary"}}')
    for file, error in ((bad_json, "is not JSON"), (self_parent, "its own parent")):
        with pytest.raises(CommandError, match=error):
            command("env", "--replace", str(file))
    assert zkflags.reader.environments().version == 0  # nothing was written
    with pytest.raises(CommandError, match="takes no NAME"):
        command("env", "canary", "--replace", str(self_parent))

    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {"parents": {"production": None, "canary": "production"}, "hosts": {"web-7": "canary"}}
        )
    )
    out = command("env", "--replace", str(good))
    assert "environments replaced (version 1) (it was invalid" in out
    stored = zkflags.reader.environments()
    assert (stored.error, stored.version) == (None, 1)
    assert stored.document["hosts"] == {"web-7": "canary"}
    change = FlagChange.objects.get(flag_name="@environments")
    assert (change.action, change.source, change.zk_version) == ("changed", "command", 1)
    # The process follows: web-7 is pegged to canary, whose override turns the banner on.
    wait_until(lambda: store.base.environment == "canary")
    assert store.base.flags["banner"].everyone is True
    assert "environments unchanged (version 1)" in command("env", "--replace", str(good))
    assert zkcli(zk_server.hosts, "get", path).strip().splitlines()[-1].startswith("{")
    print(f"\n[zkCli.sh] one non-interactive command took {zkcli_seconds:.2f} s (a JVM start)")


def test_the_admin_page_opened_on_an_invalid_document_saves_a_valid_one(
    zkflags, operator, admin_client
):
    operator.ensure_path(zkflags.root)
    operator.create(f"{zkflags.root}/environments", b'{"parents": {"s": "s"}}')
    page = admin_client.get(ENVIRONMENTS_URL)
    assert page.status_code == 200
    assert "its own parent" in " ".join(str(m) for m in get_messages(page.wsgi_request))
    form = page.context["form"]
    assert form.initial == {"document": {"parents": {}, "hosts": {}}, "version_seen": 0}
    # The same invalid document typed back is refused; a valid one replaces it.
    response = admin_client.post(
        ENVIRONMENTS_URL, {"document": '{"parents": {"s": "s"}}', "version_seen": "0"}
    )
    assert "its own parent" in str(response.context["form"].errors["document"])
    response = admin_client.post(
        ENVIRONMENTS_URL, {"document": '{"parents": {"s": null}}', "version_seen": "0"}
    )
    assert response.status_code == 302
    stored = zkflags.reader.environments()
    assert (stored.document, stored.version, stored.error) == (
        {"parents": {"s": None}, "hosts": {}},
        1,
        None,
    )
    # A deeply nested document typed into the page is a form error, not a 500.
    admin_client.raise_request_exception = True
    response = admin_client.post(
        ENVIRONMENTS_URL, {"document": "[" * 5000 + "]" * 5000, "version_seen": "1"}
    )
    assert response.status_code == 200 and response.context["form"].errors["document"]


def test_a_self_parent_is_refused_by_the_command(zkflags):
    command("env", "production")
    with pytest.raises(CommandError, match="'s' is its own parent"):
        command("env", "s", "--parent", "s")
    command("env", "production-child", "--parent", "production")
    with pytest.raises(CommandError, match="cycle of parents"):
        command("env", "production", "--parent", "production-child")
    stored = zkflags.reader.environments()
    assert stored.document["parents"] == {"production": None, "production-child": "production"}


# -- 9: overrides naming an environment that is not defined -------------------------------------


def test_a_new_override_for_an_undefined_environment_is_refused(zkflags, admin_client):
    command("env", "production")
    command("env", "staging", "--parent", "production")
    # The command line: a typo is refused before anything is written.
    with pytest.raises(CommandError, match="'stagin' not defined .*production, staging"):
        command("set", "checkout", "--env", "stagin", "--on")
    assert zkflags.read("checkout") == (None, None)
    command("set", "checkout", "--env", "staging", "--on")
    # The admin: a form error on the overrides.
    response = admin_client.post(
        ADD_URL, add_form("search", environments='{"stagin": {"everyone": true}}')
    )
    assert response.status_code == 200
    assert "'stagin' not defined" in " ".join(
        response.context["adminform"].form.errors["environments"]
    )
    assert zkflags.read("search") == (None, None)
    # The ORM: refused too (services.push_row).
    with pytest.raises(InvalidFlag, match="'stagin' not defined"):
        Flag.objects.create(name="orm-made", environments={"stagin": {"everyone": True}})
    assert zkflags.read("orm-made") == (None, None)
    assert "agree" in command("check")


def test_an_override_left_by_a_deleted_environment_is_reported_but_blocks_nothing(
    zkflags, admin_client
):
    command("env", "production")
    command("env", "staging", "--parent", "production")
    command("set", "checkout", "--env", "staging", "--on")
    command("env", "staging", "--delete")
    # check reports the override that no longer applies anywhere...
    with pytest.raises(CommandError):
        command("check")
    assert (
        "checkout",
        "overrides environment(s) staging that the environments document does not define: "
        "define them ('zkflags env NAME') or remove the overrides",
    ) in problems()
    # ...but edits of the flag that keep it go through: the command, the admin, the ORM.
    command("set", "checkout", "--percent", "10")
    command("set", "checkout", "--env", "staging", "--off")  # the old override itself, too
    doc, version = zkflags.read("checkout")
    assert (doc["percent"], doc["environments"], version) == (
        10.0,
        {"staging": {"everyone": False}},
        2,
    )
    row = Flag.objects.get(name="checkout")
    response = admin_client.post(
        f"/admin/django_zkflags/flag/{row.pk}/change/",
        {
            "note": "edited",
            "everyone": "",
            "percent": "10",
            "value": "",
            "environments": json.dumps(doc["environments"]),
            "zk_version_seen": str(version),
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert zkflags.read("checkout")[0]["note"] == "edited"
    # A new undefined override next to it is still refused.
    with pytest.raises(CommandError, match="'qa' not defined"):
        command("set", "checkout", "--env", "qa", "--on")
    assert zkflags.read("checkout")[1] == 3


def test_without_an_environments_document_overrides_are_not_checked(zkflags):
    # Environments named only in each process's settings (ZKFLAGS["ENVIRONMENT"]).
    command("set", "checkout", "--env", "anywhere", "--on")
    assert zkflags.read("checkout")[0]["environments"] == {"anywhere": {"everyone": True}}
    assert "agree" in command("check")
