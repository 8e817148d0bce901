"""manage.py zkflags export / import, and services.save_flags, against a real ZooKeeper:
round trips change nothing, one invalid flag changes nothing, a flag moved since the export
is refused, --prune deletes, every change is audited with source "import"."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from django_zkflags import services
from django_zkflags.exceptions import FlagConflict
from django_zkflags.models import Flag, FlagChange
from django_zkflags.rules import FlagRule
from django_zkflags.writer import BatchItem

from ..conftest import audit

pytestmark = pytest.mark.django_db


def command(*args: str) -> str:
    out = StringIO()
    call_command("zkflags", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def flags(zkflags):
    services.save_environments(
        {"parents": {"production": None, "canary": "production"}, "hosts": {}},
        expected_version=None,
        source="test",
    )
    for rule in (
        FlagRule("alpha", everyone=True, note="first"),
        FlagRule("beta", percent=25.0, environments={"canary": {"percent": 50.0}}),
        FlagRule("gamma", staff=True, value={"limit": 3}),
    ):
        services.save_flag(rule, expected_version=None, source="test")
    return zkflags


@pytest.mark.parametrize("name", ["flags.json", "flags.yaml", "tree"])
def test_export_then_import_changes_nothing(flags, tmp_path, name):
    path = tmp_path / name
    assert "Exported 3 flag(s)" in command("export", str(path))
    versions = {n: flags.read(n)[1] for n in ("alpha", "beta", "gamma")}
    audit_rows = FlagChange.objects.count()
    snapshot_version = flags.reader.snapshot().version
    out = command("import", str(path))
    assert "Nothing to change." in out and "unchanged: 3 flag(s)" in out
    assert {n: flags.read(n)[1] for n in ("alpha", "beta", "gamma")} == versions
    assert FlagChange.objects.count() == audit_rows
    assert flags.reader.snapshot().version == snapshot_version
    if name == "tree":
        assert sorted(p.name for p in (path / "flags").iterdir()) == [
            "alpha.json",
            "beta.json",
            "gamma.json",
        ]


def test_an_edited_file_is_applied_in_one_transaction_and_audited(flags, tmp_path):
    path = tmp_path / "flags.json"
    command("export", str(path))
    data = json.loads(path.read_text())
    data["flags"]["alpha"]["everyone"] = False
    data["flags"]["delta"] = {"everyone": None, "authenticated": True}
    data["environments"]["hosts"] = {"web-7": "canary"}
    path.write_text(json.dumps(data))
    snapshot_version = flags.reader.snapshot().version

    dry = command("import", str(path), "--dry-run")
    assert "change alpha" in dry and "everyone: true → false" in dry
    assert "create delta" in dry and "Dry run: nothing was changed." in dry
    assert flags.read("delta") == (None, None)

    out = command("import", str(path))
    assert "Imported: 3 change(s) in one transaction." in out
    assert flags.reader.snapshot().version == snapshot_version + 1  # one multi()
    assert flags.read("alpha")[0]["everyone"] is False
    assert flags.read("delta")[0]["authenticated"] is True
    assert flags.reader.environments().document["hosts"] == {"web-7": "canary"}
    assert [(c.action, c.source) for c in audit("alpha")][-1] == ("changed", "import")
    assert [(c.action, c.source) for c in audit("delta")] == [("created", "import")]
    assert Flag.objects.get(name="delta").authenticated is True
    assert "agree" in command("check")


def test_one_invalid_flag_changes_nothing(flags, tmp_path):
    path = tmp_path / "flags.json"
    command("export", str(path))
    data = json.loads(path.read_text())
    data["flags"]["alpha"]["everyone"] = False
    data["flags"]["broken"] = {"percent": 250}
    path.write_text(json.dumps(data))
    before = FlagChange.objects.count()
    with pytest.raises(CommandError, match="broken: Percent must be from 0 to 100"):
        command("import", str(path))
    assert flags.read("alpha")[0]["everyone"] is True
    assert flags.read("broken") == (None, None)
    assert FlagChange.objects.count() == before


def test_a_flag_changed_since_the_export_is_refused_unless_forced(flags, tmp_path):
    path = tmp_path / "flags.yaml"
    command("export", str(path))
    text = path.read_text().replace("note: first", "note: from the file")
    path.write_text(text)
    services.update_flag("alpha", lambda d: {**d, "note": "edited meanwhile"}, source="test")
    with pytest.raises(
        CommandError, match="alpha: changed in ZooKeeper since the file was exported"
    ):
        command("import", str(path))
    assert flags.read("alpha")[0]["note"] == "edited meanwhile"
    command("import", str(path), "--force")
    assert flags.read("alpha")[0]["note"] == "from the file"


def test_prune_deletes_what_the_file_does_not_have(flags, tmp_path):
    path = tmp_path / "tree"
    command("export", str(path))
    (path / "flags" / "gamma.json").unlink()
    assert "unchanged: 2" in command("import", str(path))  # without --prune: kept
    assert flags.read("gamma")[1] == 0
    out = command("import", str(path), "--prune")
    assert "delete gamma" in out
    assert flags.read("gamma") == (None, None)
    assert not Flag.objects.filter(name="gamma").exists()
    assert [(c.action, c.source) for c in audit("gamma")][-1] == ("deleted", "import")


def test_save_flags_is_all_or_nothing_from_python(flags):
    with pytest.raises(FlagConflict, match="'beta'"):
        services.save_flags(
            [
                BatchItem("epsilon", FlagRule("epsilon", everyone=True), None),
                BatchItem("beta", FlagRule("beta", percent=75.0), 99),
            ],
            source="test",
        )
    assert flags.read("epsilon") == (None, None)
    changes = services.save_flags(
        [
            BatchItem("epsilon", FlagRule("epsilon", everyone=True), None),
            BatchItem("beta", FlagRule("beta", percent=75.0), flags.read("beta")[1]),
        ],
        actor="deploy-bot",
        source="rollout",
    )
    assert [(c.flag_name, c.action, c.username) for c in changes] == [
        ("beta", "changed", "deploy-bot"),
        ("epsilon", "created", "deploy-bot"),
    ] or [(c.flag_name, c.action, c.username) for c in changes] == [
        ("epsilon", "created", "deploy-bot"),
        ("beta", "changed", "deploy-bot"),
    ]
    assert len({c.change_id for c in changes}) == 2
