"""Bad input from outside the app: garbage in the znodes, odd documents, oversized data.

Everything here crosses a real ZooKeeper: another kazoo client (``direct``, with the same
rights as a person with zkCli would have) writes straight into the app's znodes,
and this process's watcher must stay alive, keep serving the last good values of what it
cannot read, and say so in ``status()`` and the log.

The property tests run 25 examples each (every one crosses ZooKeeper); for a longer hunt:
``ZKFLAGS_EXAMPLES=500 pytest tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kazoo.client import KazooClient, KazooState

from django_zkflags import runtime
from django_zkflags.cache import store
from django_zkflags.exceptions import FlagTooLarge
from django_zkflags.reader import read_view
from django_zkflags.rules import FlagRule, InvalidFlag
from django_zkflags.snapshot import (
    MAGIC,
    SHARDS,
    Snapshot,
    encode_document,
    encode_entries,
    shard_of,
)

from ..conftest import wait_until

EXAMPLES = settings(
    max_examples=int(os.environ.get("ZKFLAGS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

LOGGER = "django_zkflags"


def _flags() -> dict[str, FlagRule]:
    return dict(store.base.flags)


@contextlib.contextmanager
def _publications() -> Iterator[list[int]]:
    """The zxids of the snapshots this process publishes meanwhile, in order."""
    published: list[int] = []
    publish = store.publish

    def recording(snapshot: Snapshot, changed: frozenset[str] | None = None) -> None:
        published.append(snapshot.zxid)
        publish(snapshot, changed)

    store.publish = recording  # type: ignore[method-assign]
    try:
        yield published
    finally:
        del store.publish


def _alive() -> None:
    status = runtime.status()
    assert status["watching"] is True, status
    assert status["connected"] is True, status


# A JSON-compatible value, nested.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["everyone", "users", "percent", "name", "target", "version"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _spec_snapshot(data: bytes) -> dict[str, Any] | None:
    """What the wire format (docs/design.md, snapshot.py) says is a snapshot, else None.

    ``ZKF1`` + zlib(JSON), or plain JSON; an object with ``format`` 1 and a ``flags``
    object. Anything else (including zero bytes) is not a snapshot.
    """
    body = data
    if data.startswith(MAGIC):
        try:
            body = zlib.decompress(data[len(MAGIC) :])
        except zlib.error:
            return None
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict) or payload.get("format") != 1:
        return None
    flags = payload.get("flags")
    return flags if isinstance(flags, dict) else None


def _set_and_wait(direct: KazooClient, path: str, data: bytes) -> Any:
    """Write ``data`` by hand and wait until this process's watcher has dealt with it."""
    stat = direct.set(path, data)
    wait_until(
        lambda: store.base.zxid == stat.mzxid or runtime.status()["last_error"] is not None,
        timeout=10,
    )
    return stat


@pytest.fixture
def seeded(zkflags: Any, direct: KazooClient) -> dict[str, Any]:
    zkflags.write("keep-on", everyone=True)
    zkflags.write("keep-rules", percent=30.0, users=[1, 2, 3], staff=True)
    zkflags.write("target", everyone=False)
    good = direct.get(f"{zkflags.root}/snapshot")[0]
    return {"good": good, "flags": _flags()}


def _restore(zkflags: Any, direct: KazooClient, good: bytes, expected: dict) -> Any:
    stat = direct.set(f"{zkflags.root}/snapshot", good)
    wait_until(lambda: store.base.zxid == stat.mzxid, timeout=10)
    # Cleared by the watch thread just after it publishes the good snapshot.
    wait_until(lambda: runtime.status()["last_error"] is None, timeout=10)
    assert _flags() == expected
    return stat


garbage = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=400).map(lambda b: MAGIC + b),
    st.binary(max_size=400).map(lambda b: MAGIC + zlib.compress(b)),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: MAGIC + zlib.compress(json.dumps(v).encode())),
    st.integers(1, 50_000).map(lambda n: b"[" * n),
    st.integers(4_400, 6_000).map(lambda n: b'{"format": 1, "flags": {}, "n": ' + b"7" * n + b"}"),
)


@given(data=garbage)
@example(data=b"")
@example(data=b"\x00")
@example(data=b"[" * 100_000)
@example(data=b'{"format": 2, "flags": {}}')
@example(data=b'{"format": 1, "flags": []}')
@example(data=MAGIC + zlib.compress(b'{"format": 1, "flags": {"x": ')[:-3])
@EXAMPLES
def test_garbage_in_the_snapshot_znode(zkflags, direct, seeded, caplog, data):
    caplog.clear()
    before = _flags()
    path = f"{zkflags.root}/snapshot"
    with caplog.at_level(logging.WARNING, logger=LOGGER), _publications() as published:
        stat = _set_and_wait(direct, path, data)
        entries = _spec_snapshot(data)
        if entries is None:
            # Not a snapshot: nothing changes, the watcher says why and carries on.
            assert _flags() == before
            assert store.base.zxid != stat.mzxid
            assert runtime.status()["last_error"], runtime.status()
            # Logged by the watch thread just after it sets last_error.
            wait_until(lambda: any(r.levelno >= logging.ERROR for r in caplog.records))
        else:
            assert store.base.zxid == stat.mzxid
            assert set(_flags()) <= set(entries) | set(before)
        _alive()
        # Barrier: the good snapshot written after it is served. Nothing was published
        # in between (no late publication of the garbage).
        restored = _restore(zkflags, direct, seeded["good"], seeded["flags"])
    assert published == ([] if entries is None else [stat.mzxid]) + [restored.mzxid]


@given(data=st.one_of(garbage, json_values.map(lambda v: json.dumps(v).encode())))
@example(data=b"")
@example(data=b"[" * 100_000)
@example(data=b'{"name": "target", "n": ' + b"7" * 5000 + b"}")
@example(data=b"{}")
@EXAMPLES
def test_garbage_in_a_flag_znode(zkflags, direct, seeded, data):
    """The watcher only reads the snapshot: a flag znode written by hand changes nothing
    a process serves; ``zkflags check`` (``TreeReader.flag_entries``) reports it, and the
    app can still write the other flags and overwrite this one."""
    path = f"{zkflags.root}/flags/target"
    before = _flags()
    direct.set(path, data)
    entries, errors = zkflags.reader.flag_entries()
    try:
        doc = json.loads(data.decode("utf-8"))
        valid = isinstance(doc, dict) and doc.get("name", "target") == "target"
        if valid:
            FlagRule.from_document(doc, name="target")
    except (ValueError, RecursionError):  # InvalidFlag is a ValueError
        valid = False
    if valid:
        assert "target" in entries and "target" not in errors
    else:
        assert "target" in errors and "target" not in entries
    for name in ("keep-on", "keep-rules"):
        assert entries[name]["version"] == before[name].version
    # The process still serves the last good rule, and writes of other flags go through.
    version = zkflags.write("keep-on", note=f"touched {len(data)}")
    assert _flags()["target"] == before["target"]
    assert _flags()["keep-rules"] == before["keep-rules"]
    _alive()
    # An editor can overwrite the bad znode from the version it reads.
    stored = zkflags.reader.flag("target")
    assert stored.version is not None
    if not valid:
        assert stored.rule is None and stored.error
    result = zkflags.put({"name": "target", "everyone": False}, stored.version)
    zkflags.wait_version("target", result.version)
    assert _flags()["keep-on"].version == version


rule_values = {
    "everyone": st.one_of(st.none(), st.booleans(), json_values),
    "percent": st.one_of(st.none(), st.floats(), st.integers(-10, 200), json_values),
    "superusers": st.one_of(st.booleans(), json_values),
    "staff": st.booleans(),
    "authenticated": st.booleans(),
    "users": st.one_of(st.lists(st.integers()), st.lists(json_values, max_size=3), json_values),
    "groups": st.lists(st.integers(0, 10**20), max_size=5),
    "note": st.one_of(st.text(max_size=30), json_values),
    "name": st.one_of(st.just("target"), st.text(max_size=5), json_values),
}
documents = st.one_of(
    st.fixed_dictionaries({}, optional=rule_values),
    json_values,
)


@given(doc=documents, other_key=st.text(max_size=8))
@EXAMPLES
def test_odd_documents_in_a_good_snapshot(zkflags, direct, seeded, caplog, doc, other_key):
    """Valid entries are applied; an invalid one keeps that flag's last good rule and is
    reported; neither affects the other flags."""
    caplog.clear()
    before = _flags()
    counter = time.monotonic_ns() % 10**9 + 10
    entries = {
        "keep-on": {"name": "keep-on", "everyone": True, "version": counter},
        "keep-rules": {**before["keep-rules"].to_document(), "version": counter},
        "target": {**doc, "version": counter} if isinstance(doc, dict) else doc,
        other_key: {"name": other_key, "everyone": True, "version": counter},
    }
    try:
        expected_target: FlagRule | None = FlagRule.from_document(entries["target"], name="target")
    except InvalidFlag:
        expected_target = None
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        stat = direct.set(f"{zkflags.root}/snapshot", encode_entries(entries))
        wait_until(lambda: store.base.zxid == stat.mzxid, timeout=10)
    flags = _flags()
    status = runtime.status()
    assert flags["keep-on"].version == counter and flags["keep-on"].everyone is True
    assert flags["keep-rules"].users == before["keep-rules"].users == {1, 2, 3}
    assert flags["keep-rules"].version == counter
    if expected_target is not None:
        assert flags["target"] == expected_target
        assert "target" not in status["invalid_flags"]
    else:
        assert flags["target"] == before["target"]  # the last good rule
        assert "target" in status["invalid_flags"]
        assert any("'target'" in r.getMessage() for r in caplog.records), caplog.records
    valid_key = re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", other_key) and other_key not in (".", "..")
    if other_key in ("keep-on", "keep-rules", "target"):
        pass
    elif valid_key:
        assert flags[other_key].everyone is True
    else:
        assert other_key not in flags
        assert other_key[:200] in status["invalid_flags"]
    _alive()
    _restore(zkflags, direct, seeded["good"], seeded["flags"])


def _is_valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) is not None
        and name not in (".", "..")
    )


def _is_id_list(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    )


truthy_non_lists = st.one_of(
    st.text(min_size=1, max_size=5),
    st.integers().filter(bool),
    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
    st.just(True),
)
id_lists = st.one_of(
    st.none(),
    st.lists(st.integers(-(10**20), 10**20), max_size=6),
    st.lists(
        st.one_of(st.integers(), st.booleans(), st.floats(), st.text(max_size=3), st.none()),
        min_size=1,
        max_size=4,
    ),
    truthy_non_lists,
)
names = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
    st.text(max_size=12),
    st.text(alphabet="ab.-/", min_size=1, max_size=4),
    st.integers(),
    st.none(),
    st.just("x" * 101),
)


@given(name=names, users=id_lists, groups=id_lists)
@example(name="..", users=[1], groups=None)
@example(name="a/b", users=[1], groups=None)
@example(name="ok", users=[True], groups=None)
@example(name="ok", users=[1.0], groups=None)
@example(name="ok", users="12", groups=None)
@example(name="ok", users=None, groups={"1": 1})
@EXAMPLES
def test_writer_refuses_invalid_names_and_ids_before_zookeeper(
    zkflags, direct, seeded, name, users, groups
):
    """A document is validated (``FlagRule.from_document``) before the writer sends
    anything: an invalid one changes nothing in ZooKeeper."""
    snapshot_path = f"{zkflags.root}/snapshot"
    flags_path = f"{zkflags.root}/flags"
    before_snapshot = direct.exists(snapshot_path)
    before_children = sorted(direct.get_children(flags_path))
    existing = direct.exists(f"{flags_path}/{name}") if _is_valid_name(name) else None
    doc = {"name": name, "everyone": None, "users": users, "groups": groups}
    valid = _is_valid_name(name) and _is_id_list(users) and _is_id_list(groups)
    if not valid:
        with pytest.raises(InvalidFlag):
            zkflags.put(doc, existing.version if existing else None)
        assert direct.exists(snapshot_path).mzxid == before_snapshot.mzxid
        assert sorted(direct.get_children(flags_path)) == before_children
        if existing is not None:
            assert direct.exists(f"{flags_path}/{name}").mzxid == existing.mzxid
        return
    result = zkflags.put(doc, existing.version if existing else None)
    stored = json.loads(direct.get(f"{flags_path}/{name}")[0])
    assert stored["users"] == sorted(set(users or []))
    assert stored["groups"] == sorted(set(groups or []))
    zkflags.wait_version(name, result.version)
    assert store.base.flags[name].users == frozenset(users or [])


# -- oversized data ---------------------------------------------------------------------------


def _states(client: KazooClient) -> list[str]:
    seen: list[str] = []
    client.add_listener(seen.append)
    return seen


def test_a_write_over_the_size_limit_is_refused_in_the_client(zkflags, direct):
    zkflags.write("small", everyone=True)
    writer = zkflags.writer
    client = runtime.get_runtime().client
    states = _states(client)
    snapshot_before = direct.exists(f"{zkflags.root}/snapshot")
    users = list(range(10**6, 10**6 + 150_000))  # about 1.2 MB of JSON
    assert len(encode_document({"users": users})) > writer.max_bytes == 1_000_000
    started = time.monotonic()
    with pytest.raises(FlagTooLarge, match="over the 1000000-byte limit"):
        writer.write_flag(FlagRule("huge", users=users), None)
    elapsed = time.monotonic() - started
    assert direct.exists(f"{zkflags.root}/flags/huge") is None
    assert direct.exists(f"{zkflags.root}/snapshot").mzxid == snapshot_before.mzxid
    # The same for an update of an existing flag.
    with pytest.raises(FlagTooLarge):
        writer.write_flag(FlagRule("small", users=users), 0)
    assert json.loads(direct.get(f"{zkflags.root}/flags/small")[0])["users"] == []
    # Barrier: a later change through the same client is seen; a connection dropped by
    # the server would have shown as SUSPENDED before it.
    zkflags.write("small", note="sentinel")
    assert states == [] and client.state == KazooState.CONNECTED
    # A large write under the limit goes through (zlib keeps the snapshot small).
    half = list(range(10**6, 10**6 + 90_000))
    result = writer.write_flag(FlagRule("big", users=half), None)
    zkflags.wait_version("big", result.version)
    assert len(store.base.flags["big"].users) == 90_000
    assert states == []
    print(f"\noversize write refused in {elapsed * 1000:.0f} ms; connection stayed up")


def _big_plain_snapshot(target_bytes: int) -> tuple[bytes, int]:
    note = "n" * 150
    entries: dict[str, Any] = {}
    data = b""
    count = 0
    while True:
        batch = {
            f"f{count + i:05d}": {"name": f"f{count + i:05d}", "everyone": True, "note": note}
            for i in range(500)
        }
        trial = dict(entries, **batch)
        candidate = json.dumps({"format": 1, "flags": trial}).encode()
        if len(candidate) > target_bytes:
            break
        entries, data, count = trial, candidate, count + 500
    return data, len(entries)


def test_a_one_megabyte_snapshot_written_by_hand(zkflags, direct, caplog):
    zkflags.write("keep-on", everyone=True)
    path = f"{zkflags.root}/snapshot"
    data, count = _big_plain_snapshot(1_000_000)  # plain JSON, just under jute.maxbuffer
    assert 900_000 < len(data) < 1_000_000
    started = time.monotonic()
    stat = direct.set(path, data)
    wait_until(lambda: store.base.zxid == stat.mzxid, timeout=20)
    applied = time.monotonic() - started
    assert len(store.base.flags) == count
    _alive()
    # The app's next write re-reads it and writes it back compressed.
    result = zkflags.put({"name": "after", "everyone": True}, None)
    zkflags.wait_version("after", result.version)
    compressed = direct.exists(path).dataLength
    assert compressed < len(data) // 10
    assert len(store.base.flags) == count + 1
    # Garbage of the same size (a deep JSON nesting, then random-looking bytes) is refused.
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        for junk in (b"[" * 1_000_000, bytes(range(256)) * 3_900):
            caplog.clear()
            before = _flags()
            stat = _set_and_wait(direct, path, junk)
            assert store.base.zxid != stat.mzxid
            assert _flags() == before
            assert runtime.status()["last_error"]
            wait_until(lambda: caplog.records)  # logged just after last_error is set
            _alive()
            # the app repairs it: a save rebuilds the snapshot from the flag znodes (the
            # second time round the flag itself does not change: the snapshot still does)
            result = zkflags.put({"name": "after", "everyone": False}, result.version)
            zkflags.wait_version("after", result.version)
            # Cleared by the watch thread just after it publishes the good snapshot.
            wait_until(lambda: runtime.status()["last_error"] is None, timeout=10)
    print(f"\n{len(data)}-byte hand-written snapshot ({count} flags) applied in {applied:.2f} s")


@pytest.mark.django_db
def test_two_thousand_flag_znodes(zkflags, direct):
    zkflags.write("first", everyone=True)
    flags_path = f"{zkflags.root}/flags"
    count = 2_000
    started = time.monotonic()
    pending = [
        direct.create_async(
            f"{flags_path}/n{i:04d}", encode_document({"name": f"n{i:04d}", "everyone": i % 2 == 0})
        )
        for i in range(count)
    ]
    for result in pending:
        result.get(timeout=30)
    created = time.monotonic() - started
    direct.set(f"{flags_path}/n0007", b"\xff garbage")
    writer = zkflags.writer
    started = time.monotonic()
    entries, errors = zkflags.reader.flag_entries()
    scanned = time.monotonic() - started
    assert len(entries) == count  # 1,999 hand-made + "first"
    assert set(errors) == {"n0007"}
    # `zkflags check` completes and reports every flag it cannot match.
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"problem\(s\)"):
        call_command("zkflags", "check", stdout=out)
    report = out.getvalue()
    assert "n0007: flag znode is invalid" in report
    assert "n1999: in ZooKeeper but has no admin row" in report
    # `repair` rebuilds the snapshot from the tree; the watcher applies it.
    started = time.monotonic()
    assert writer.rebuild_snapshot() == {"n0007": errors["n0007"]}
    wait_until(lambda: len(store.base.flags) == count, timeout=20)
    rebuilt = time.monotonic() - started
    assert store.base.flags["n0002"].everyone is True
    assert store.base.flags["n0003"].everyone is False
    _alive()
    print(
        f"\n{count} flag znodes: created in {created:.2f} s, scanned in {scanned:.2f} s, "
        f"snapshot rebuilt and applied in {rebuilt:.2f} s "
        f"({direct.exists(zkflags.root + '/snapshot').dataLength} bytes)"
    )


def _big_documents(names: list[str]) -> Iterator[tuple[str, bytes]]:
    """Flag documents just under one write each, about 370 KB each once compressed."""
    rng = random.Random(4)
    for name in names:
        users = [rng.randrange(10**8, 10**9) for _ in range(80_000)]
        data = encode_document({"name": name, "everyone": None, "users": users})
        assert len(data) < 1_000_000
        yield name, data


def _names_in(shard: int | None, count: int) -> list[str]:
    """``count`` flag names in one shard (``shard``), or each in a shard of its own."""
    names: list[str] = []
    taken: set[int] = set()
    for i in range(100_000):
        name = f"big{i}"
        k = shard_of(name, SHARDS)
        if (shard is None and k not in taken) or k == shard:
            names.append(name)
            taken.add(k)
        if len(names) == count:
            return names
    raise AssertionError("not enough names")


def test_rebuilding_an_oversized_snapshot_is_refused_in_the_client(zkflags, direct):
    """Flag znodes written by hand can add up to more than one shard can carry: `repair`
    must refuse that cleanly, not send it (ZooKeeper would drop the connection)."""
    zkflags.write("small", everyone=True)
    same_shard = _names_in(shard_of("big0", SHARDS), 4)
    for name, data in _big_documents(same_shard):  # together far over one write
        direct.create(f"{zkflags.root}/flags/{name}", data)
    client = runtime.get_runtime().client
    states = _states(client)
    before = direct.exists(f"{zkflags.root}/snapshot")
    with pytest.raises(FlagTooLarge):
        zkflags.writer.rebuild_snapshot()
    assert direct.exists(f"{zkflags.root}/snapshot").mzxid == before.mzxid
    # Barrier: a later change through the same client is seen; a connection dropped by
    # the server would have shown as SUSPENDED before it.
    zkflags.write("small", note="sentinel")
    assert states == [] and client.connected
    assert store.base.flags["small"].everyone is True
    _alive()


def test_a_view_larger_than_one_write_is_rebuilt_in_steps(zkflags, direct):
    """Four flags of about 370 KB each (compressed), in four shards: more than one
    ``multi()`` can carry, so `repair` writes the shards in steps and the head last; every
    process then serves all of them, and later writes go on as usual."""
    zkflags.write("small", everyone=True)
    names = _names_in(None, 4)
    for name, data in _big_documents(names):
        direct.create(f"{zkflags.root}/flags/{name}", data)
    before = direct.exists(f"{zkflags.root}/snapshot")
    assert zkflags.writer.rebuild_snapshot() == {}
    assert direct.exists(f"{zkflags.root}/snapshot").mzxid > before.mzxid
    assert sorted(read_view(direct, zkflags.root)["flags"]) == sorted([*names, "small"])
    wait_until(lambda: all(name in store.base.flags for name in names), what="the big flags")
    assert len(store.base.flags[names[0]].users) > 79_000  # random ids, a few the same
    zkflags.wait_version("small", zkflags.write("small", everyone=False))  # one shard: fits
    assert store.base.flags["small"].everyone is False
    _alive()
