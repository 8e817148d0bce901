"""What one process applied of the sharded view, and how the next head is applied to it.

Pure: no ZooKeeper. The runtime's watch reads the head; :meth:`AppliedView.needed` says
which shards to read (those whose version moved); the runtime reads them and
:meth:`AppliedView.apply` builds the next flags from the previous ones and what changed.
Only the changed shards are decoded and compiled; the rest is one copy of the flags dict
(a request keeps the snapshot it started with, so the published dict is never mutated) and
the flags with prerequisites linked again. A change therefore costs a process what
changed, not the number of flags.

Everything is read again (:meth:`needed` answers every shard) when the head belongs to
another epoch (the view was built anew, or this is the first head), has another number of
shards, or the environment chain of this process changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .rules import FlagRule
from .snapshot import CorruptSnapshot, Head, compile_entries, decode_shard, link_prerequisites

#: What the runtime read of one shard: its bytes (None: missing) and znode version.
Fetched = tuple[bytes | None, int | None]


class AppliedView:
    """The shards a process applied: their versions, the names each holds, their bytes (for
    the disk copy), and what was wrong with them."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.shards = 0
        self.chain: tuple[str, ...] | None = None
        self.versions: dict[int, int] = {}
        self.names: dict[int, frozenset[str]] = {}
        self.raw: dict[int, bytes] = {}
        self.shard_errors: dict[int, dict[str, str]] = {}
        self.link_errors: dict[str, str] = {}
        self.requiring: set[str] = set()  # names of the flags with prerequisites

    def matches(self, head: Head, chain: Sequence[str]) -> bool:
        """Can ``head`` be applied on top of what is here?"""
        return (
            self.epoch == head.epoch and self.shards == head.shards and self.chain == tuple(chain)
        )

    def needed(self, head: Head, chain: Sequence[str]) -> list[int]:
        """The shards to read before ``head`` can be applied."""
        if not self.matches(head, chain):
            return sorted(head.versions)
        return sorted(k for k, v in head.versions.items() if self.versions.get(k) != v)

    def apply(
        self,
        head: Head,
        fetched: Mapping[int, Fetched],
        base: Mapping[str, FlagRule],
        chain: Sequence[str],
        max_bytes: int,
        *,
        reuse: bool = True,
    ) -> tuple[dict[str, FlagRule], dict[str, str], frozenset[str] | None]:
        """The flags after ``head``, from ``base`` (the flags now served) and the shards read
        (``fetched``: every shard :meth:`needed` named). Returns the flags, what is wrong
        (by flag name; a shard that cannot be read as ``"(shard k)"``: it keeps what it
        held) and the names that changed (None when everything was read again: the caller
        compares).

        ``reuse``: rules of ``base`` may be reused for entries that still describe them
        (False when ``base`` was compiled for another environment chain).
        """
        fresh = not self.matches(head, chain)
        if fresh:
            self._reset(head, chain)
            flags: dict[str, FlagRule] = {}
        else:
            flags = dict(base)  # the one step that costs the number of flags (a C copy)
        previous = base if reuse else None
        changed: set[str] = set()
        for index in [k for k in self.versions if k not in head.versions]:
            self._drop_shard(index, flags, changed)
        for index, (data, version) in fetched.items():
            if index not in head.versions:
                continue
            try:
                entries = decode_shard(data, index, head.shards, max_bytes)
            except CorruptSnapshot as exc:
                # Keep what the shard held; read it again when the head moves it.
                self.shard_errors[index] = {f"(shard {index})": str(exc)}
                if version is not None:
                    self.versions[index] = version
                continue
            compiled, errors = compile_entries(entries, previous=previous, chain=chain, link=False)
            for name in self.names.get(index, frozenset()) - compiled.keys():
                flags.pop(name, None)
                changed.add(name)
                self.requiring.discard(name)
            for name, rule in compiled.items():
                if flags.get(name) is not rule:
                    flags[name] = rule
                    changed.add(name)
                if rule.requires:
                    self.requiring.add(name)
                else:
                    self.requiring.discard(name)
            self.names[index] = frozenset(compiled)
            self.versions[index] = version if version is not None else -1
            if data is not None:
                self.raw[index] = data
            if errors:
                self.shard_errors[index] = errors
            else:
                self.shard_errors.pop(index, None)
        if self.requiring:
            before = {name: flags.get(name) for name in self.requiring}
            self.link_errors = link_prerequisites(flags, sorted(self.requiring))
            changed.update(name for name, rule in before.items() if flags.get(name) is not rule)
        else:
            self.link_errors = {}
        return flags, self.errors(), None if fresh else frozenset(changed)

    def errors(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        for shard_errors in self.shard_errors.values():
            errors.update(shard_errors)
        for name, why in self.link_errors.items():
            errors[name] = f"{errors[name]}; {why}" if name in errors else why
        return errors

    def _reset(self, head: Head, chain: Sequence[str]) -> None:
        self.epoch, self.shards, self.chain = head.epoch, head.shards, tuple(chain)
        self.versions, self.names, self.raw = {}, {}, {}
        self.shard_errors, self.link_errors, self.requiring = {}, {}, set()

    def _drop_shard(self, index: int, flags: dict[str, FlagRule], changed: set[str]) -> None:
        for name in self.names.pop(index, frozenset()):
            flags.pop(name, None)
            changed.add(name)
            self.requiring.discard(name)
        self.versions.pop(index, None)
        self.raw.pop(index, None)
        self.shard_errors.pop(index, None)
