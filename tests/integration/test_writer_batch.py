"""FlagWriter.write_flags: several flags in one multi(), all or nothing, against a real
ZooKeeper."""

from __future__ import annotations

import pytest

from django_zkflags.cache import store
from django_zkflags.exceptions import FlagConflict, FlagTooLarge
from django_zkflags.rules import FlagRule
from django_zkflags.signals import flag_changed
from django_zkflags.snapshot import decode_document
from django_zkflags.writer import BatchItem, ChangeNote

from ..conftest import wait_until


def note() -> ChangeNote:
    return ChangeNote(id="b" * 32, source="test", username="tester")


def test_creates_changes_and_deletes_land_together(zkflags):
    zkflags.write("kept", everyone=True)
    zkflags.write("changed", percent=10.0)
    zkflags.write("deleted", staff=True)
    seen: list[frozenset[str]] = []

    def on_change(sender, names, snapshot, **kwargs):
        seen.append(names)

    flag_changed.connect(on_change)
    try:
        results = zkflags.writer.write_flags(
            [
                BatchItem("kept", FlagRule("kept", everyone=True), 0),
                BatchItem("changed", FlagRule("changed", percent=20.0), 0),
                BatchItem("deleted", None, 0),
                BatchItem("born", FlagRule("born", authenticated=True), None),
            ],
            note(),
        )
        wait_until(lambda: "born" in store.base.flags and "deleted" not in store.base.flags)
    finally:
        flag_changed.disconnect(on_change)
    assert [(r.name, r.changed, r.version, r.action) for r in results] == [
        ("kept", False, 0, "changed"),
        ("changed", True, 1, "changed"),
        ("deleted", True, None, "deleted"),
        ("born", True, 0, "created"),
    ]
    # One snapshot change carried all three (the process never saw half of the batch).
    assert seen == [frozenset({"changed", "deleted", "born"})]
    assert zkflags.read("kept")[1] == 0  # unchanged: no new version
    # One change record covers the batch.
    path = results[1].record_path
    assert path is not None and all(r.record_path == path for r in results if r.changed)
    record = decode_document(zkflags.runtime.client.get(path)[0])
    assert record["name"] == "@batch"
    assert [c["name"] for c in record["changes"]] == ["changed", "deleted", "born"]


def test_one_moved_flag_means_nothing_is_written(zkflags):
    zkflags.write("a", percent=1.0)
    zkflags.write("b", percent=1.0)
    zkflags.write("b", percent=2.0)  # someone moved b to version 1
    snapshot_version = zkflags.reader.snapshot().version
    with pytest.raises(FlagConflict, match="'b'"):
        zkflags.writer.write_flags(
            [
                BatchItem("a", FlagRule("a", percent=50.0), 0),
                BatchItem("b", FlagRule("b", percent=50.0), 0),
                BatchItem("c", FlagRule("c", everyone=True), None),
            ]
        )
    assert zkflags.read("a")[0]["percent"] == 1.0
    assert zkflags.read("c") == (None, None)
    assert zkflags.reader.snapshot().version == snapshot_version
    with pytest.raises(FlagConflict, match="2 flags moved"):
        zkflags.writer.write_flags(
            [
                BatchItem("a", FlagRule("a", percent=50.0), 7),
                BatchItem("b", FlagRule("b", percent=50.0), 0),
            ]
        )


def test_a_batch_larger_than_one_write_is_refused_whole(zkflags, settings):
    big = [BatchItem(f"big-{i}", FlagRule(f"big-{i}", note="x" * 2000), None) for i in range(600)]
    with pytest.raises(FlagTooLarge):
        zkflags.writer.write_flags(big)
    assert zkflags.reader.flag_names() == []


def test_the_environments_document_goes_in_the_same_transaction(zkflags):
    zkflags.write("a", percent=1.0)
    document = {"parents": {"staging": None}, "hosts": {}}
    results = zkflags.writer.write_flags(
        [BatchItem("a", FlagRule("a", environments={"staging": {"everyone": True}}), 0)],
        environments=(document, None),
    )
    assert [(r.name, r.version) for r in results] == [("a", 1), ("@environments", 0)]
    stored = zkflags.reader.environments()
    assert (stored.document, stored.version) == (document, 0)
    assert zkflags.reader.snapshot().environments == document
    # A moved environments document refuses the whole batch.
    with pytest.raises(FlagConflict, match="environments"):
        zkflags.writer.write_flags(
            [BatchItem("a", FlagRule("a", percent=9.0), 1)], environments=(document, None)
        )
    assert zkflags.read("a")[1] == 1


def test_an_also_op_applies_with_the_change_or_nothing_does(zkflags):
    from django_zkflags.writer import AlsoOp, AlsoOpFailed

    client = zkflags.runtime.client
    ticket = f"{zkflags.root}/ticket"
    client.create(ticket, b"run once")
    zkflags.write("scheduled", everyone=False)
    with pytest.raises(AlsoOpFailed, match="ticket"):
        zkflags.writer.write_flag(
            FlagRule("scheduled", everyone=True), 0, also=[AlsoOp(ticket, expected_version=5)]
        )
    assert zkflags.read("scheduled")[0]["everyone"] is False
    assert client.exists(ticket) is not None
    result = zkflags.writer.write_flag(
        FlagRule("scheduled", everyone=True), 0, also=[AlsoOp(ticket, expected_version=0)]
    )
    assert result.version == 1
    assert client.exists(ticket) is None  # consumed in the same transaction
    # A second run finds the ticket gone: refused, the flag untouched.
    with pytest.raises(AlsoOpFailed):
        zkflags.writer.write_flag(
            FlagRule("scheduled", everyone=False), 1, also=[AlsoOp(ticket, expected_version=0)]
        )
    assert zkflags.read("scheduled")[1] == 1
