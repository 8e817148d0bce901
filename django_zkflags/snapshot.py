"""The materialized view: every flag in one znode, and its in-memory form.

Wire format of the snapshot znode (``<root>/snapshot``)::

    b"ZKF1" + zlib(JSON {"format": 1,
                        "flags": {name: flag document + {"version": znode version}},
                        "environments": the environments document (left out when empty)})

Plain JSON (starting with ``{``) is accepted too, so a hand-written snapshot can be read.
Decoding is tolerant per flag: one bad entry is reported and skipped (the caller keeps its
last good value) without affecting the others.

Decoding is bounded: a snapshot larger than ``max_bytes`` (``ZKFLAGS["MAX_SNAPSHOT_BYTES"]``,
64 MiB by default) once inflated is refused as corrupt without being inflated further, so
a small hand-written znode cannot make every process of the fleet allocate gigabytes (zlib
inflates up to about 1,000 times: a 1 MB znode of compressed whitespace is 1 GB). A
snapshot of 100,000 small flags is about 8 to 18 MB of JSON.

Format 2, the sharded view (what writers write; format 1 is still read, and converted by
the next write). The snapshot znode is a small *head*; the flags are spread over
``SHARDS`` shard znodes ``<root>/shards/<k>`` by a stable hash of their name
(:func:`shard_of`)::

    head  = b"ZKF1" + zlib(JSON {"format": 2, "epoch": "<hex>", "shards": 1024,
                                 "versions": [znode version of shard k, or -1: none],
                                 "flags": how many, "environments": {...}})
    shard = b"ZKF1" + zlib(JSON {"format": 2, "shard": k, "flags": {name: entry}})

A write changes the flag znode, the flag's shard and the head in one ``multi()``; every
process watches only the head and reads the shards whose version moved, so that a change
costs a process what changed, not the number of flags. ``epoch`` is minted when a writer
builds the view from scratch (no head, or a head or shard it could not read): a process
whose applied shards belong to another epoch reads them all again, so that a shard version
is never mistaken for one of another incarnation of the tree.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from .rules import (
    CYCLIC_PREREQUISITE,
    MAX_PREREQUISITES,
    MISSING_PREREQUISITE,
    TOO_MANY_PREREQUISITES,
    FlagRule,
    InvalidFlag,
    LinkedRule,
    environment_chain,
    prerequisite_path,
    strongly_connected,
    unavailable,
)

MAGIC = b"ZKF1"
FORMAT = 1
#: The sharded view: a head znode and shard znodes.
FORMAT_SHARDED = 2
#: How many shards a new view is spread over: 100,000 flags make shards of about 100 flags
#: (1.2 KB compressed), and a change costs a process one of them (0.7 ms to decode and
#: compile at 100,000 flags, against 2.3 ms with 256 shards: docs/design.md).
SHARDS = 1024
#: The disk copy of a sharded view: the head and every shard's bytes, as read.
VIEW_FILE_MAGIC = b"ZKS2"
#: The default of ``ZKFLAGS["MAX_SNAPSHOT_BYTES"]``: the largest snapshot, as JSON, that is
#: decoded.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


class CorruptSnapshot(ValueError):
    """The snapshot znode does not hold a readable snapshot."""


def encode_document(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_document(data: bytes | None) -> Any:
    if data is None:
        raise InvalidFlag("empty znode")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, too deep, int too long
        raise InvalidFlag(f"not valid JSON: {exc}") from None


def encode_entries(
    entries: Mapping[str, Mapping[str, Any]], environments: Mapping[str, Any] | None = None
) -> bytes:
    """Encode raw flag entries (documents with their version), and the environments
    document if there is one, as a snapshot znode."""
    return encode_snapshot(entries, environments)[0]


def encode_snapshot(
    entries: Mapping[str, Mapping[str, Any]], environments: Mapping[str, Any] | None = None
) -> tuple[bytes, int]:
    """:func:`encode_entries`, and the size of the snapshot as JSON (what a reader inflates
    it to, and checks against its ``max_bytes``)."""
    payload: dict[str, Any] = {"format": FORMAT, "flags": dict(entries)}
    if environments:
        payload["environments"] = dict(environments)
    document = encode_document(payload)
    return MAGIC + zlib.compress(document, 6), len(document)


def _too_large(max_bytes: int) -> CorruptSnapshot:
    return CorruptSnapshot(
        f"snapshot is larger than {max_bytes} bytes as JSON (ZKFLAGS['MAX_SNAPSHOT_BYTES']); "
        "it was not decoded"
    )


#: Inflated bytes looked at per step while measuring a compressed snapshot.
_INFLATE_STEP = 1024 * 1024
#: Inflated bytes kept while measuring: a snapshot up to this size (about 20,000 small
#: flags) is inflated once; a larger one is measured with each step dropped, then inflated
#: again, so that a bomb never costs more memory than this.
_INFLATE_KEEP = 4 * 1024 * 1024


def inflate(compressed: bytes, max_bytes: int) -> bytes:
    """zlib-decompress ``compressed`` if it inflates to at most ``max_bytes``.

    Raises CorruptSnapshot when it would inflate past that, or is truncated or not zlib.
    The size is measured a step at a time, so that a bomb costs the CPU of inflating
    ``max_bytes`` but not the memory.
    """
    inflater = zlib.decompressobj()
    pending, size = compressed, 0
    kept: list[bytes] | None = []
    try:
        while not inflater.eof:
            step = inflater.decompress(pending, _INFLATE_STEP)
            size += len(step)
            if size > max_bytes:
                raise _too_large(max_bytes)
            if kept is not None:
                kept.append(step)
                if size > _INFLATE_KEEP:
                    kept = None  # measure only from here on
            pending = inflater.unconsumed_tail
            if not pending and len(step) < _INFLATE_STEP and not inflater.eof:
                raise CorruptSnapshot(
                    "snapshot is not readable: incomplete or truncated zlib stream"
                )
        return b"".join(kept) if kept is not None else zlib.decompress(compressed)
    except zlib.error as exc:
        raise CorruptSnapshot(f"snapshot is not readable: {exc}") from None


def _decode_object(data: bytes, max_bytes: int, what: str = "snapshot") -> dict[str, Any]:
    """The JSON object of a ``ZKF1`` (zlib) or plain JSON znode, bounded by ``max_bytes``."""
    if not data:
        # The app never writes zero bytes (an empty view is still ZKF1 + zlib): this is
        # a node created by hand, not "no flags".
        raise CorruptSnapshot(f"{what} znode is empty")
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    if data.startswith(MAGIC):
        data = inflate(data[len(MAGIC) :], max_bytes)
    try:
        payload = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CorruptSnapshot(f"{what} is not readable: {exc}") from None
    if not isinstance(payload, dict):
        raise CorruptSnapshot(f"{what} has no 'flags' object")
    return payload


def _environments_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    environments = payload.get("environments") or {}
    if not isinstance(environments, dict):
        raise CorruptSnapshot("snapshot 'environments' is not an object")
    return environments


def decode_payload(data: bytes | None, max_bytes: int = MAX_SNAPSHOT_BYTES) -> dict[str, Any]:
    """Decode a format-1 snapshot znode: ``{"flags": {...}, "environments": {...}}``,
    refusing one larger than ``max_bytes`` as JSON.

    Raises CorruptSnapshot, for the head of a sharded view too (:func:`decode_view` reads
    both).
    """
    if data is None:
        return {"flags": {}, "environments": {}}
    return _whole_view(_decode_object(data, max_bytes))


def _whole_view(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("format") == FORMAT_SHARDED:
        raise CorruptSnapshot("snapshot is the head of a sharded view (format 2)")
    if not isinstance(payload.get("flags"), dict):
        raise CorruptSnapshot("snapshot has no 'flags' object")
    if payload.get("format") != FORMAT:
        raise CorruptSnapshot(f"snapshot format {payload.get('format')!r} is not supported")
    return {"flags": payload["flags"], "environments": _environments_of(payload)}


@dataclass(frozen=True)
class Head:
    """The head of a sharded view: its epoch, and which shards exist at which version."""

    epoch: str
    shards: int
    versions: Mapping[int, int]
    environments: dict[str, Any]
    count: int = 0


def decode_view(data: bytes | None, max_bytes: int = MAX_SNAPSHOT_BYTES) -> Head | dict[str, Any]:
    """Decode the snapshot znode: a :class:`Head` (format 2), or a whole format-1 view as
    :func:`decode_payload` returns it. Raises CorruptSnapshot."""
    if data is None:
        return {"flags": {}, "environments": {}}
    payload = _decode_object(data, max_bytes)
    if payload.get("format") != FORMAT_SHARDED:
        return _whole_view(payload)
    shards, versions, epoch = payload.get("shards"), payload.get("versions"), payload.get("epoch")
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 65536:
        raise CorruptSnapshot(f"snapshot head has no valid 'shards' count: {shards!r}")
    if not isinstance(epoch, str) or not epoch or not isinstance(versions, list):
        raise CorruptSnapshot("snapshot head has no 'epoch' or no 'versions' list")
    # A list, one version per shard (-1: no such shard): a head is read on every change.
    if len(versions) != shards or set(map(type, versions)) != {int} or min(versions) < -1:
        raise CorruptSnapshot(f"snapshot head's 'versions' is not {shards} versions")
    parsed = {k: version for k, version in enumerate(versions) if version >= 0}
    count = payload.get("flags")
    return Head(
        epoch,
        shards,
        parsed,
        _environments_of(payload),
        count if isinstance(count, int) and not isinstance(count, bool) else 0,
    )


def encode_head(
    epoch: str,
    shards: int,
    versions: Mapping[int, int],
    environments: Mapping[str, Any] | None,
    count: int,
) -> bytes:
    payload: dict[str, Any] = {
        "format": FORMAT_SHARDED,
        "epoch": epoch,
        "shards": shards,
        "versions": [versions.get(k, -1) for k in range(shards)],
        "flags": count,
    }
    if environments:
        payload["environments"] = dict(environments)
    return MAGIC + zlib.compress(encode_document(payload), 6)


def shard_of(name: str, shards: int) -> int:
    """The shard flag ``name`` lives in: the same in every process, host and release."""
    return zlib.crc32(name.encode()) % shards


def encode_shard(index: int, entries: Mapping[str, Mapping[str, Any]]) -> tuple[bytes, int]:
    """A shard znode's bytes, and its size as JSON (what a reader inflates it to)."""
    document = encode_document({"format": FORMAT_SHARDED, "shard": index, "flags": dict(entries)})
    return MAGIC + zlib.compress(document, 6), len(document)


def decode_shard(
    data: bytes | None,
    index: int,
    shards: int,
    max_bytes: int,
    known: AbstractSet[str] = frozenset(),
) -> dict[str, Any]:
    """The entries of shard ``index`` (of ``shards``).

    Raises CorruptSnapshot when the znode is missing, is not that shard, or files a flag
    under the wrong shard (a hand edit: no name may be in two shards). Names in ``known``
    (found in this shard before) are not hashed again."""
    if data is None:
        raise CorruptSnapshot(f"shard {index} is missing")
    payload = _decode_object(data, max_bytes, what=f"shard {index}")
    flags = payload.get("flags")
    if payload.get("format") != FORMAT_SHARDED or payload.get("shard") != index:
        raise CorruptSnapshot(f"shard {index} does not hold shard {index} of a sharded view")
    if not isinstance(flags, dict):
        raise CorruptSnapshot(f"shard {index} has no 'flags' object")
    strays = [name for name in flags if name not in known and shard_of(str(name), shards) != index]
    if strays:
        raise CorruptSnapshot(f"shard {index} holds flags of other shards: {strays[:3]!r}")
    return flags


def encode_view_file(head: bytes, shards: Mapping[int, bytes]) -> bytes:
    """The disk copy of a sharded view: the head's bytes, then each shard's as read
    (concatenated, not re-encoded: saving costs the process no JSON and no zlib)."""
    parts = [VIEW_FILE_MAGIC, len(head).to_bytes(4, "big"), head]
    for index in sorted(shards):
        data = shards[index]
        parts += [index.to_bytes(4, "big"), len(data).to_bytes(4, "big"), data]
    return b"".join(parts)


def decode_file_payload(data: bytes, max_bytes: int = MAX_SNAPSHOT_BYTES) -> dict[str, Any]:
    """A disk copy (either format) as ``{"flags": ..., "environments": ...}``."""
    if not data.startswith(VIEW_FILE_MAGIC):
        return decode_payload(data, max_bytes)
    head_data, shards = decode_view_file(data)
    head = decode_view(head_data, max_bytes)
    if not isinstance(head, Head):
        raise CorruptSnapshot("the file's head is not a sharded view's")
    flags: dict[str, Any] = {}
    for k, shard in sorted(shards.items()):
        flags.update(decode_shard(shard, k, head.shards, max_bytes))
    return {"flags": flags, "environments": head.environments}


def decode_view_file(data: bytes) -> tuple[bytes, dict[int, bytes]]:
    """The head's and the shards' bytes of :func:`encode_view_file`. Raises
    CorruptSnapshot."""
    if data[:4] != VIEW_FILE_MAGIC or len(data) < 8:
        raise CorruptSnapshot("not a sharded view file")
    size = int.from_bytes(data[4:8], "big")
    head, at = data[8 : 8 + size], 8 + size
    if len(head) != size:
        raise CorruptSnapshot("sharded view file is truncated")
    shards: dict[int, bytes] = {}
    while at < len(data):
        index = int.from_bytes(data[at : at + 4], "big")
        size = int.from_bytes(data[at + 4 : at + 8], "big")
        if at + 8 + size > len(data):
            raise CorruptSnapshot("sharded view file is truncated")
        shards[index] = data[at + 8 : at + 8 + size]
        at += 8 + size
    return head, shards


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of every flag, as one process sees it at one moment.

    ``flags`` must not be mutated: the cache swaps whole snapshots.
    """

    flags: Mapping[str, FlagRule]
    zxid: int = 0
    source: str = "empty"  # "zookeeper", "file", "empty"
    errors: Mapping[str, str] = field(default_factory=dict)
    default_active: bool = False
    environment: str | None = None  # the environment this process resolved flags for
    chain: tuple[str, ...] = ()  # that environment and its ancestors, root first
    #: The environments document the snapshot carried (what the admin shows while
    #: ZooKeeper is away).
    environments: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> FlagRule | None:
        return self.flags.get(name)

    def __len__(self) -> int:
        return len(self.flags)

    def __contains__(self, name: object) -> bool:
        return name in self.flags


EMPTY = Snapshot({})


def compile_entries(
    entries: Mapping[str, Any],
    previous: Mapping[str, FlagRule] | None = None,
    chain: Sequence[str] = (),
    *,
    link: bool = True,
) -> tuple[dict[str, FlagRule], dict[str, str]]:
    """Compile raw entries into rules, resolved for the environment ``chain`` (root first).

    Entries that still describe the previous rule (same version and fields: see
    :meth:`FlagRule.describes`) reuse it (cheap updates with many flags); the caller passes
    no ``previous`` when the chain changed. A bad entry keeps the previous rule for that
    name, if there was one, and is reported in the returned errors.

    Flags with prerequisites are then linked to their prerequisites' rules
    (:func:`link_prerequisites`); one whose prerequisite is missing or in a cycle with it
    is off, and reported in the errors too (``link=False`` leaves that to the caller, which
    compiles part of a view).
    """
    previous = previous or {}
    flags: dict[str, FlagRule] = {}
    errors: dict[str, str] = {}
    dependents: list[str] = []
    for name, entry in entries.items():
        old = previous.get(name)
        if old is not None and isinstance(entry, dict) and old.describes(entry):
            flags[name] = old
            if old.requires:
                dependents.append(name)
            continue
        try:
            rule = FlagRule.from_document(entry, name=name)
            flags[name] = rule.for_environment(chain) if rule.environments else rule
            if rule.requires:
                dependents.append(name)
        except InvalidFlag as exc:
            errors[str(name)[:200]] = str(exc)
            if old is not None:
                flags[name] = old
                if old.requires:
                    dependents.append(name)
    if dependents and link:
        for name, why in link_prerequisites(flags, dependents).items():
            errors[name] = f"{errors[name]}; {why}" if name in errors else why
    return flags, errors


def link_prerequisites(
    flags: dict[str, FlagRule], dependents: Sequence[str] | None = None
) -> dict[str, str]:
    """Link each rule of ``flags`` that has prerequisites (``dependents``, the names of
    those rules: all of them when None) to the rules of its prerequisites in ``flags``, in
    place (:class:`~django_zkflags.rules.LinkedRule`): prerequisites first, so that a chain
    is linked to its final rules. A linked rule whose prerequisites are the very same rules
    as before is kept as it is.

    A prerequisite that is not in ``flags``, in a cycle with the flag, or past
    :data:`~django_zkflags.rules.MAX_PREREQUISITES` is linked as an off rule
    (:func:`~django_zkflags.rules.unavailable`): evaluating never follows a cycle. Returns
    what is wrong, by flag name (those flags are off for everyone). No recursion: any
    graph, of any depth, is linked in one pass over its components."""
    if dependents is None:
        dependents = [name for name, rule in flags.items() if rule.requires]
    graph = {name: _unlinked(flags[name]).requires for name in dependents}
    errors: dict[str, str] = {}
    for component in strongly_connected(graph):
        cyclic = len(component) > 1 or component[0] in graph[component[0]]
        members = frozenset(component) if cyclic else frozenset()
        for name in component:
            current = flags[name]
            rule = _unlinked(current)
            targets: list[FlagRule] = []
            missing: list[str] = []
            for other in rule.requires:
                target = flags.get(other)
                if other in members:
                    target = unavailable(other, CYCLIC_PREREQUISITE)
                elif target is None:
                    target = unavailable(other, MISSING_PREREQUISITE)
                    missing.append(other)
                targets.append(target)
            if cyclic:
                errors[name] = _cycle_error(name, graph, members)
            elif missing:
                names = ", ".join(repr(other) for other in missing)
                errors[name] = f"requires {names}, not in the snapshot: off until it exists"
            if (
                isinstance(current, LinkedRule)
                and len(current.prerequisites) == len(targets)
                and all(a is b for a, b in zip(current.prerequisites, targets, strict=True))
            ):
                continue
            closure = _closure(targets)
            if closure is None:
                closure = [unavailable(name, TOO_MANY_PREREQUISITES)]
                errors[name] = (
                    f"depends on more than {MAX_PREREQUISITES} flags, directly or through "
                    "its prerequisites: off until some are taken out"
                )
            flags[name] = LinkedRule.link(rule, targets, closure)
    return errors


def _closure(prerequisites: Sequence[FlagRule]) -> list[FlagRule] | None:
    """Every rule ``prerequisites`` stand for, each once: each prerequisite followed by
    its own closure (already linked). None past MAX_PREREQUISITES."""
    closure: list[FlagRule] = []
    seen: set[int] = set()
    for prerequisite in prerequisites:
        more = prerequisite.closure if isinstance(prerequisite, LinkedRule) else ()
        for rule in (prerequisite, *more):
            if id(rule) not in seen:
                seen.add(id(rule))
                closure.append(rule)
        if len(closure) > MAX_PREREQUISITES:
            return None
    return closure


def _unlinked(rule: FlagRule) -> FlagRule:
    return rule.unlinked if isinstance(rule, LinkedRule) else rule


def _cycle_error(name: str, graph: Mapping[str, Sequence[str]], members: frozenset[str]) -> str:
    def inside(node: str) -> list[str]:
        return [other for other in graph.get(node, ()) if other in members]

    start = inside(name)[0]
    back = prerequisite_path(inside, start, name) or [start, name]
    chain = " -> ".join(repr(node) for node in (name, *back))
    return f"in a cycle of prerequisites ({chain}): off until it is broken"


def resolve_environment(
    environments: Mapping[str, Any], configured: str | None, hostname: str
) -> tuple[str | None, tuple[str, ...]]:
    """The environment of this process and its chain of ancestors (root first).

    ``environments`` is the environments document, ``{"parents": {env: parent or None},
    "hosts": {hostname: env}}``. A host pegged there wins over the configured environment.
    """
    hosts = environments.get("hosts")
    hosts = hosts if isinstance(hosts, dict) else {}
    pegged = hosts.get(hostname)
    env = pegged if isinstance(pegged, str) and pegged else configured
    parents = environments.get("parents")
    parents = parents if isinstance(parents, dict) else {}
    return env, environment_chain(env, parents)
