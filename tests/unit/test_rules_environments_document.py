"""The environments document, validated in full (django_zkflags/rules.py): every broken form
an operator can type is an InvalidFlag with a clear message, never another exception."""

from __future__ import annotations

import pytest

from django_zkflags.rules import (
    InvalidFlag,
    environment_chain,
    validate_environments_document,
)


def very_deep(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "doc, expected",
    [
        ({}, {"parents": {}, "hosts": {}}),
        ({"parents": {}}, {"parents": {}, "hosts": {}}),
        ({"hosts": {}}, {"parents": {}, "hosts": {}}),
        (
            {"parents": {"production": None, "canary": "production"}, "hosts": {"web-7": "canary"}},
            {"parents": {"production": None, "canary": "production"}, "hosts": {"web-7": "canary"}},
        ),
        (
            {"parents": {"a": None}, "hosts": {"web-1.eu.example.com": "a", "WEB_2": "a"}},
            {"parents": {"a": None}, "hosts": {"web-1.eu.example.com": "a", "WEB_2": "a"}},
        ),
    ],
)
def test_valid_documents(doc, expected):
    assert validate_environments_document(doc) == expected


@pytest.mark.parametrize(
    "doc, message",
    [
        # Not an object.
        ([], "must be a JSON object, got list"),
        ("production", "must be a JSON object, got str"),
        (None, "must be a JSON object, got NoneType"),
        (7, "must be a JSON object, got int"),
        # Unknown keys.
        ({"parent": {}}, "unknown key(s) ['parent']"),
        ({"parents": {}, "hosts": {}, "x": 1}, "unknown key(s) ['x']"),
        # Wrong types of 'parents' and 'hosts'.
        ({"parents": []}, "'parents' must be a JSON object, got []"),
        ({"parents": None}, "'parents' must be a JSON object, got None"),
        ({"parents": "a"}, "'parents' must be a JSON object, got 'a'"),
        ({"hosts": ["web-1"]}, "'hosts' must be a JSON object, got ['web-1']"),
        ({"hosts": 0}, "'hosts' must be a JSON object, got 0"),
        # Environment names.
        ({"parents": {"bad name": None}}, "Invalid environment name 'bad name'"),
        ({"parents": {"": None}}, "Invalid environment name ''"),
        ({"parents": {"..": None}}, "Invalid environment name '..'"),
        # Parents of the wrong type (the issue's {"parents": {"a": ["x"]}}).
        (
            {"parents": {"a": ["x"]}},
            "parent of environment 'a' must be an environment name or null",
        ),
        ({"parents": {"a": 1}}, "parent of environment 'a' must be an environment name or null"),
        ({"parents": {"a": {"b": None}}}, "must be an environment name or null"),
        ({"parents": {"a": True}}, "must be an environment name or null"),
        # Undefined parents.
        ({"parents": {"a": "missing"}}, "Environment 'a' has an undefined parent 'missing'"),
        ({"parents": {"a": ""}}, "undefined parent ''"),
        # Cycles of any length, a self-parent included.
        ({"parents": {"s": "s"}}, "Environment 's' is its own parent"),
        ({"parents": {"a": None, "s": "s"}}, "Environment 's' is its own parent"),
        ({"parents": {"a": "b", "b": "a"}}, "cycle of parents: 'a' -> 'b' -> 'a'"),
        ({"parents": {"a": "b", "b": "c", "c": "a"}}, "'a' -> 'b' -> 'c' -> 'a'"),
        # A cycle reached through a tail: the cycle is named, not the tail.
        ({"parents": {"t": "b", "b": "c", "c": "b"}}, "'b' -> 'c' -> 'b'"),
        ({"parents": {"root": None, "x": "root", "p": "q", "q": "p"}}, "'p' -> 'q' -> 'p'"),
        # Hosts.
        (
            {"parents": {"a": None}, "hosts": {"web-1": "nowhere"}},
            "undefined environment 'nowhere'",
        ),
        (
            {"parents": {"a": None}, "hosts": {"web-1": ["a"]}},
            "pegged to an environment name, got ['a']",
        ),
        (
            {"parents": {"a": None}, "hosts": {"web-1": None}},
            "pegged to an environment name, got None",
        ),
        ({"parents": {"a": None}, "hosts": {"": "a"}}, "Invalid host name ''"),
        ({"parents": {"a": None}, "hosts": {"web 1": "a"}}, "Invalid host name 'web 1'"),
        ({"parents": {"a": None}, "hosts": {"web/1": "a"}}, "Invalid host name 'web/1'"),
        ({"parents": {"a": None}, "hosts": {"web\n1": "a"}}, "Invalid host name"),
        ({"parents": {"a": None}, "hosts": {"w" * 256: "a"}}, "Invalid host name"),
        ({"parents": {}, "hosts": {"web-1": "a"}}, "undefined environment 'a'"),
    ],
)
def test_every_broken_form_is_an_invalid_flag_with_a_clear_message(doc, message):
    with pytest.raises(InvalidFlag) as raised:
        validate_environments_document(doc)
    assert message in str(raised.value)


def test_a_long_cycle_and_a_long_chain():
    names = [f"e{i}" for i in range(2000)]
    chain = {name: (names[i - 1] if i else None) for i, name in enumerate(names)}
    assert validate_environments_document({"parents": chain})["parents"] == chain
    assert environment_chain("e1999", chain) == tuple(names)
    looped = {**chain, "e0": "e1999"}
    with pytest.raises(InvalidFlag, match="cycle of parents: 'e0' -> 'e1999' -> 'e1998'"):
        validate_environments_document({"parents": looped})


def test_deeply_nested_input_gives_a_short_message_not_a_recursion_error():
    for doc in (
        {"parents": {"a": very_deep(100_000)}},
        {"parents": {"a": None}, "hosts": {"h": very_deep(100_000)}},
        {"parents": very_deep(100_000)},
        {"parents": {"a": None}, "hosts": {"h": None}, "extra": very_deep(100_000)},
    ):
        with pytest.raises(InvalidFlag) as raised:
            validate_environments_document(doc)
        assert len(str(raised.value)) < 300


def test_environment_chain_of_a_document_nobody_validated_ends_instead_of_raising():
    # What a process resolves with the environments copied into a hand-written snapshot.
    assert environment_chain("s", {"s": "s"}) == ("s",)
    assert environment_chain("a", {"a": ["x"]}) == ("a",)
    assert environment_chain("a", {"a": {"b": 1}}) == ("a",)
    assert environment_chain("b", {"a": "b", "b": "a"}) == ("a", "b")
    assert environment_chain(None, {"a": None}) == ()
