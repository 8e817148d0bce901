"""The admin's forms while ZooKeeper is away (issue 9, items 2 and 3), on a ZooKeeper server
of this module's own (stopped and started here; the session's server is left alone) or
behind a TcpProxy that stalls.

A save fails within ``ZKFLAGS["ADMIN_WRITE_TIMEOUT"]`` and comes back as the form, with
everything that was typed and the reason said once; nothing changes anywhere. The change
page and the Environments page show what this process last saw, marked as such, without
save buttons. When ZooKeeper is back, the same typed values save. The tests print the
wall time of each failing save (``pytest -s``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry

from django_zkflags import runtime, services
from django_zkflags.admin import offline
from django_zkflags.cache import store
from django_zkflags.models import Flag, FlagChange
from django_zkflags.snapshot import EMPTY
from tests.support.admin_pages import (
    ADD_URL,
    change_url,
    data_from_page,
    delete_url,
    form_data,
    make_flag,
    messages_of,
)

from ..conftest import BOUND, ZkFlags, wait_until

pytestmark = pytest.mark.django_db

ENVIRONMENTS_URL = "/admin/django_zkflags/flag/environments/"
ENVIRONMENTS = {"parents": {"production": None, "staging": "production"}, "hosts": {}}
UNREACHABLE = "ZooKeeper is unreachable"
#: A failing save takes the admin's timeout; more than this is a hang.
SAVE_BOUND = 6.0  # a hang catcher on a loaded machine: the saves take about 3-3.5 s (printed)


@pytest.fixture
def own_server_site(private_zk_server: Any, settings: Any, tmp_path: Any) -> Iterator[ZkFlags]:
    """This process's runtime on a fresh root of this module's own server, keeping its
    snapshot file in ``tmp_path``."""
    server = private_zk_server
    if not server.is_running:
        server.start()
    root = f"/o-{uuid.uuid4().hex[:12]}"
    url = f"zk://{server.hosts}{root}"
    settings.ZKFLAGS = {**settings.ZKFLAGS, "SNAPSHOT_FILE": str(tmp_path / "snapshot")}
    settings.ZKFLAGS_URL = url
    runtime.start(wait=BOUND)
    try:
        yield ZkFlags(server, url, root)
    finally:
        if not server.is_running:
            server.start()
        runtime.stop()
        store.publish(EMPTY)


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - started


def said_once(response: Any, text: str) -> None:
    """The reason is on the page once: the form's error, and no message repeating it."""
    html = response.content.decode()
    assert html.count(text) == 1, html.count(text)
    assert not any(text in m for m in messages_of(response))


def test_with_zookeeper_stopped_saves_keep_what_was_typed_and_pages_show_the_last_seen(
    own_server_site, admin_client
):
    site = own_server_site
    services.save_environments(ENVIRONMENTS, expected_version=None, source="test")
    flag = make_flag(
        admin_client,
        "steady",
        note="before the outage",
        value='{"limit": 3}',
        environments='{"staging": {"everyone": true}}',
    )
    site.wait_version("steady", 0)
    wait_until(lambda: offline.last_seen_environments() == ENVIRONMENTS)
    unseen = Flag.objects.bulk_create([Flag(name="row-only", note="only in the database")])[0]
    page = admin_client.get(change_url(flag))
    typed = {
        "note": "typed during the outage",
        "percent": "33.3",
        "value": '{"limit":  9,\n "why": "outage"}',
        "environments": '{"staging": {"percent": 50}}',
    }
    data = data_from_page(page, staff=True, **typed)
    audit_rows, log_entries = FlagChange.objects.count(), LogEntry.objects.count()

    site.server.stop()
    try:
        wait_until(lambda: not site.runtime.client.connected, timeout=BOUND)

        # The change form: refused within the bound, everything typed still there.
        response, took = timed(admin_client.post, change_url(flag), data)
        print(f"\nchange form save with ZooKeeper stopped: {took:.2f} s")
        assert response.status_code == 200
        assert took < SAVE_BOUND
        form = response.context["adminform"].form
        for name, value in typed.items():
            assert form[name].value() == value, name
        assert form["staff"].value() is True
        [error] = form.non_field_errors()
        assert UNREACHABLE in error and "kept below" in error
        said_once(response, UNREACHABLE)
        assert 'name="_save"' in response.content.decode()  # may be saved again later

        # The add form: the same.
        new = form_data("born-offline", note="typed on the add form", value="[1, 2]")
        response, took = timed(admin_client.post, ADD_URL, new)
        print(f"add form save with ZooKeeper stopped: {took:.2f} s")
        assert response.status_code == 200
        assert took < SAVE_BOUND
        form = response.context["adminform"].form
        assert (form["name"].value(), form["note"].value(), form["value"].value()) == (
            "born-offline",
            "typed on the add form",
            "[1, 2]",
        )
        said_once(response, UNREACHABLE)

        # Nothing changed anywhere.
        flag.refresh_from_db()
        assert (flag.note, flag.zk_version) == ("before the outage", 0)
        assert not Flag.objects.filter(name="born-offline").exists()
        assert (FlagChange.objects.count(), LogEntry.objects.count()) == (audit_rows, log_entries)
        assert store.base.flags["steady"].version == 0

        # The change page opens at once with what this process last saw, read-only.
        response, took = timed(admin_client.get, change_url(flag))
        print(f"change page with ZooKeeper stopped: {took:.2f} s")
        assert response.status_code == 200
        assert took < 2.5  # this process knows ZooKeeper is away: no 3 s wait
        html = response.content.decode()
        texts = messages_of(response)
        assert any(
            "showing what this process last saw, version 0" in t and "saving is disabled" in t
            for t in texts
        ), texts
        assert 'name="_save"' not in html and 'name="_continue"' not in html
        form = response.context["adminform"].form
        assert form["note"].value() == "before the outage"
        assert all(field.disabled for field in form.fields.values())

        # A delete: refused within the bound, said so.
        response, took = timed(admin_client.post, delete_url(flag), {"post": "yes"}, follow=True)
        print(f"delete with ZooKeeper stopped: {took:.2f} s")
        assert took < SAVE_BOUND
        assert any("nothing was deleted" in m for m in messages_of(response))
        assert Flag.objects.filter(name="steady").exists()

        # The add page opens, and says that saving will fail for now.
        response = admin_client.get(ADD_URL)
        assert any("saving will fail until it is back" in t for t in messages_of(response))

        # A flag this process never saw: the database copy, said so.
        response = admin_client.get(change_url(unseen))
        assert any("showing the database copy" in t for t in messages_of(response))
        assert 'name="_save"' not in response.content.decode()

        # The Environments page: the document this process last saw, read-only.
        response, took = timed(admin_client.get, ENVIRONMENTS_URL)
        print(f"environments page with ZooKeeper stopped: {took:.2f} s")
        assert response.status_code == 200
        assert took < 2.5  # no 3 s wait
        form = response.context["form"]
        assert json.loads(form["document"].value()) == ENVIRONMENTS
        assert form["document"].field.disabled
        html = response.content.decode()
        assert 'value="Save"' not in html
        assert "nothing was saved" not in html.lower()
        assert any("environments this process last saw" in t for t in messages_of(response))

        # A save posted from the Environments page anyway: refused, as typed.
        typed_document = json.dumps({**ENVIRONMENTS, "hosts": {"web-9": "staging"}}, indent=2)
        response, took = timed(
            admin_client.post,
            ENVIRONMENTS_URL,
            {"document": typed_document, "version_seen": "0"},
        )
        print(f"environments save with ZooKeeper stopped: {took:.2f} s")
        assert response.status_code == 200
        assert took < SAVE_BOUND
        assert response.context["form"]["document"].value() == typed_document
        said_once(response, UNREACHABLE)
    finally:
        site.server.start()

    # Back: the same typed values save, from the form as it came back.
    wait_until(lambda: site.runtime.client.connected, timeout=30)
    response = admin_client.post(change_url(flag), data)
    assert response.status_code == 302, (
        response.context and response.context["adminform"].form.errors
    )
    site.wait_version("steady", 1)
    doc, version = site.read("steady")
    assert (doc["note"], doc["percent"], doc["value"], doc["staff"], version) == (
        "typed during the outage",
        33.3,
        {"limit": 9, "why": "outage"},
        True,
        1,
    )
    assert doc["environments"] == {"staging": {"percent": 50}}
    flag.refresh_from_db()
    assert (flag.note, flag.zk_version) == ("typed during the outage", 1)
    assert [c.action for c in FlagChange.objects.filter(flag_name="steady")] == [
        "changed",
        "created",
    ]


def test_a_stalled_connection_fails_a_save_within_the_write_timeout(proxied_site, admin_client):
    """Connected (as far as kazoo knows) but nothing answers: the save gives up after
    WRITE_TIMEOUT, with what was typed."""
    site = proxied_site
    flag = make_flag(admin_client, "stalled", note="before")
    site.wait_version("stalled", 0)
    page = admin_client.get(change_url(flag))
    data = data_from_page(page, note="typed while stalled")
    site.proxy.pause()
    try:
        response, took = timed(admin_client.post, change_url(flag), data)
    finally:
        site.proxy.resume()
    print(f"\nchange form save with the connection stalled: {took:.2f} s")
    assert response.status_code == 200
    assert took < float(runtime.conf.get("WRITE_TIMEOUT")) + 2.0
    form = response.context["adminform"].form
    assert form["note"].value() == "typed while stalled"
    assert any(UNREACHABLE in e for e in form.non_field_errors())
    flag.refresh_from_db()
    assert (flag.note, flag.zk_version) == ("before", 0)
    assert [c.action for c in FlagChange.objects.filter(flag_name="stalled")] == ["created"]
