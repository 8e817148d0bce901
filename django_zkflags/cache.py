"""The in-process cache: one reference to the current snapshot, swapped whole.

Readers take ``store.current`` (one attribute read, atomic under the GIL) and never lock.
The watcher thread publishes new snapshots; test overrides are layered on top so that a
check never pays for them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import replace

from .rules import FlagRule, LinkedRule
from .snapshot import EMPTY, Snapshot, link_prerequisites

#: The note of the rule ``override_flag`` puts in place of a flag (how ``explain`` tells it).
OVERRIDE_NOTE = "override_flag"


class SnapshotStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._base: Snapshot = EMPTY
        self._overrides: dict[int, tuple[str, bool]] = {}
        self._tokens = itertools.count(1)
        self._default_active = False
        self._declared: Mapping[str, FlagRule] = {}
        self.current: Snapshot = EMPTY

    def reset_lock(self) -> None:
        """After fork: the lock may have been held by a thread that no longer exists."""
        self._lock = threading.RLock()

    @property
    def base(self) -> Snapshot:
        """The last snapshot published by the watcher, without overrides."""
        return self._base

    @property
    def declared(self) -> Mapping[str, FlagRule]:
        """The flags declared in settings, as rules (each fills in while ZooKeeper does not
        hold it)."""
        return self._declared

    def publish(self, snapshot: Snapshot, changed: frozenset[str] | None = None) -> None:
        """Serve ``snapshot``. ``changed``: the names whose rules differ from the base
        snapshot's (added, removed or another rule object), when the caller knows them;
        else they are found by comparing every flag."""
        with self._lock:
            # ``current`` first: whoever sees the new ``base`` (readers do not lock) is
            # then sure to be served it too.
            changed = self._recompose(snapshot, changed)
            self._base = snapshot
        self._notify(changed)

    def set_default_active(self, value: bool) -> None:
        with self._lock:
            self._default_active = bool(value)
            changed = self._recompose()
        self._notify(changed)

    def set_declared(self, rules: Mapping[str, FlagRule]) -> None:
        """Flags declared in settings (``ZKFLAGS["FLAGS"]``): each answers its declared
        default while ZooKeeper does not hold it."""
        with self._lock:
            self._declared = dict(rules)
            changed = self._recompose()
        self._notify(changed)

    def push_override(self, name: str, active: bool) -> int:
        with self._lock:
            token = next(self._tokens)
            self._overrides[token] = (name, bool(active))
            changed = self._recompose()
        self._notify(changed)
        return token

    def pop_override(self, token: int) -> None:
        with self._lock:
            self._overrides.pop(token, None)
            changed = self._recompose()
        self._notify(changed)

    def _recompose(
        self, base: Snapshot | None = None, changed: frozenset[str] | None = None
    ) -> frozenset[str]:
        base = self._base if base is None else base
        flags: Mapping[str, FlagRule] = base.flags
        missing = [rule for name, rule in self._declared.items() if name not in flags]
        if missing:  # ZooKeeper wins; a declared flag fills in only while it is not there
            flags = {**{rule.name: rule for rule in missing}, **flags}
        if self._overrides:
            merged = dict(flags)
            for name, active in self._overrides.values():  # later overrides win
                forced = merged.get(name)
                merged[name] = FlagRule(
                    name,
                    everyone=active,
                    note=OVERRIDE_NOTE,
                    public=forced is not None and forced.public,
                )
            flags = merged
        if flags is not base.flags and isinstance(flags, dict):
            # Flags that require an overridden (or declared) flag follow it.
            link_prerequisites(flags)
        previous = self.current
        self.current = replace(base, flags=flags, default_active=self._default_active)
        if changed is not None and flags is base.flags and previous.flags is self._base.flags:
            return changed  # nothing layered on either side: the caller's names are exact
        return _changed_names(previous.flags, self.current.flags)

    def _notify(self, changed: frozenset[str]) -> None:
        # Outside the lock: receivers may be slow or read the store themselves.
        if changed:
            _send_changed(changed, self.current)


def _changed_names(old: Mapping[str, FlagRule], new: Mapping[str, FlagRule]) -> frozenset[str]:
    """Flags added, removed or changed; a flag with prerequisites counts as changed when it
    was linked anew (it is kept as the same object unless a rule it depends on changed)."""
    if old is new:
        return frozenset()
    names = set(old.keys() ^ new.keys())
    for name, rule in new.items():
        before = old.get(name)
        if (
            before is not None
            and before is not rule
            and (before != rule or isinstance(rule, LinkedRule))
        ):
            names.add(name)
    return frozenset(names)


def _send_changed(names: frozenset[str], snapshot: Snapshot) -> None:
    from .signals import flag_changed

    flag_changed.send(sender=SnapshotStore, names=names, snapshot=snapshot)


store = SnapshotStore()
