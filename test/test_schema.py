"""The validation engine shared by the training config, dataset.yaml and the node settings."""

from __future__ import annotations

import math
import re

import pytest

from unim2_core.errors import ConfigError, DataError
from unim2_core.schema import Field, Relation, check_keys, check_relations, unknown_key_problem


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (Field(bool), 1, "must be true or false, got 1"),
        (Field(int), True, "must be an integer, got True"),
        (Field(int), 1.5, "must be an integer, got 1.5"),
        (Field(float), "1", "must be a number, got '1'"),
        (Field(float), False, "must be a number, got False"),
        (Field(float), math.inf, "must be finite, got inf"),
        (Field(str), None, "must be a string, got None"),
        (Field(str, optional=True), 3, "must be a string or null, got 3"),
        (Field(dict), [1], "must be a mapping, got [1]"),
        (Field(list, items=str), ["a", 2], "must be a list of strings, got ['a', 2]"),
        (Field(list, items=int), "ab", "must be a list of integers, got 'ab'"),
        (Field(str, choices=("a", "b")), "c", "must be one of 'a', 'b', got 'c'"),
        (Field(int, minimum=1), 0, "must be >= 1, got 0"),
        (Field(float, maximum=1.0), 1.5, "must be <= 1.0, got 1.5"),
        (Field(str, check=lambda v: None if v else "must not be empty"), "", "must not be empty"),
    ],
)
def test_field_refuses_values_outside_its_rules(field: Field, value: object, problem: str) -> None:
    assert field.problem(value) == problem
    with pytest.raises(ConfigError, match=f"^config key 'k' {re.escape(problem)}$"):
        field.parse(value, "config key 'k'")


@pytest.mark.parametrize(
    ("field", "value", "parsed"),
    [
        (Field(float), 2, 2.0),
        (Field(float, minimum=0.0, maximum=1.0), 1, 1.0),
        (Field(int, minimum=1), 1, 1),
        (Field(bool), False, False),
        (Field(str, optional=True), None, None),
        (Field(list, items=str), ["a"], ["a"]),
        (Field(dict), {"a": 1}, {"a": 1}),
        (Field(str, choices=("a", "b")), "b", "b"),
    ],
)
def test_field_accepts_and_converts_allowed_values(
    field: Field, value: object, parsed: object
) -> None:
    assert field.problem(value) is None
    result = field.parse(value, "k")
    assert result == parsed and type(result) is type(parsed)


def test_parse_raises_the_callers_error_class() -> None:
    with pytest.raises(DataError, match=r"^'f\.yaml': key 'n' must be an integer, got 'x'$"):
        Field(int).parse("x", "'f.yaml': key 'n'", DataError)


def test_unknown_keys_are_named_with_a_suggestion_and_optionally_the_known_ones() -> None:
    assert unknown_key_problem("train.lrr", ["lr", "steps"]) == (
        "unknown key 'train.lrr' (did you mean 'lr'?)"
    )
    assert unknown_key_problem("zzz", ["lr"], "config key", list_known=True) == (
        "unknown config key 'zzz'; known keys: lr"
    )
    check_keys({"lr": 1}, ["lr"])
    with pytest.raises(DataError, match=r"^'p': unknown key 'train\.stepz' \(did you mean 'steps'"):
        check_keys({"stepz": 1}, ["steps"], where="'p': ", prefix="train", error=DataError)


def _at_most(value: int, bound: int) -> str | None:
    return None if value <= bound else f"must be <= 'b' ({bound}), got {value}"


def test_relations_are_checked_in_order_and_name_the_key_they_constrain() -> None:
    values = {"a": 5, "b": 3, "c": 9}
    relations = [Relation("c", ("a",), _at_most), Relation("a", ("b",), _at_most)]
    with pytest.raises(ConfigError, match=r"^config key 'c' must be <= 'b' \(5\), got 9$"):
        check_relations(values.__getitem__, relations, noun="config key")
    values["c"] = 5
    with pytest.raises(DataError, match=r"^key 'a' must be <= 'b' \(3\), got 5$"):
        check_relations(values.__getitem__, relations, error=DataError)
    values["b"] = 5
    check_relations(values.__getitem__, relations)
