"""What changed between two flag documents, field by field, in words: the history of a flag
in the admin and in ``manage.py zkflags history``.

Pure: no Django, no ZooKeeper. A document missing a field is read with the field's default
(``to_document`` leaves ``value``, ``environments``, ``requires`` and ``public`` out when
unset), so a document written by an older version compares equal to the same rule written
by a newer one.

>>> [str(c) for c in diff_documents({"percent": 10}, {"percent": 25})]
['percent: 10 → 25']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class _Missing:
    """A field one side does not have (a flag created or deleted, an override added or
    removed): shown as nothing, never as ``null``."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

#: A field's value when a document leaves it out.
DEFAULTS: dict[str, Any] = {
    "everyone": None,
    "percent": None,
    "superusers": False,
    "staff": False,
    "authenticated": False,
    "users": [],
    "groups": [],
    "requires": [],
    "public": False,
    "value": None,
    "environments": {},
    "note": "",
}

#: The order fields are listed in (unknown fields come after, by name).
FIELD_ORDER = tuple(DEFAULTS)
#: Fields that are not the rule: the name never changes, the version is the znode's.
IGNORED = frozenset({"name", "version"})
#: Lists of user and group ids, shown as ``+added −removed`` with names.
MEMBER_FIELDS = ("users", "groups")

#: Longest rendering of one value (a large live configuration value is cut).
MAX_VALUE_CHARS = 200

#: {"users": {id: username}, "groups": {id: name}}: ids a caller looked up.
Names = Mapping[str, Mapping[int, str]]


def compact(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as compact JSON (keys sorted), a whole float without its ``.0`` (a percent
    of 10.0 is "10"), cut to ``limit`` characters."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    try:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class FieldChange:
    """One field that changed. ``before``/``after`` are :data:`MISSING` on the side that
    does not have the field; member lists carry the names ``added`` and ``removed``."""

    field: str
    before: Any = MISSING
    after: Any = MISSING
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def is_members(self) -> bool:
        return bool(self.added or self.removed)

    def __str__(self) -> str:
        if self.is_members:
            parts = [f"+{name}" for name in self.added] + [f"−{name}" for name in self.removed]
            return f"{self.field}: {' '.join(parts)}"
        if self.before is MISSING:
            return f"{self.field}: {compact(self.after)}"
        if self.after is MISSING:
            return f"{self.field}: removed (was {compact(self.before)})"
        return f"{self.field}: {compact(self.before)} → {compact(self.after)}"


def diff_documents(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    names: Names | None = None,
) -> list[FieldChange]:
    """The fields that differ between two flag documents, in :data:`FIELD_ORDER`.

    ``before`` None (a flag created) lists what ``after`` sets beyond the defaults;
    ``after`` None (a flag deleted) lists what ``before`` had set. Environment overrides
    are compared one environment and one field at a time
    (``environments.staging.percent: 10 → 25``). User and group ids are shown by name
    from ``names`` where given, else as ``#id``; an id ``names`` does not know (a deleted
    user) as ``#id (deleted)``."""
    changes: list[FieldChange] = []
    if before is None and after is None:
        return changes
    if before is None or after is None:
        present = before if after is None else after
        assert present is not None
        for f in _fields(present):
            value = _get(present, f)
            if value == DEFAULTS.get(f):
                continue
            if f == "environments" and isinstance(value, Mapping):
                old, new = ({}, value) if before is None else (value, {})
                changes.extend(_environments_diff(old, new, names))
            else:
                old, new = (MISSING, value) if before is None else (value, MISSING)
                changes.extend(_field_diff(f, old, new, names))
        return changes
    for f in _fields(before, after):
        old, new = _get(before, f), _get(after, f)
        if old == new:
            continue
        if f == "environments" and isinstance(old, Mapping) and isinstance(new, Mapping):
            changes.extend(_environments_diff(old, new, names))
        else:
            changes.extend(_field_diff(f, old, new, names))
    return changes


def member_ids(documents: Iterable[Mapping[str, Any] | None]) -> dict[str, set[int]]:
    """Every user and group id ``documents`` list (their environment overrides included):
    what a caller looks up once to name them all."""
    found: dict[str, set[int]] = {kind: set() for kind in MEMBER_FIELDS}
    for doc in documents:
        if not isinstance(doc, Mapping):
            continue
        overrides = doc.get("environments")
        parts = [doc, *(overrides.values() if isinstance(overrides, Mapping) else ())]
        for part in parts:
            if not isinstance(part, Mapping):
                continue
            for kind in MEMBER_FIELDS:
                found[kind].update(_ids(part.get(kind)))
    return found


# -- the parts --------------------------------------------------------------------------------


def _fields(*docs: Mapping[str, Any]) -> list[str]:
    keys = {key for doc in docs for key in doc} | set(FIELD_ORDER)
    keys -= IGNORED
    known = [f for f in FIELD_ORDER if f in keys]
    return known + sorted(keys - set(FIELD_ORDER))


def _get(doc: Mapping[str, Any], field: str) -> Any:
    value = doc.get(field, DEFAULTS.get(field))
    if field == "environments" and value is None:
        return {}
    return value


def _field_diff(field: str, old: Any, new: Any, names: Names | None) -> list[FieldChange]:
    kind = field.rsplit(".", 1)[-1]
    if kind in MEMBER_FIELDS and _is_id_list(old) and _is_id_list(new):
        old_ids, new_ids = _ids(old), _ids(new)
        if old_ids == new_ids:
            return []
        return [
            FieldChange(
                field,
                old,
                new,
                added=tuple(_name(kind, i, names) for i in sorted(new_ids - old_ids)),
                removed=tuple(_name(kind, i, names) for i in sorted(old_ids - new_ids)),
            )
        ]
    return [FieldChange(field, old, new)]


def _environments_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], names: Names | None
) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for env in sorted(set(old) | set(new), key=str):
        before, after = old.get(env, MISSING), new.get(env, MISSING)
        if before == after:
            continue
        field = f"environments.{env}"
        was_map = {} if before is MISSING else before
        now_map = {} if after is MISSING else after
        if not isinstance(was_map, Mapping) or not isinstance(now_map, Mapping):
            changes.extend(_field_diff(field, before, after, names))
            continue
        found: list[FieldChange] = []
        for key in _fields(was_map, now_map):
            # Inside an override, a field left out is inherited, not its default.
            was, now = was_map.get(key, MISSING), now_map.get(key, MISSING)
            if was != now:
                found.extend(_field_diff(f"{field}.{key}", was, now, names))
        # An empty override added or removed changes no field: say so whole.
        changes.extend(found or _field_diff(field, before, after, names))
    return changes


def _is_id_list(value: Any) -> bool:
    return value is MISSING or value is None or isinstance(value, (list, tuple))


def _ids(value: Any) -> set[int]:
    if not isinstance(value, (list, tuple)):
        return set()
    return {i for i in value if isinstance(i, int) and not isinstance(i, bool)}


def _name(kind: str, pk: int, names: Names | None) -> str:
    if names is None:
        return f"#{pk}"
    known = names.get(kind, {})
    return known[pk] if pk in known else f"#{pk} (deleted)"


__all__ = ["MISSING", "FieldChange", "compact", "diff_documents", "member_ids"]
