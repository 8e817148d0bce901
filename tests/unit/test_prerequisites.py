"""Prerequisites (``"requires"``) in the pure parts: the document field and its validation,
``FlagRule.describes`` with it, linking when a snapshot is compiled
(``snapshot.compile_entries`` / ``link_prerequisites``), the one evaluator with linked rules,
cycles and missing prerequisites written by hand, and the save-time graph check
(``rules.prerequisite_problems``, ``services.check_prerequisites``).

No ZooKeeper: entries are compiled in the test. Saves refused through ZooKeeper, the admin,
the command and the ORM: tests/integration/test_prerequisites.py.
"""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import AnonymousUser

from django_zkflags.cache import store
from django_zkflags.evaluation import evaluate, first_off_prerequisite
from django_zkflags.exceptions import FlagRequired
from django_zkflags.rules import (
    CYCLIC_PREREQUISITE,
    MAX_PREREQUISITES,
    MISSING_PREREQUISITE,
    FlagRule,
    InvalidFlag,
    LinkedRule,
    PrerequisiteError,
    bucket,
    prerequisite_problems,
    strongly_connected,
)
from django_zkflags.snapshot import EMPTY, Snapshot, compile_entries
from django_zkflags.testing import override_flag


def entry(name: str, version: int = 0, **fields):
    return {**FlagRule(name, **fields).to_document(), "version": version}


class User:
    """A duck-typed authenticated user (no database)."""

    is_authenticated = True
    is_staff = False
    is_superuser = False

    def __init__(self, pk: int) -> None:
        self.pk = pk


# -- the document field ---------------------------------------------------------------------


def test_requires_and_public_are_left_out_when_unset():
    doc = FlagRule("a", everyone=True).to_document()
    assert "requires" not in doc and "public" not in doc
    full = FlagRule("a", requires=["b", "c"], public=True).to_document()
    assert full["requires"] == ["b", "c"] and full["public"] is True
    assert FlagRule.from_document(full).to_document() == full  # round trip, order kept


def test_a_document_written_before_the_fields_existed_is_the_same_rule():
    old = {"name": "a", "everyone": None, "percent": 5.0, "superusers": False, "staff": False}
    old.update({"authenticated": False, "users": [], "groups": [], "note": ""})
    rule = FlagRule.from_document(old)
    assert rule.requires == () and rule.public is False
    assert rule.to_document() == old


@pytest.mark.parametrize(
    ("requires", "message"),
    [
        ("b", "must be a list of flag names"),
        ({"b": 1}, "must be a list of flag names"),
        ([1], "Invalid flag name 1 in 'requires'"),
        (["bad name"], "Invalid flag name 'bad name'"),
        (["a"], "cannot require itself"),
        (["b", "b"], "requires 'b' twice"),
    ],
)
def test_requires_is_validated(requires, message):
    with pytest.raises(InvalidFlag, match=message):
        FlagRule.from_document({"name": "a", "requires": requires})


def test_public_must_be_a_boolean():
    with pytest.raises(InvalidFlag, match="'public' must be true or false"):
        FlagRule.from_document({"name": "a", "public": "yes"})


def test_prerequisites_and_public_are_not_overridable_per_environment():
    for field, value in (("requires", ["b"]), ("public", True)):
        with pytest.raises(InvalidFlag, match="overrides unknown field"):
            FlagRule("a", environments={"staging": {field: value}})


def test_an_environment_override_keeps_the_prerequisites():
    rule = FlagRule("a", requires=["b"], public=True, environments={"prod": {"everyone": True}})
    resolved = rule.for_environment(("prod",))
    assert resolved.everyone is True and resolved.requires == ("b",) and resolved.public


def test_summary_names_the_prerequisites():
    assert FlagRule("a", percent=10.0, requires=["b"]).summary() == "10% (requires b)"
    assert FlagRule("a", everyone=False, requires=["b"]).summary() == "off for everyone"


# -- describes: unchanged rules are still reused --------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"everyone": True}, {"percent": 5.0, "requires": ["b"]}, {"public": True}],
)
def test_an_unchanged_entry_still_reuses_its_rule(fields):
    entries = {"a": entry("a", 3, **fields), "b": entry("b")}
    first, _ = compile_entries(entries)
    again, _ = compile_entries({k: dict(v) for k, v in entries.items()}, previous=first)
    assert again["a"] is first["a"] and again["b"] is first["b"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {"requires": ["b"]}),
        ({"requires": ["b"]}, {"requires": ["b", "c"]}),
        ({"requires": ["b", "c"]}, {"requires": ["c", "b"]}),
        ({"requires": ["b"]}, {}),
        ({}, {"public": True}),
        ({"public": True}, {}),
        ({"requires": ["b"], "public": True}, {"requires": ["b"]}),
    ],
)
def test_the_same_version_with_other_prerequisites_or_exposure_is_compiled_again(before, after):
    entries = {"a": entry("a", 0, **before), "b": entry("b"), "c": entry("c")}
    first, _ = compile_entries(entries)
    entries["a"] = entry("a", 0, **after)
    again, _ = compile_entries(entries, previous=first)
    assert again["a"] is not first["a"]
    assert again["a"].to_document() == {k: v for k, v in entries["a"].items() if k != "version"}


def test_an_entry_of_the_plain_size_with_other_keys_is_not_taken_for_the_rule():
    first, _ = compile_entries({"a": entry("a", 0, requires=["b"]), "b": entry("b")})
    plain = entry("a", 0)
    assert len(plain) == 10
    assert not first["a"].describes(plain)


# -- linking when a snapshot is compiled ----------------------------------------------------


def test_flags_without_prerequisites_stay_plain_rules():
    flags, errors = compile_entries({"a": entry("a", everyone=True), "b": entry("b")})
    assert type(flags["a"]) is FlagRule and type(flags["b"]) is FlagRule and not errors


def test_a_dependent_is_linked_to_the_rules_of_its_prerequisites():
    flags, errors = compile_entries(
        {"d": entry("d", everyone=True, requires=["p", "q"]), "p": entry("p"), "q": entry("q")}
    )
    d = flags["d"]
    assert isinstance(d, LinkedRule) and not errors
    assert d.prerequisites[0] is flags["p"] and d.prerequisites[1] is flags["q"]
    assert d.unlinked.requires == ("p", "q") and d.base is d.unlinked


def test_a_chain_is_linked_to_the_final_rules():
    flags, _ = compile_entries(
        {"a": entry("a", requires=["b"]), "b": entry("b", requires=["c"]), "c": entry("c")}
    )
    assert flags["a"].prerequisites[0] is flags["b"]
    assert flags["b"].prerequisites[0] is flags["c"]


def test_a_changed_prerequisite_relinks_its_dependents_and_only_them():
    entries = {
        "d": entry("d", everyone=True, requires=["p"]),
        "e": entry("e", everyone=True, requires=["q"]),
        "p": entry("p", everyone=True),
        "q": entry("q", everyone=True),
    }
    first, _ = compile_entries(entries)
    entries["p"] = entry("p", 1, everyone=False)
    again, _ = compile_entries(entries, previous=first)
    assert again["d"] is not first["d"] and again["d"].prerequisites[0] is again["p"]
    assert again["e"] is first["e"] and again["q"] is first["q"]
    assert evaluate(Snapshot(again), "d", None) is False
    assert evaluate(Snapshot(again), "e", None) is True


def test_an_environment_chain_links_the_resolved_prerequisites():
    entries = {
        "d": entry("d", everyone=True, requires=["p"]),
        "p": entry("p", everyone=False, environments={"staging": {"everyone": True}}),
    }
    production, _ = compile_entries(entries, chain=("production",))
    staging, _ = compile_entries(entries, chain=("staging",))
    assert evaluate(Snapshot(production), "d", None) is False
    assert evaluate(Snapshot(staging), "d", None) is True


# -- hand-written cycles and missing prerequisites ------------------------------------------


def test_a_missing_prerequisite_turns_the_flag_off_and_is_reported():
    flags, errors = compile_entries({"d": entry("d", everyone=True, requires=["gone"])})
    assert evaluate(Snapshot(flags), "d", None) is False
    assert "requires 'gone', not in the snapshot" in errors["d"]
    off = first_off_prerequisite(Snapshot(flags), "d", None)
    assert off is not None and off.name == "gone" and off.note == MISSING_PREREQUISITE


@pytest.mark.parametrize("length", [2, 3, 50])
def test_a_cycle_of_any_length_is_off_and_reported_without_hanging(length):
    names = [f"f{i}" for i in range(length)]
    entries = {
        name: entry(name, everyone=True, requires=[names[(i + 1) % length]])
        for i, name in enumerate(names)
    }
    entries["outside"] = entry("outside", everyone=True, requires=["f0"])
    entries["free"] = entry("free", everyone=True)
    result: dict = {}

    def compile_and_check() -> None:
        flags, errors = compile_entries(entries)
        snapshot = Snapshot(flags)
        result["answers"] = {name: evaluate(snapshot, name, None) for name in flags}
        result["errors"] = errors
        result["off"] = first_off_prerequisite(snapshot, "f0", None)

    worker = threading.Thread(target=compile_and_check, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "compiling or evaluating a cycle hung"
    answers, errors = result["answers"], result["errors"]
    assert not any(answers[name] for name in names) and answers["outside"] is False
    assert answers["free"] is True
    assert set(errors) == set(names)  # "outside" is not broken: its prerequisite is off
    assert "in a cycle of prerequisites ('f0' -> 'f1'" in errors["f0"]
    assert result["off"].name == "f1" and result["off"].note == CYCLIC_PREREQUISITE


def test_a_long_hand_written_chain_neither_recurses_nor_hangs():
    """20,000 flags each requiring the next: linked without recursion; a flag depending on
    more than MAX_PREREQUISITES flags is off and reported, the others answer."""
    n = 20_000
    entries = {f"c{i}": entry(f"c{i}", everyone=True, requires=[f"c{i + 1}"]) for i in range(n)}
    entries[f"c{n}"] = entry(f"c{n}", everyone=True)
    flags, errors = compile_entries(entries)
    snapshot = Snapshot(flags)
    assert evaluate(snapshot, f"c{n - MAX_PREREQUISITES}", None) is True
    assert evaluate(snapshot, f"c{n - MAX_PREREQUISITES - 1}", None) is False
    assert not any(evaluate(snapshot, f"c{i}", None) for i in range(n - MAX_PREREQUISITES))
    assert "depends on more than 64 flags" in errors[f"c{n - MAX_PREREQUISITES - 1}"]


def test_a_diamond_ladder_is_evaluated_once_per_flag():
    """Each level requires both flags of the level below: 2**30 paths, 60 flags below."""
    entries = {"l30a": entry("l30a", everyone=True), "l30b": entry("l30b", everyone=True)}
    for level in range(30):
        below = [f"l{level + 1}a", f"l{level + 1}b"]
        for side in "ab":
            entries[f"l{level}{side}"] = entry(f"l{level}{side}", everyone=True, requires=below)
    flags, errors = compile_entries(entries)
    assert not errors
    assert len(flags["l0a"].closure) == 60
    assert evaluate(Snapshot(flags), "l0a", None) is True


def test_first_off_prerequisite_names_the_flag_whose_own_rules_fail():
    flags, _ = compile_entries(
        {
            "d": entry("d", everyone=True, requires=["p"]),
            "p": entry("p", everyone=True, requires=["q"]),
            "q": entry("q", staff=True),
        }
    )
    off = first_off_prerequisite(Snapshot(flags), "d", User(1))
    assert off is not None and off.name == "q"
    assert [rule.name for rule in flags["d"].closure] == ["p", "q"]


def test_strongly_connected_puts_prerequisites_first():
    order = strongly_connected({"a": ["b"], "b": ["c"], "c": [], "x": ["y"], "y": ["x"]})
    flat = [name for component in order for name in component]
    assert flat.index("c") < flat.index("b") < flat.index("a")
    assert sorted(next(c for c in order if "x" in c)) == ["x", "y"]


# -- the one evaluator -----------------------------------------------------------------------


def test_on_only_when_its_own_rules_and_every_prerequisite_match():
    flags, _ = compile_entries(
        {
            "d": entry("d", users=[1, 2], requires=["p"]),
            "p": entry("p", users=[2, 3]),
        }
    )
    snapshot = Snapshot(flags)
    answers = {pk: evaluate(snapshot, "d", User(pk)) for pk in (1, 2, 3)}
    assert answers == {1: False, 2: True, 3: False}
    assert first_off_prerequisite(snapshot, "d", User(1)).name == "p"
    assert first_off_prerequisite(snapshot, "d", User(2)) is None


def test_everyone_on_still_needs_the_prerequisites():
    flags, _ = compile_entries({"d": entry("d", everyone=True, requires=["p"]), "p": entry("p")})
    assert evaluate(Snapshot(flags), "d", User(1)) is False


def test_a_prerequisite_percentage_buckets_the_same_anonymous_visitor(rf):
    """d (no percentage of its own) requires p at 50 %: an anonymous visitor gets an id, and
    d is on exactly when p is on for that id."""
    from django_zkflags.evaluation import RequestFlags

    flags, _ = compile_entries(
        {"d": entry("d", everyone=True, requires=["p"]), "p": entry("p", percent=50.0)}
    )
    snapshot = Snapshot(flags)
    assert snapshot.flags["d"].wants_anonymous_id
    seen = set()
    for _ in range(40):
        request = rf.get("/")
        request.user = AnonymousUser()
        request_flags = RequestFlags(request, snapshot)
        answer = request_flags.is_active("d")
        assert request_flags.new_anonymous_id  # minted for p's percentage
        visitor = request_flags.anonymous_id
        assert answer is (bucket("p", visitor) < 5000)
        assert request_flags.is_active("p") is answer
        seen.add(answer)
    assert seen == {True, False}


def test_a_plain_rule_wants_an_anonymous_id_only_for_its_percentage():
    assert FlagRule("a", percent=5.0).wants_anonymous_id
    assert not FlagRule("a", percent=5.0, everyone=True).wants_anonymous_id
    assert not FlagRule("a", staff=True).wants_anonymous_id
    flags, _ = compile_entries(
        {"d": entry("d", everyone=False, requires=["p"]), "p": entry("p", percent=5.0)}
    )
    assert not flags["d"].wants_anonymous_id  # off for everyone: nothing to bucket


def test_wants_group_ids_covers_the_prerequisites():
    flags, _ = compile_entries(
        {"d": entry("d", everyone=True, requires=["p"]), "p": entry("p", groups=[4])}
    )
    assert not FlagRule("d", everyone=True).wants_group_ids
    assert flags["d"].wants_group_ids and flags["p"].wants_group_ids


def test_group_ids_are_asked_once_for_the_flag_and_its_prerequisite():
    flags, _ = compile_entries(
        {"d": entry("d", groups=[1], requires=["p"]), "p": entry("p", groups=[1, 2])}
    )
    asked = []

    def group_ids(user):
        asked.append(user.pk)
        return {1}

    assert flags["d"].is_active(User(9), None, group_ids) is True
    assert asked == [9, 9]  # the evaluator's user_group_ids memoises on the user


def test_a_broken_link_is_reused_by_the_next_compile_too():
    entries = {"d": entry("d", everyone=True, requires=["gone"])}
    first, _ = compile_entries(entries)
    again, errors = compile_entries(dict(entries), previous=first)
    assert again["d"] is first["d"] and "gone" in errors["d"]


def test_flag_changed_names_the_flags_that_require_a_changed_one(changes):
    entries = {
        "d": entry("d", everyone=True, requires=["p"]),
        "e": entry("e", everyone=True, requires=["q"]),
        "p": entry("p", everyone=True),
        "q": entry("q", everyone=True),
    }
    first, _ = compile_entries(entries)
    store.publish(Snapshot(first, source="test"))
    try:
        entries["p"] = entry("p", 1, everyone=False)
        again, _ = compile_entries(entries, previous=first)
        store.publish(Snapshot(again, source="test"))
        assert changes[-1][0] == {"p", "d"}
    finally:
        store.publish(EMPTY)


# -- overrides in tests follow into dependents -----------------------------------------------


def test_override_flag_on_a_prerequisite_reaches_its_dependents():
    flags, _ = compile_entries(
        {"d": entry("d", everyone=True, requires=["p"]), "p": entry("p", everyone=False)}
    )
    store.publish(Snapshot(flags, source="test"))
    try:
        assert evaluate(store.current, "d", None) is False
        with override_flag("p"):
            assert evaluate(store.current, "d", None) is True
        assert evaluate(store.current, "d", None) is False
        with override_flag("d", active=False):
            assert evaluate(store.current, "d", None) is False
    finally:
        store.publish(EMPTY)


def test_override_flag_keeps_a_flag_public():
    store.publish(Snapshot({"a": FlagRule("a", public=True)}, source="test"))
    try:
        with override_flag("a"):
            assert store.current.flags["a"].public
    finally:
        store.publish(EMPTY)


# -- the save-time check --------------------------------------------------------------------


def graph(**requires):
    return {name: {"name": name, "requires": list(r)} for name, r in requires.items()}


def test_prerequisite_problems_names_the_missing_one_and_the_cycle():
    flags = graph(a=["b"], b=["c"], c=["a"], d=["nope"])
    problems = prerequisite_problems(flags, [("c", "a"), ("d", "nope")])
    assert problems == [
        "Flag 'c' cannot require 'a': a cycle ('c' -> 'a' -> 'b' -> 'c')",
        "Flag 'd' requires 'nope', which does not exist",
    ]
    assert prerequisite_problems(flags, [("a", "b")]) != []  # any edge of the cycle
    assert prerequisite_problems(graph(a=["b"], b=[]), [("a", "b")]) == []


def test_prerequisite_problems_refuses_depending_on_too_many_flags():
    chain = {f"c{i}": [f"c{i + 1}"] for i in range(MAX_PREREQUISITES)}
    chain[f"c{MAX_PREREQUISITES}"] = []
    flags = graph(**chain, top=[])
    assert prerequisite_problems(flags, [("c0", "c1")]) == []  # c0 depends on 64
    flags["top"] = {"name": "top", "requires": ["c0"]}
    assert (
        "'top' would depend on more than 64 flags"
        in prerequisite_problems(flags, [("top", "c0")])[0]
    )
    # Lengthening the chain at its end is refused for the flag at its top, too.
    flags = graph(**{**chain, f"c{MAX_PREREQUISITES}": ["extra"]}, extra=[])
    assert (
        "'c0' would depend on more than 64"
        in prerequisite_problems(flags, [(f"c{MAX_PREREQUISITES}", "extra")])[0]
    )


def test_check_prerequisites_looks_only_at_what_the_change_adds():
    from django_zkflags.services import check_prerequisites

    broken = graph(x=["y"], y=["x"], k=["gone"], a=[])
    # Editing k (a kill switch) keeps its broken prerequisite: let through.
    check_prerequisites(broken, {"k": {"name": "k", "requires": ["gone"]}})
    # Adding one is refused.
    with pytest.raises(PrerequisiteError, match="'a' requires 'gone', which does not exist"):
        check_prerequisites({**broken, "a": {"name": "a", "requires": ["gone"]}}, {"a": None})
    with pytest.raises(PrerequisiteError, match="cycle"):
        check_prerequisites(graph(a=["b"], b=["a"]), {"b": {"name": "b", "requires": []}})


def test_check_prerequisites_refuses_deleting_a_required_flag():
    from django_zkflags.services import check_prerequisites

    after = graph(d=["p"], e=["p", "q"])
    with pytest.raises(FlagRequired, match="'p' is required by 'd', 'e'"):
        check_prerequisites(after, {"p": {"name": "p"}})
    check_prerequisites(graph(e=["q"]), {"p": {"name": "p"}, "d": {"name": "d"}})
