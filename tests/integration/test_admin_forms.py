"""The admin's forms take any input without a server error (issue 9, item 1): every text
and number field of the flag add and change forms, and the Environments page, posted empty,
as whitespace, oversized, as invalid JSON (and a few worse things: a 5,000-digit integer,
100,000 levels of nesting, non-string targets). Each post gives a page with a clear message
or a save, never a 5xx; afterwards ``check`` finds nothing, and the row, the znode and the
rule this process serves are the same.

Also: empty JSON boxes mean "none" and are shown empty; a refused save (a conflict, too
large) comes back as the form with what was typed; a save that changes nothing writes
nothing (no ZooKeeper version, no audit row, no LogEntry). With ZooKeeper stopped:
tests/system/test_admin_forms_outage.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission, User

from django_zkflags import services
from django_zkflags.admin import offline
from django_zkflags.models import Flag, FlagChange
from tests.support.admin_pages import (
    ADD_URL,
    change_url,
    data_from_page,
    form_data,
    make_flag,
    messages_of,
)

pytestmark = pytest.mark.django_db

ENVIRONMENTS_URL = "/admin/django_zkflags/flag/environments/"
ENVIRONMENTS = {"parents": {"production": None, "staging": "production"}, "hosts": {}}
#: Over ZooKeeper's one-write limit (1 MB), under Django's request limit (2.5 MB).
HUGE = 1_100_000

#: What a person can type into a box, by kind: (label, text).
VARIANTS: list[tuple[str, str]] = [
    ("empty", ""),
    ("whitespace", " \t\r\n  "),
    ("oversized", "x" * HUGE),
    ("invalid-json", '{"everyone": tru'),
    ("huge-number", "9" * 5000),
    ("deep", "[" * 100_000 + "]" * 100_000),
    ("negative", "-1"),
    ("nan", "NaN"),
]
#: JSON boxes get valid-but-hostile JSON too.
JSON_VARIANTS: list[tuple[str, str]] = [
    ("oversized-string", json.dumps("x" * HUGE)),
    ("5000-digit-integer", "9" * 5000),
    ("5000-digit-integer-inside", '{"staging": {"percent": ' + "9" * 5000 + "}}"),
    ("float-overflow", "1e400"),
    ("null", "null"),
    ("500-deep", "[" * 500 + "]" * 500),
]
TEXT_FIELDS = ("note", "percent", "value", "environments", "zk_version_seen", "users", "groups")
CASES = [(field, label, text) for field in TEXT_FIELDS for label, text in VARIANTS] + [
    (field, label, text) for field in ("value", "environments") for label, text in JSON_VARIANTS
]


@pytest.fixture
def site(zkflags: Any, admin_client: Any) -> Any:
    """The flag admin on a fresh root, with environments defined (so that overrides are
    accepted), and one flag to change."""
    services.save_environments(ENVIRONMENTS, expected_version=None, source="test")
    User.objects.create_user("person0")
    Group.objects.create(name="group0")
    make_flag(
        admin_client,
        "existing",
        note="before",
        percent="12.5",
        value='{"limit": 3}',
        environments='{"staging": {"everyone": true}}',
    )
    zkflags.wait_version("existing", 0)
    return zkflags


def agree(zkflags: Any, *names: str) -> None:
    """``check`` finds nothing; for each flag the row, the znode and the rule this process
    serves are the same document at the same version (or none of them exists)."""
    assert services.check().problems == []
    for name in names:
        doc, version = zkflags.read(name)
        row = Flag.objects.filter(name=name).first()
        if doc is None:
            assert row is None, name
            assert version is None, name
            continue
        assert row is not None, name
        assert (row.to_rule().to_document(), row.zk_version) == (doc, version), name
        zkflags.wait_version(name, version)
        served = offline.last_seen_flag(name)
        assert served is not None
        assert (served.to_document(), served.version) == (doc, version), name


def post_is_answered(response: Any) -> None:
    """A page with a clear message (the form again, with its errors) or a save."""
    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 200:
        form = response.context["adminform"].form
        assert form.errors, "a 200 after a POST must say what is wrong"


def field_data(field: str, text: str) -> dict[str, Any]:
    return {field: [text] if field in ("users", "groups") else text}


@pytest.mark.parametrize(
    ("field", "label", "text"), CASES, ids=[f"{f}-{label}" for f, label, _ in CASES]
)
def test_every_text_and_number_field_of_the_add_and_change_forms(
    site, admin_client, field, label, text
):
    admin_client.raise_request_exception = True  # a 500 would raise here
    audit_rows = FlagChange.objects.count()

    # The add form.
    data = form_data("added", note="new")
    data.update(field_data(field, text))
    added = admin_client.post(ADD_URL, data)
    post_is_answered(added)
    if added.status_code == 200:
        form = added.context["adminform"].form
        assert not Flag.objects.filter(name="added").exists()
        if field in ("note", "value", "environments"):
            assert form[field].value() == text, "what was typed is shown back as typed"
    agree(site, "added", "existing")

    # The change form, from the page as drawn.
    flag = Flag.objects.get(name="existing")
    page = admin_client.get(change_url(flag))
    before = site.read("existing")
    data = data_from_page(page)
    data.update(field_data(field, text))
    changed = admin_client.post(change_url(flag), data)
    post_is_answered(changed)
    if changed.status_code == 200:
        assert site.read("existing") == before
        form = changed.context["adminform"].form
        if field in ("note", "value", "environments"):
            assert form[field].value() == text
    agree(site, "added", "existing")
    print(f"{field} {label}: add {added.status_code}, change {changed.status_code}")
    # Every change that reached ZooKeeper has one audit row, and nothing else has.
    expected = audit_rows + (added.status_code == 302) + (site.read("existing")[1] != before[1])
    assert FlagChange.objects.count() == expected


def test_empty_json_boxes_mean_none_and_are_shown_empty(site, admin_client):
    add_page = admin_client.get(ADD_URL)
    form = add_page.context["adminform"].form
    html = add_page.content.decode()
    assert form["value"].value() in (None, "")
    assert ">\nnull</textarea>" not in html and ">null</textarea>" not in html
    assert "Empty: no value" in html
    assert "Empty: no overrides" in html

    # Every box cleared on the change form: a save, with no value and no overrides.
    flag = Flag.objects.get(name="existing")
    page = admin_client.get(change_url(flag))
    assert page.context["adminform"].form["value"].value() == '{"limit": 3}'
    data = data_from_page(page, note="", percent="", value="", environments="", everyone="")
    response = admin_client.post(change_url(flag), data)
    assert response.status_code == 302
    doc, version = site.read("existing")
    assert (doc["note"], doc["percent"], version) == ("", None, 1)
    assert "value" not in doc and "environments" not in doc
    flag.refresh_from_db()
    assert (flag.value, flag.environments) == (None, {})
    agree(site, "existing")
    page = admin_client.get(change_url(flag))
    form = page.context["adminform"].form
    assert (form["value"].value(), form["environments"].value()) == ("", "")

    # The add form with every box empty but the name.
    response = admin_client.post(ADD_URL, {"name": "bare", "value": "", "environments": ""})
    assert response.status_code == 302
    doc, _ = site.read("bare")
    assert "value" not in doc and "environments" not in doc
    agree(site, "bare", "existing")


def test_a_save_that_changes_nothing_writes_nothing(site, admin_client):
    flag = Flag.objects.get(name="existing")
    audit_rows = FlagChange.objects.count()
    log_entries = LogEntry.objects.count()
    snapshot = site.runtime.client.exists(f"{site.root}/snapshot")
    page = admin_client.get(change_url(flag))

    response = admin_client.post(change_url(flag), data_from_page(page), follow=True)
    assert response.status_code == 200
    texts = messages_of(response)
    assert any(t.startswith("Nothing changed") for t in texts), texts
    assert not any("successfully" in t for t in texts), texts
    assert site.read("existing")[1] == 0
    assert site.runtime.client.exists(f"{site.root}/snapshot").version == snapshot.version
    assert FlagChange.objects.count() == audit_rows
    assert LogEntry.objects.count() == log_entries

    # "Save and continue editing" stays on the page; a real change is logged as before.
    response = admin_client.post(change_url(flag), {**data_from_page(page), "_continue": "1"})
    assert response.status_code == 302 and response.url == change_url(flag)
    response = admin_client.post(change_url(flag), data_from_page(page, note="after"))
    assert response.status_code == 302
    assert site.read("existing")[1] == 1
    assert FlagChange.objects.count() == audit_rows + 1
    assert LogEntry.objects.count() == log_entries + 1
    agree(site, "existing")


def test_a_conflict_comes_back_with_what_was_typed_and_what_zookeeper_holds(site, admin_client):
    flag = Flag.objects.get(name="existing")
    page = admin_client.get(change_url(flag))
    assert page.context["adminform"].form["zk_version_seen"].value() == 0
    # Another editor saves version 1 meanwhile.
    services.update_flag(
        "existing", lambda doc: {**doc, "note": "theirs", "everyone": False}, source="elsewhere"
    )

    typed = data_from_page(page, note="mine", value='{"limit":  4}', staff=True)
    response = admin_client.post(change_url(flag), typed)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert (form["note"].value(), form["value"].value()) == ("mine", '{"limit":  4}')
    assert form["staff"].value() is True
    [error] = form.non_field_errors()
    assert "changed by someone else" in error and "version 1" in error
    assert "ZooKeeper now holds: theirs" in form.errors["note"]
    assert "ZooKeeper now holds: Off for everyone" in form.errors["everyone"]
    assert 'ZooKeeper now holds: {"limit": 3}' in form.errors["value"]
    assert "percent" not in form.errors and "groups" not in form.errors  # the same in both
    assert form["zk_version_seen"].value() == "1"  # saving again replaces version 1
    assert site.read("existing")[0]["note"] == "theirs"
    agree(site, "existing")

    # The editor merges: keeps their own note, takes "everyone" from ZooKeeper.
    merged = data_from_page(response, everyone="False")
    response = admin_client.post(change_url(flag), merged)
    assert response.status_code == 302
    doc, version = site.read("existing")
    assert (doc["note"], doc["everyone"], doc["staff"], doc["value"], version) == (
        "mine",
        False,
        True,
        {"limit": 4},
        2,
    )
    agree(site, "existing")


def test_adding_a_name_zookeeper_has_comes_back_with_what_was_typed(site, admin_client):
    site.write("taken", note="written elsewhere", everyone=True)
    response = admin_client.post(ADD_URL, form_data("taken", note="mine", value="[1, 2]"))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert (form["note"].value(), form["value"].value()) == ("mine", "[1, 2]")
    assert any("already exists in ZooKeeper" in e for e in form.non_field_errors())
    assert "ZooKeeper now holds: written elsewhere" in form.errors["note"]
    html = response.content.decode()
    assert html.count("already exists in ZooKeeper") == 1  # said once
    assert not any("already exists" in m for m in messages_of(response))


def test_a_flag_too_large_for_zookeeper_comes_back_as_typed(site, admin_client):
    flag = Flag.objects.get(name="existing")
    page = admin_client.get(change_url(flag))
    note = "n" * HUGE
    response = admin_client.post(change_url(flag), data_from_page(page, note=note))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form["note"].value() == note
    [error] = form.non_field_errors()
    assert "over the" in error and "limit" in error and "kept below" in error
    assert site.read("existing")[1] == 0
    agree(site, "existing")


# -- the Environments page ----------------------------------------------------------------

ENVIRONMENT_INPUTS: list[tuple[str, str]] = [
    ("empty", ""),
    ("whitespace", "  \n\t "),
    ("oversized", json.dumps({"parents": {"x" * HUGE: None}})),
    ("invalid-json", '{"parents": {'),
    ("not-an-object", "[1, 2]"),
    ("null", "null"),
    ("non-string-parent", '{"parents": {"a": 1}}'),
    ("list-parent", '{"parents": {"a": ["b"]}}'),
    ("object-parent", '{"parents": {"a": {"b": null}}}'),
    ("non-string-host-target", '{"parents": {"a": null}, "hosts": {"web-1": 7}}'),
    ("list-host-target", '{"parents": {"a": null}, "hosts": {"web-1": ["a"]}}'),
    ("hosts-a-list", '{"parents": {}, "hosts": []}'),
    ("5000-digit-integer", '{"parents": {"a": ' + "9" * 5000 + "}}"),
    ("deep", "[" * 100_000 + "]" * 100_000),
    ("cycle", '{"parents": {"a": "b", "b": "a"}}'),
    ("unknown-key", '{"parent": {}}'),
    ("valid", json.dumps(ENVIRONMENTS)),
]
VERSIONS = ["", " ", "abc", "9" * 5000, "-1", "0"]


@pytest.mark.parametrize(
    ("label", "text"), ENVIRONMENT_INPUTS, ids=[label for label, _ in ENVIRONMENT_INPUTS]
)
def test_every_input_of_the_environments_page(site, admin_client, label, text):
    admin_client.raise_request_exception = True
    for version in VERSIONS:
        before = site.reader.environments()
        response = admin_client.post(ENVIRONMENTS_URL, {"document": text, "version_seen": version})
        assert response.status_code in (200, 302), (label, version)
        if response.status_code == 200:
            form = response.context["form"]
            assert form.errors, (label, version)
            assert form["document"].value() == text  # as typed
            assert site.reader.environments() == before
        after = site.reader.environments()
        assert after.error is None
        assert site.reader.snapshot().environments == after.document
        # Removing an environment a flag still overrides is allowed (check reports it).
        problems = [p for p in services.check().problems if "does not define" not in p[1]]
        assert problems == []


def test_an_empty_environments_box_means_no_environments(site, admin_client):
    response = admin_client.post(ENVIRONMENTS_URL, {"document": "", "version_seen": "0"})
    assert response.status_code == 302
    assert site.reader.environments().document == {"parents": {}, "hosts": {}}


def test_environments_page_names_this_host_and_says_nothing_changed(site, admin_client, settings):
    settings.ZKFLAGS = {**settings.ZKFLAGS, "HOSTNAME": "web-42"}
    page = admin_client.get(ENVIRONMENTS_URL)
    assert "web-42" in page.content.decode()
    audit_rows = FlagChange.objects.count()
    response = admin_client.post(
        ENVIRONMENTS_URL, {"document": json.dumps(ENVIRONMENTS), "version_seen": "0"}, follow=True
    )
    assert any(t.startswith("Nothing changed") for t in messages_of(response))
    assert site.reader.environments().version == 0
    assert FlagChange.objects.count() == audit_rows


def test_environments_conflict_comes_back_with_what_was_typed_and_what_zookeeper_holds(
    site, admin_client
):
    theirs = {**ENVIRONMENTS, "hosts": {"web-1": "staging"}}
    services.save_environments(theirs, expected_version=0, source="elsewhere")
    typed = json.dumps({**ENVIRONMENTS, "hosts": {"web-2": "production"}}, indent=1)
    response = admin_client.post(ENVIRONMENTS_URL, {"document": typed, "version_seen": "0"})
    assert response.status_code == 200
    form = response.context["form"]
    assert form["document"].value() == typed
    assert form["version_seen"].value() == "1"
    [error] = form.non_field_errors()
    assert "changed by someone else" in error
    html = response.content.decode()
    assert "web-1" in html and html.count("changed by someone else") == 1
    assert site.reader.environments().document == theirs
    # Saving again replaces version 1.
    response = admin_client.post(ENVIRONMENTS_URL, data_of(form))
    assert response.status_code == 302
    stored = site.reader.environments()
    assert (stored.document["hosts"], stored.version) == ({"web-2": "production"}, 2)


def data_of(form: Any) -> dict[str, str]:
    return {name: str(form[name].value() or "") for name in form.fields}


def test_the_change_page_shows_zookeeper_values_to_viewers_and_says_when_a_znode_is_invalid(
    site, admin_client, client
):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_flag"))
    client.force_login(viewer)
    services.update_flag("existing", lambda doc: {**doc, "note": "from zookeeper"}, source="t")
    Flag.objects.filter(name="existing").update(note="stale row")  # the row lags behind
    flag = Flag.objects.get(name="existing")
    html = client.get(change_url(flag)).content.decode()
    assert "from zookeeper" in html and "stale row" not in html
    assert 'name="_save"' not in html

    site.runtime.client.set(f"{site.root}/flags/existing", b'{"name": "existing", "percent": 500}')
    response = admin_client.get(change_url(flag))
    assert response.status_code == 200
    assert any("znode in ZooKeeper is invalid" in m for m in messages_of(response))
