"""What one process applied of the sharded view, and how the next head is applied to it.

Pure: no ZooKeeper. The runtime's watch reads the head; :meth:`AppliedView.needed` says
which shards to read (those whose version moved); the runtime reads them and
:meth:`AppliedView.apply` builds the next flags from the previous ones and what changed.
Only the changed shards are decoded and compiled, and the flags with prerequisites are
linked again. A change therefore costs a process what changed, not the number of flags.

The flags dict a request uses is never mutated: a request keeps the snapshot it started
with. So the next dict is not a copy of the current one (a copy of 100,000 entries costs
5–10 ms, most of it cache misses on the rules' reference counts), but the dict published
the change before last, brought up to date in place with the two changes it lacks, once
nothing but this object holds it any more: a grace period as in read-copy-update, checked
with the dict's reference count, which under the GIL counts every request, iterator and
snapshot that can still reach it. While something still does (a burst of changes faster
than the requests using the old dict), the next dict is a copy.

Everything is read again (:meth:`needed` answers every shard) when the head belongs to
another epoch (the view was built anew, or this is the first head), has another number of
shards, or the environment chain of this process changed.
"""

from __future__ import annotations

import sys
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
        # The dict published before the last one, and what it lacks to equal the last one
        # (``_spare_of``): reused in place once nobody holds it (see the module's doc).
        self._spare: dict[str, FlagRule] | None = None
        self._spare_lag: dict[str, FlagRule | None] = {}
        self._spare_of: dict[str, FlagRule] | None = None
        self.reused = 0  # changes applied on the spare dict
        self.copied = 0  # changes applied on a copy

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
            flags = self._next_dict(base)
        previous = base if reuse else None
        changed: set[str] = set()
        for index in [k for k in self.versions if k not in head.versions]:
            self._drop_shard(index, flags, changed)
        for index, (data, version) in fetched.items():
            if index not in head.versions:
                continue
            try:
                known = self.names.get(index, frozenset())
                entries = decode_shard(data, index, head.shards, max_bytes, known)
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
        if fresh:
            # The spare for the first change, made now (a cold start already costs the
            # number of flags) rather than as a copy during that change.
            self._spare, self._spare_of, self._spare_lag = dict(flags), flags, {}
            return flags, self.errors(), None
        # ``base`` is superseded: it becomes the spare, lagging by what changed.
        self._spare = base if type(base) is dict else None
        self._spare_of = flags
        self._spare_lag = {name: flags.get(name) for name in changed}
        return flags, self.errors(), frozenset(changed)

    def _next_dict(self, base: Mapping[str, FlagRule]) -> dict[str, FlagRule]:
        """A dict equal to ``base`` that nobody else holds: the spare brought up to date
        when it is free, else a copy."""
        spare, self._spare = self._spare, None
        lag, self._spare_lag = self._spare_lag, {}
        # Our one reference (``spare``) and getrefcount's argument: nobody else has it.
        if spare is not None and self._spare_of is base and sys.getrefcount(spare) == 2:
            for name, rule in lag.items():
                if rule is None:
                    spare.pop(name, None)
                else:
                    spare[name] = rule
            self.reused += 1
            return spare
        self.copied += 1
        return dict(base)  # the one step that costs the number of flags (a C copy)

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
