"""Pure evaluation of flag rules: no Django, no ZooKeeper, no I/O.

A flag document (what ZooKeeper stores, a JSON object) is validated and compiled once into
a :class:`FlagRule` when a snapshot arrives; a check is then a handful of attribute reads.

Percentage rollouts hash the flag's name with the visitor's identity (user pk, or the
anonymous cookie id)::

    key    = utf8(flag_name) + b"\\x00" + utf8(str(identity))
    bucket = int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % 10000
    active = bucket < round(percent * 100)

so a visitor keeps its answer, stays in when the percentage rises, and two flags pick
independent sets of visitors. Test vectors are in docs/percentages.md and
tests/unit/test_rules.py. A check computes the same number from a hash state already fed
with the name (:meth:`FlagRule.position`), and remembers it by (name, identity) for the
next checks of that user or visitor (``_POSITIONS``, bounded).

A flag may require other flags (``"requires": [names]``): it is on only when its own rules
match and every prerequisite is on for the same user or visitor. Prerequisites are linked
when a snapshot is compiled (:meth:`LinkedRule.link`, from ``snapshot.compile_entries``):
a flag without prerequisites stays a plain :class:`FlagRule` and pays nothing for them.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from hashlib import blake2b
from types import MappingProxyType
from typing import Any

NAME_MAX_LENGTH = 100
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")
#: A host name as pegged in the environments document (what socket.gethostname() gives).
HOST_PATTERN = re.compile(r"[^\s/\x00-\x1f\x7f]{1,255}")
NO_IDS: frozenset[int] = frozenset()
NO_ENVIRONMENTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({})
BUCKETS = 10_000  # percentages have two decimals of resolution; the admin allows one
#: How deeply a flag's ``value`` (and the ``value`` of each environment override) may nest
#: lists and objects: ``[[1]]`` nests 2 deep, a number 0. Deeper is refused as invalid, so
#: that nothing downstream (freezing, the admin's form, ``json.dumps``) recurses far.
MAX_VALUE_DEPTH = 64

#: Fields an environment may override (everything but the name, the note, the
#: prerequisites and ``public``: what a flag depends on and whether front ends may read it
#: are the same everywhere; whether each flag is on is what environments change).
OVERRIDABLE_FIELDS = frozenset(
    ("everyone", "percent", "superusers", "staff", "authenticated", "users", "groups", "value")
)


#: The most flags one flag may depend on, directly or through its prerequisites: more is
#: refused on save, and a flag linked with more (written by hand) is off. It bounds what a
#: check costs and what a snapshot holds.
MAX_PREREQUISITES = 64
#: The note of a prerequisite linked as off because no flag of that name exists.
MISSING_PREREQUISITE = "no such flag"
#: The note of a prerequisite linked as off because it is in a cycle with the flag.
CYCLIC_PREREQUISITE = "in a cycle of prerequisites"
#: The note of what a flag depending on more than MAX_PREREQUISITES flags is linked to.
TOO_MANY_PREREQUISITES = f"more than {MAX_PREREQUISITES} prerequisites, with theirs"


class InvalidFlag(ValueError):
    """A flag name or document that cannot be accepted."""


class PrerequisiteError(InvalidFlag):
    """A change that would leave a flag requiring a flag that does not exist, or make a
    cycle of prerequisites."""


_short_repr = reprlib.Repr()
_short_repr.maxlevel = 2
_short_repr.maxstring = 120
_short_repr.maxother = 60


def describe(value: object) -> str:
    """``repr(value)`` for an error message: short, and bounded in depth (a repr of deeply
    nested input would raise RecursionError)."""
    return _short_repr.repr(value)


def freeze_value(value: Any, _depth: int = 0) -> Any:
    """A read-only copy of a JSON value (a cached value is shared by every request).

    Raises InvalidFlag when it nests lists and objects deeper than :data:`MAX_VALUE_DEPTH`.
    """
    if isinstance(value, (Mapping, list, tuple)):
        if _depth >= MAX_VALUE_DEPTH:
            raise InvalidFlag(
                f"'value' is nested too deeply: at most {MAX_VALUE_DEPTH} levels of lists "
                "and objects"
            )
        if isinstance(value, Mapping):
            return MappingProxyType({str(k): freeze_value(v, _depth + 1) for k, v in value.items()})
        return tuple(freeze_value(v, _depth + 1) for v in value)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFlag(f"'value' must be JSON: {value!r} is not a JSON number")
        return value
    raise InvalidFlag(
        f"'value' must be JSON (null, bool, number, string, list, object), got {type(value).__name__}"
    )


_JSON_TEXT_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def json_text_too_deep(text: str, limit: int = MAX_VALUE_DEPTH) -> bool:
    """Does JSON ``text`` nest lists and objects deeper than ``limit``? A scan without
    recursion, for text that has not been parsed yet (``json.loads`` of thousands of
    levels raises RecursionError, and below that its result is costly to handle)."""
    depth = 0
    for match in _JSON_TEXT_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def thaw_value(value: Any) -> Any:
    """The plain JSON form of a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw_value(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw_value(v) for v in value]
    return value


def validate_environments(environments: object, name: str) -> Mapping[str, Mapping[str, Any]]:
    """Validate per-environment overrides: ``{env: {field: value}}``."""
    if not environments and isinstance(environments, (Mapping, type(None))):
        return NO_ENVIRONMENTS
    if not isinstance(environments, Mapping):
        raise InvalidFlag(
            "'environments' must be an object of environment overrides, got "
            f"{describe(environments)}"
        )
    checked: dict[str, Mapping[str, Any]] = {}
    for env, override in environments.items():
        try:
            validate_name(env)
        except InvalidFlag:
            raise InvalidFlag(
                f"Invalid environment name {describe(env)} in 'environments'"
            ) from None
        if not isinstance(override, Mapping):
            raise InvalidFlag(f"Overrides for environment {env!r} must be an object")
        unknown = set(override) - OVERRIDABLE_FIELDS
        if unknown:
            raise InvalidFlag(
                f"Environment {env!r} overrides unknown field(s) {describe(sorted(unknown))}; "
                f"allowed: {sorted(OVERRIDABLE_FIELDS)}"
            )
        # The overrides must make a valid flag on their own terms.
        try:
            FlagRule.from_document({"name": name, **override})
        except InvalidFlag as exc:
            raise InvalidFlag(f"Environment {env!r}: {exc}") from None
        checked[env] = MappingProxyType({field: freeze_value(v) for field, v in override.items()})
    return MappingProxyType(checked)


def validate_environments_document(doc: object) -> dict[str, Any]:
    """Validate ``{"parents": {env: parent or null}, "hosts": {hostname: env}}`` in full:
    both keys optional, each an object; every environment and parent a valid name; every
    parent defined; no cycle of parents of any length (an environment its own parent
    included); every host a valid host name pegged to a defined environment.

    Returns the document with both keys; raises InvalidFlag saying what is wrong."""
    if not isinstance(doc, Mapping):
        raise InvalidFlag(
            f"The environments document must be a JSON object, got {type(doc).__name__}"
        )
    unknown = set(doc) - {"parents", "hosts"}
    if unknown:
        raise InvalidFlag(
            f"The environments document has unknown key(s) {describe(sorted(map(str, unknown)))}"
            "; it has 'parents' and 'hosts'"
        )
    parents = doc.get("parents", {})
    hosts = doc.get("hosts", {})
    for key, value in (("parents", parents), ("hosts", hosts)):
        if not isinstance(value, Mapping):
            raise InvalidFlag(f"{key!r} must be a JSON object, got {describe(value)}")
    for env, parent in parents.items():
        try:
            validate_name(env)
        except InvalidFlag:
            raise InvalidFlag(f"Invalid environment name {describe(env)}") from None
        if parent is not None and not isinstance(parent, str):
            raise InvalidFlag(
                f"The parent of environment {env!r} must be an environment name or null, "
                f"got {describe(parent)}"
            )
        if parent is not None and parent not in parents:
            raise InvalidFlag(f"Environment {env!r} has an undefined parent {parent!r}")
    cycle = _parent_cycle(parents)
    if cycle:
        if len(cycle) == 1:
            raise InvalidFlag(f"Environment {cycle[0]!r} is its own parent")
        path = " -> ".join(repr(env) for env in (*cycle, cycle[0]))
        raise InvalidFlag(f"Environment {cycle[0]!r} is in a cycle of parents: {path}")
    for host, env in hosts.items():
        if not isinstance(host, str) or not HOST_PATTERN.fullmatch(host):
            raise InvalidFlag(
                f"Invalid host name {describe(host)}: 1 to 255 characters, no spaces, "
                "control characters or '/'"
            )
        if not isinstance(env, str):
            raise InvalidFlag(
                f"Host {host!r} must be pegged to an environment name, got {describe(env)}"
            )
        if env not in parents:
            raise InvalidFlag(f"Host {host!r} is pegged to an undefined environment {env!r}")
    return {"parents": dict(parents), "hosts": dict(hosts)}


def _parent_cycle(parents: Mapping[str, str | None]) -> list[str]:
    """The first cycle of parents found (each environment once, in parent order), or []."""
    done: set[str] = set()
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        env: str | None = start
        while env is not None and env not in done:
            if env in on_path:
                return path[path.index(env) :]
            path.append(env)
            on_path.add(env)
            env = parents.get(env)
        done.update(path)
    return []


def environment_chain(env: str | None, parents: Mapping[str, Any]) -> tuple[str, ...]:
    """``env`` and its ancestors, root first. A cycle, a missing parent or a parent that is
    not a name (in a document nobody validated) ends the chain."""
    chain: list[str] = []
    seen: set[str] = set()
    while isinstance(env, str) and env and env not in seen:
        seen.add(env)
        chain.append(env)
        env = parents.get(env)
    return tuple(reversed(chain))


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidFlag(
            f"Invalid flag name {describe(name)}: use 1 to {NAME_MAX_LENGTH} letters, digits, "
            "'-', '_' or '.'"
        )
    if name in (".", ".."):
        raise InvalidFlag(f"Invalid flag name {name!r}")
    return name


def validate_percent(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidFlag(f"Percent must be a number from 0 to 100, got {describe(value)}")
    # Range first: math.isfinite() raises OverflowError on an int too large for a float.
    if not 0 <= value <= 100 or not math.isfinite(value):
        raise InvalidFlag(f"Percent must be from 0 to 100, got {value!r}")
    return float(value)


def _bool(doc: Mapping[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise InvalidFlag(f"{key!r} must be true or false, got {describe(value)}")
    return value


def validate_requires(requires: object, name: str) -> tuple[str, ...]:
    """The names of the flags ``name`` requires, in the order given: each a valid flag
    name, once, and not ``name`` itself."""
    if requires is None:
        return ()
    if isinstance(requires, (str, bytes)) or not isinstance(requires, (list, tuple)):
        raise InvalidFlag(f"'requires' must be a list of flag names, got {describe(requires)}")
    seen: set[str] = set()
    for other in requires:
        try:
            validate_name(other)
        except InvalidFlag:
            raise InvalidFlag(f"Invalid flag name {describe(other)} in 'requires'") from None
        if other == name:
            raise PrerequisiteError(f"Flag {name!r} cannot require itself")
        if other in seen:
            raise InvalidFlag(f"Flag {name!r} requires {other!r} twice")
        seen.add(other)
    return tuple(requires)


def requires_of(entry: object) -> tuple[str, ...]:
    """The prerequisite names of a snapshot entry or flag document, as far as they are
    names (for graph walks over documents nobody validated: anything else is ignored)."""
    requires = entry.get("requires") if isinstance(entry, Mapping) else None
    if not isinstance(requires, list):
        return ()
    return tuple(name for name in requires if isinstance(name, str))


def prerequisite_path(
    requires: Callable[[str], Sequence[str]], start: str, goal: str
) -> list[str] | None:
    """The shortest chain of prerequisites from ``start`` to ``goal`` (both included), or
    None. ``requires(name)`` gives a flag's prerequisite names. Breadth first, without
    recursion: any graph, cycles included, is walked once."""
    if start == goal:
        return [start]
    came_from: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in requires(node):
                if nxt in came_from:
                    continue
                came_from[nxt] = node
                if nxt == goal:
                    path = [nxt]
                    back = came_from[nxt]
                    while back is not None:
                        path.append(back)
                        back = came_from[back]
                    return path[::-1]
                following.append(nxt)
        frontier = following
    return None


def prerequisite_problems(
    flags: Mapping[str, Any], new_edges: Iterable[tuple[str, str]]
) -> list[str]:
    """What is wrong with prerequisites a change adds: ``flags`` maps every flag name to
    its document (or snapshot entry) as it would be after the change, ``new_edges`` are the
    ``(flag, prerequisite)`` pairs the change adds. Each prerequisite must exist, and no
    added requirement may close a cycle (of any length). Requirements a flag already had
    are not looked at, so that an edit (a kill switch) is never blocked by what a hand
    edit broke elsewhere; ``check`` reports those."""

    def requires(name: str) -> tuple[str, ...]:
        return requires_of(flags.get(name))

    problems: list[str] = []
    new_edges = list(new_edges)
    for name, other in new_edges:
        if other not in flags:
            problems.append(f"Flag {name!r} requires {other!r}, which does not exist")
            continue
        back = prerequisite_path(requires, other, name)
        if back is not None:
            chain = " -> ".join(repr(n) for n in (name, *back))
            problems.append(f"Flag {name!r} cannot require {other!r}: a cycle ({chain})")
    if problems or not new_edges:
        return problems
    # The flags that gained requirements, and every flag that depends on them, may now
    # depend on too many.
    required_by: dict[str, list[str]] = {}
    for name, entry in flags.items():
        listed = entry.get("requires") if isinstance(entry, Mapping) else None
        if listed and isinstance(listed, list):
            for other in listed:
                if isinstance(other, str):
                    required_by.setdefault(other, []).append(name)
    affected = {name for name, _other in new_edges}
    frontier = list(affected)
    while frontier:
        for up in required_by.get(frontier.pop(), ()):
            if up not in affected:
                affected.add(up)
                frontier.append(up)
    for name in sorted(affected):
        if _depends_on_more_than(requires, name, MAX_PREREQUISITES):
            problems.append(
                f"Flag {name!r} would depend on more than {MAX_PREREQUISITES} flags, directly "
                "or through its prerequisites"
            )
            break
    return problems


def _depends_on_more_than(requires: Callable[[str], Sequence[str]], name: str, limit: int) -> bool:
    seen: set[str] = set()
    stack = list(requires(name))
    while stack:
        node = stack.pop()
        if node in seen or node == name:
            continue
        seen.add(node)
        if len(seen) > limit:
            return True
        stack.extend(requires(node))
    return False


def strongly_connected(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` (name -> names it points to; names
    not in ``graph`` are leaves), prerequisites before the flags that require them.
    Tarjan's algorithm without recursion, so a chain of any length is safe."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _ids(doc: Mapping[str, Any], key: str) -> frozenset[int]:
    value = doc.get(key)
    if value is None or value == []:  # most flags list nobody
        return NO_IDS
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise InvalidFlag(f"{key!r} must be a list of integer ids, got {describe(value)}")
    return frozenset(value)


#: The fields of a snapshot entry as FlagRule.describes compares them; an entry with only
#: these (and the id lists) has no value, environment overrides, prerequisites or
#: ``public`` (all left out of documents when unset).
_SCALARS = operator.itemgetter(
    "version", "everyone", "percent", "superusers", "staff", "authenticated", "note", "name"
)
_ID_LISTS = operator.itemgetter("users", "groups")
_PLAIN_ENTRY_KEYS = 10


_from_bytes = int.from_bytes

#: Buckets already computed, by (flag name, user pk or visitor id): a bucket depends on
#: nothing else (not the percentage, not the snapshot), and the same users come back
#: request after request, so a check that hits skips the hash (about 0.7 µs). Bounded:
#: cleared when it holds ``POSITIONS_KEPT`` (about 2 MB). Only ``int`` and ``str``
#: identities are kept.
_POSITIONS: dict[tuple[str, object], int] = {}
POSITIONS_KEPT = 16_384


#: For each class of user object met: the attribute its ``pk`` reads (:func:`_pk_attribute`).
_PK_ATTRIBUTES: dict[type, str] = {}


#: Classes whose ``is_authenticated`` is Django's constant property (``AbstractBaseUser``:
#: True, ``AnonymousUser``: False), by class, so a check reads no property (about 0.1 µs
#: each, and a check reads it up to twice); None: read it every time.
_AUTHENTICATED: dict[type, bool | None] = {type(None): False}
_CONSTANT_AUTHENTICATED = {
    ("django.contrib.auth.base_user", "AbstractBaseUser.is_authenticated"): True,
    ("django.contrib.auth.models", "AnonymousUser.is_authenticated"): False,
}


def is_authenticated(user: Any) -> bool:
    """``user is not None and user.is_authenticated``, without the property call for
    Django's own user classes (see :data:`_AUTHENTICATED`)."""
    cls = type(user)
    authenticated = _AUTHENTICATED.get(cls)
    if authenticated is None:
        authenticated = user is not None and _is_authenticated(user, cls)
    return authenticated


def _is_authenticated(user: Any, cls: type) -> bool:
    """``user.is_authenticated``, learning whether ``cls`` answers a constant."""
    if cls not in _AUTHENTICATED and len(_AUTHENTICATED) < 1024:
        constant = None
        for klass in cls.__mro__:
            found = vars(klass).get("is_authenticated")
            if found is None:
                continue
            getter = found.fget if isinstance(found, property) else None
            key = (getattr(getter, "__module__", None), getattr(getter, "__qualname__", None))
            constant = _CONSTANT_AUTHENTICATED.get(key)  # type: ignore[arg-type]
            break
        _AUTHENTICATED[cls] = constant
    return bool(user.is_authenticated)


def _pk_attribute(cls: type) -> str:
    """The attribute that gives ``user.pk`` for instances of ``cls``, without the property.

    Django's ``Model.pk`` is a property whose getter (``Model._get_pk_val``) returns
    ``getattr(self, self._meta.pk.attname)``: for a model that keeps it (``User``), that
    attribute (``id``) is read directly, the same value without the two Python calls. Any
    other class (a duck-typed user, a model with its own ``pk``, a lazy object): ``pk``."""
    attribute = "pk"
    for klass in cls.__mro__:
        found = vars(klass).get("pk")
        if found is None:
            continue
        getter = found.fget if isinstance(found, property) else None
        if (
            getter is not None
            and getattr(getter, "__qualname__", None) == "Model._get_pk_val"
            and getattr(getter, "__module__", None) == "django.db.models.base"
        ):
            attname = getattr(getattr(getattr(cls, "_meta", None), "pk", None), "attname", None)
            if isinstance(attname, str) and attname and attname != "pk":
                attribute = attname
        break
    if len(_PK_ATTRIBUTES) < 1024:  # classes made on the fly are not kept
        _PK_ATTRIBUTES[cls] = attribute
    return attribute


def bucket(name: str, identity: object) -> int:
    """The visitor's bucket (0..9999) for this flag."""
    key = f"{name}\x00{identity}".encode()
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % BUCKETS


class FlagRule:
    """One flag, validated and ready to evaluate. Immutable by convention."""

    __slots__ = (
        "name",
        "everyone",
        "percent",
        "threshold",
        "superusers",
        "staff",
        "authenticated",
        "users",
        "groups",
        "note",
        "version",
        "value",
        "environments",
        "requires",
        "public",
        "wants_anonymous_id",
        "constant",
        "_hasher",
        "_base",
        "_scalars",
        "_plain",
    )

    _plain: bool  # set with _scalars, on the rule's first comparison (describes)

    def __init__(
        self,
        name: str,
        *,
        everyone: bool | None = None,
        percent: float | None = None,
        superusers: bool = False,
        staff: bool = False,
        authenticated: bool = False,
        users: Iterable[int] = (),
        groups: Iterable[int] = (),
        note: str = "",
        version: int | None = None,
        value: Any = None,
        environments: Mapping[str, Mapping[str, Any]] | None = None,
        requires: Iterable[str] | None = None,
        public: bool = False,
    ) -> None:
        self.name = validate_name(name)
        if everyone is not None and not isinstance(everyone, bool):
            raise InvalidFlag(f"'everyone' must be true, false or null, got {describe(everyone)}")
        self.everyone = everyone
        self.percent = validate_percent(percent)
        self.threshold = round(self.percent * 100) if self.percent else 0
        self.superusers = superusers
        self.staff = staff
        self.authenticated = authenticated
        # Most flags list nobody: share one empty set (4 MB saved at 10,000 flags).
        self.users = frozenset(users) or NO_IDS
        self.groups = frozenset(groups) or NO_IDS
        self.note = note
        self.version = version
        if value is None and environments is None:  # most flags: no call (cold starts)
            self.value, self.environments = None, NO_ENVIRONMENTS
        else:
            try:
                self.value = freeze_value(value)
                self.environments = validate_environments(environments, name)
            except RecursionError:
                raise InvalidFlag("'value' or 'environments' is nested too deeply") from None
        # Most flags require nothing: no call for them (a cold start compiles thousands).
        self.requires = () if requires is None else validate_requires(requires, name)
        if public is not False and public is not True:  # False first: most are private
            raise InvalidFlag(f"'public' must be true or false, got {describe(public)}")
        self.public = public
        #: Can a percentage decide this rule for an anonymous visitor? Then the evaluator
        #: gives it the visitor's id (a linked rule also asks for its prerequisites').
        self.wants_anonymous_id = everyone is None and self.threshold > 0
        #: The answer for every user and visitor when it does not depend on who asks (on
        #: or off for everyone), else None: checks answer it without evaluating the rule.
        self.constant: bool | None = everyone
        #: BLAKE2b fed with ``name + "\x00"``, made on the first percentage evaluated with an
        #: identity (see :meth:`position`): a bucket is then a copy and one update.
        self._hasher: Any = None
        self._base = self  # the rule as stored, before environment overrides
        self._scalars: tuple[Any, ...] | None = None  # see describes() (and _plain)

    @classmethod
    def from_document(cls, doc: object, *, name: str | None = None) -> FlagRule:
        """Validate a flag document (as stored in ZooKeeper) and compile it."""
        if type(doc) is not dict and not isinstance(doc, Mapping):
            raise InvalidFlag(f"A flag document must be a JSON object, got {type(doc).__name__}")
        doc_name = doc.get("name", name)
        if name is not None and doc_name != name:
            raise InvalidFlag(f"Flag document named {describe(doc_name)} is stored as {name!r}")
        note = doc.get("note", "")
        if not isinstance(note, str):
            raise InvalidFlag("'note' must be a string")
        version = doc.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise InvalidFlag("'version' must be an integer")
        return cls(
            doc_name,
            everyone=doc.get("everyone"),
            percent=doc.get("percent"),
            superusers=_bool(doc, "superusers"),
            staff=_bool(doc, "staff"),
            authenticated=_bool(doc, "authenticated"),
            users=_ids(doc, "users"),
            groups=_ids(doc, "groups"),
            note=note,
            version=version,
            value=doc.get("value"),
            environments=doc.get("environments"),
            requires=doc.get("requires"),
            public=doc.get("public", False),
        )

    def to_document(self) -> dict[str, Any]:
        """The JSON-ready document (without the ZooKeeper version).

        ``value``, ``environments``, ``requires`` and ``public`` are left out when unset:
        absent means default, which keeps documents small and readable by older versions
        (and documents written before these fields existed equal to ones written after).
        """
        doc: dict[str, Any] = {
            "name": self.name,
            "everyone": self.everyone,
            "percent": self.percent,
            "superusers": self.superusers,
            "staff": self.staff,
            "authenticated": self.authenticated,
            "users": sorted(self.users),
            "groups": sorted(self.groups),
            "note": self.note,
        }
        if self.value is not None:
            doc["value"] = thaw_value(self.value)
        if self.environments:
            doc["environments"] = thaw_value(self.environments)
        if self.requires:
            doc["requires"] = list(self.requires)
        if self.public:
            doc["public"] = True
        return doc

    def for_environment(self, chain: Sequence[str]) -> FlagRule:
        """This flag as seen in the last environment of ``chain`` (root first): the
        overrides of each environment along the chain applied in order."""
        if not self.environments or not chain:
            return self
        doc = self.to_document()
        doc.pop("environments")
        applied = False
        for env in chain:
            override = self.environments.get(env)
            if override:
                doc.update(thaw_value(override))
                applied = True
        if not applied:
            return self
        rule = FlagRule.from_document(doc)
        rule.version = self.version
        rule.environments = self.environments
        rule._base = self
        return rule

    @property
    def base(self) -> FlagRule:
        """The rule as stored in ZooKeeper, before this process's environment overrides
        (itself when none applied)."""
        return self._base

    def describes(self, entry: Mapping[str, Any]) -> bool:
        """Does the snapshot ``entry`` (a document and its version) describe exactly the
        rule this one was compiled from? Compared field by field without building anything:
        a version alone is not an identity (a flag deleted and created again, or a tree
        restored after ZooKeeper lost its data, starts again at version 0)."""
        base = self._base
        try:
            scalars = _SCALARS(entry)
            users, groups = _ID_LISTS(entry)
        except KeyError:  # not as this app writes entries: compile it again
            return False
        mine = base._scalars
        if mine is None:  # computed once per rule, on its first comparison
            # An entry of the plain size describes this rule only if it has none of the
            # fields documents leave out when unset.
            base._plain = (
                base.value is None
                and not base.environments
                and not base.requires
                and not base.public
            )
            mine = base._scalars = (
                base.version,
                base.everyone,
                base.percent,
                base.superusers,
                base.staff,
                base.authenticated,
                base.note,
                base.name,
            )
        if scalars != mine or base.version is None:
            return False
        if (users or base.users) and (
            len(users) != len(base.users) or not base.users.issuperset(users)
        ):
            return False
        if (groups or base.groups) and (
            len(groups) != len(base.groups) or not base.groups.issuperset(groups)
        ):
            return False
        if len(entry) == _PLAIN_ENTRY_KEYS:  # no value, environments, requires, public
            return base._plain
        requires = entry.get("requires")
        if (requires or base.requires) and (
            not isinstance(requires, list) or tuple(requires) != base.requires
        ):
            return False
        if entry.get("public", False) is not base.public:
            return False
        value, environments = entry.get("value"), entry.get("environments")
        if (value is None) != (base.value is None) or (
            value is not None and thaw_value(base.value) != value
        ):
            return False
        if not environments:
            return not base.environments
        return thaw_value(base.environments) == environments

    def is_active(
        self,
        user: Any,
        anonymous_id: str | None = None,
        group_ids: Callable[[Any], Iterable[int]] | None = None,
    ) -> bool:
        """Evaluate for a user (duck-typed Django user, or None) and an anonymous id.

        ``group_ids(user)`` is only called for an authenticated user, when the flag has group
        rules and no other rule matched. The rules are tried cheapest first: the percentage
        (a hash) before the groups (a query).
        """
        everyone = self.everyone
        if everyone is not None:
            return everyone
        cls = type(user)
        authenticated = _AUTHENTICATED.get(cls)  # user.is_authenticated, when constant
        if authenticated is None:
            authenticated = user is not None and _is_authenticated(user, cls)
        if not authenticated:
            # An anonymous visitor: only the percentage can match, by its anonymous id.
            threshold = self.threshold
            if threshold >= BUCKETS:
                return True
            if not threshold or anonymous_id is None:
                return False
            return self._position_of(anonymous_id) < threshold
        if self.authenticated:
            return True
        if self.superusers and user.is_superuser:
            return True
        if self.staff and user.is_staff:
            return True
        identity = getattr(user, _PK_ATTRIBUTES.get(cls) or _pk_attribute(cls))  # user.pk
        if identity in self.users:
            return True
        threshold = self.threshold
        if threshold:
            if threshold >= BUCKETS:
                return True
            if identity is not None:
                kind = type(identity)
                position = (
                    _POSITIONS.get((self.name, identity))  # self._position_of(), its hit
                    if kind is int or kind is str
                    else None
                )
                if position is None:
                    position = self._position_of(identity)
                if position < threshold:
                    return True
        return bool(
            self.groups and group_ids is not None and not self.groups.isdisjoint(group_ids(user))
        )

    def _position_of(self, identity: object) -> int:
        """:meth:`position`, remembered in :data:`_POSITIONS` for an ``int`` or ``str``
        identity only: ``1``, ``True`` and ``1.0`` are equal keys, not the same string."""
        kind = type(identity)
        if kind is not int and kind is not str:
            return self.position(identity)
        key = (self.name, identity)
        position = _POSITIONS.get(key)
        if position is None:
            hasher = self._hasher  # self.position(identity), written out
            if hasher is None:
                hasher = self._hasher = blake2b((self.name + "\x00").encode(), digest_size=8)
            h = hasher.copy()
            h.update(str(identity).encode())
            position = _from_bytes(h.digest(), "big") % BUCKETS
            if len(_POSITIONS) >= POSITIONS_KEPT:
                _POSITIONS.clear()  # bounded: start again (one clear per that many misses)
            _POSITIONS[key] = position
        return position

    def position(self, identity: object) -> int:
        """:func:`bucket` of this flag for ``identity``: the same number, computed from a
        hash state already fed with the flag's part of the key."""
        hasher = self._hasher
        if hasher is None:
            hasher = self._hasher = blake2b((self.name + "\x00").encode(), digest_size=8)
        h = hasher.copy()
        h.update(str(identity).encode())
        return _from_bytes(h.digest(), "big") % BUCKETS

    def why(
        self,
        user: Any,
        anonymous_id: str | None = None,
        group_ids: Callable[[Any], Iterable[int]] | None = None,
    ) -> tuple[bool, str, int | None]:
        """:meth:`FlagRule.is_active` of this rule's own rules (not its prerequisites'),
        with what decided it: ``(active, reason, bucket)``.

        ``reason`` is the rule that matched: "everyone" (on or off), "authenticated",
        "superusers", "staff", "users", "percent" or "groups"; "percent" also when off
        because the visitor's bucket is past the threshold and no other rule matched; else
        "no-match". ``bucket`` is the visitor's (0..9999) whenever the percentage was
        looked at for an identity. For ``explain``, not the hot path: it walks the rules
        in :meth:`is_active`'s order, and changes with it (tests/unit/test_explain.py
        checks that they agree on random rules).
        """
        everyone = self.everyone
        if everyone is not None:
            return everyone, "everyone", None
        identity: object = anonymous_id
        authenticated = user is not None and user.is_authenticated
        if authenticated:
            if self.authenticated:
                return True, "authenticated", None
            if self.superusers and user.is_superuser:
                return True, "superusers", None
            if self.staff and user.is_staff:
                return True, "staff", None
            identity = user.pk
            if identity in self.users:
                return True, "users", None
        threshold = self.threshold
        position = bucket(self.name, identity) if threshold and identity is not None else None
        if threshold >= BUCKETS or (position is not None and position < threshold):
            return True, "percent", position
        if (
            self.groups
            and group_ids is not None
            and authenticated
            and not self.groups.isdisjoint(group_ids(user))
        ):
            return True, "groups", None
        if position is not None:
            return False, "percent", position
        return False, "no-match", None

    def overridden_in(self, field: str, chain: Sequence[str]) -> str | None:
        """The environment of ``chain`` (root first) whose override set ``field`` in this
        rule, the last one along the chain; None when the field is the stored flag's."""
        if self._base is self:
            return None
        for env in reversed(chain):
            if field in self.environments.get(env, NO_ENVIRONMENTS):
                return env
        return None

    @property
    def wants_group_ids(self) -> bool:
        """Can evaluating this rule ask for the user's group ids (its group rules, or a
        prerequisite's)? Async code fetches them first when so."""
        return bool(self.groups) and self.everyone is None

    def summary(self) -> str:
        """A short human description of the rule, for the admin and the CLI."""
        if self.everyone is False:
            return "off for everyone"
        if self.requires:
            return f"{self._own_summary()} (requires {', '.join(self.requires)})"
        return self._own_summary()

    def _own_summary(self) -> str:
        if self.everyone is True:
            return "on for everyone"
        parts = []
        if self.superusers:
            parts.append("superusers")
        if self.staff:
            parts.append("staff")
        if self.authenticated:
            parts.append("authenticated")
        if self.users:
            parts.append(f"{len(self.users)} user(s)")
        if self.groups:
            parts.append(f"{len(self.groups)} group(s)")
        if self.percent:
            parts.append(f"{self.percent:g}%")
        return ", ".join(parts) if parts else "off (no rule matches)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlagRule):
            return NotImplemented
        return self.to_document() == other.to_document() and self.version == other.version

    def __hash__(self) -> int:
        return hash((self.name, self.version))

    def __repr__(self) -> str:
        return f"<FlagRule {self.name} v{self.version}: {self.summary()}>"


class LinkedRule(FlagRule):
    """A flag with prerequisites, linked to its prerequisites' rules in one snapshot (by
    ``snapshot.link_prerequisites`` when the snapshot is compiled): on only when its own
    rules match **and** every prerequisite is on for the same user or visitor.

    ``prerequisites`` are the rules of the flags it lists; ``closure`` every rule it
    depends on, directly or through its prerequisites, each once (prerequisites first, in
    the order listed, each followed by its own). The flag is on when its own rules and
    those of every rule of the closure match: a flat loop, never a recursion, whatever the
    shape of the graph. A prerequisite that is missing, in a cycle with the flag, or beyond
    :data:`MAX_PREREQUISITES` is linked as an :func:`unavailable` rule (off; its note says
    why). Flags without prerequisites stay plain :class:`FlagRule` objects and pay
    nothing.
    """

    __slots__ = ("prerequisites", "closure", "unlinked")

    prerequisites: tuple[FlagRule, ...]
    closure: tuple[FlagRule, ...]
    unlinked: FlagRule  # the same rule before linking (what the next compile links again)

    @classmethod
    def link(
        cls, rule: FlagRule, prerequisites: Sequence[FlagRule], closure: Sequence[FlagRule]
    ) -> LinkedRule:
        linked = cls.__new__(cls)
        for slot in FlagRule.__slots__:
            try:
                setattr(linked, slot, getattr(rule, slot))
            except AttributeError:  # a slot set lazily (_plain), not set yet
                pass
        linked.prerequisites = tuple(prerequisites)
        linked.closure = tuple(closure)
        linked.unlinked = rule
        if rule.everyone is False:
            linked.constant = False
        elif rule.everyone is True and all(r.everyone is True for r in linked.closure):
            linked.constant = True
        else:  # evaluated, prerequisites in order, as before
            linked.constant = None
        reachable = rule.everyone is not False
        linked.wants_anonymous_id = reachable and (
            rule.wants_anonymous_id or any(r.wants_anonymous_id for r in linked.closure)
        )
        return linked

    @property
    def wants_group_ids(self) -> bool:
        if self.everyone is not None:
            return self.everyone is True and any(rule.wants_group_ids for rule in self.closure)
        return bool(self.groups) or any(rule.wants_group_ids for rule in self.closure)

    def is_active(
        self,
        user: Any,
        anonymous_id: str | None = None,
        group_ids: Callable[[Any], Iterable[int]] | None = None,
    ) -> bool:
        own = FlagRule.is_active
        if not own(self, user, anonymous_id, group_ids):
            return False
        for rule in self.closure:
            if not own(rule, user, anonymous_id, group_ids):
                return False
        return True

    def off_prerequisite(
        self,
        user: Any,
        anonymous_id: str | None = None,
        group_ids: Callable[[Any], Iterable[int]] | None = None,
    ) -> FlagRule | None:
        """The first flag this one depends on (directly or through its prerequisites, in
        the order of :attr:`closure`) whose own rules do not match for this user or
        visitor: the reason a prerequisite is off. None when all match. A missing, cyclic
        or too-far prerequisite is an off rule whose ``note`` says which."""
        for rule in self.closure:
            if not FlagRule.is_active(rule, user, anonymous_id, group_ids):
                return rule
        return None


@functools.lru_cache(maxsize=1024)
def unavailable(name: str, why: str) -> FlagRule:
    """What a prerequisite that cannot be evaluated is linked as: off for everyone. The
    same object for the same name and reason, so that a flag linked to one is reused by
    the next compile like any other."""
    return FlagRule(name, everyone=False, note=why)
