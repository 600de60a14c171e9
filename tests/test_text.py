"""Vectorized JSON building and escaping: what comes out parses back to what went in."""

from __future__ import annotations

import json

import polars as pl
import pytest

from volley.text import (
    JsonPart,
    RequiredArray,
    RequiredObject,
    ascii_json_string,
    escape_non_ascii,
    json_array,
    json_object,
    json_string,
    json_string_array,
    non_ascii_characters,
)

AWKWARD = ["plain", 'quote " and back\\slash', "line\nbreak\ttab\x01\x1f", "Crème brûlée 😀 €19 抹茶", ""]


def test_json_string_round_trips_every_awkward_value() -> None:
    encoded = pl.DataFrame({"v": AWKWARD}).select(json_string(pl.col("v"))).to_series().to_list()
    assert [json.loads(text) for text in encoded] == AWKWARD


@pytest.mark.parametrize("values", [AWKWARD, ["C1", "C2", "", "Crème 😀"]], ids=["escaped", "plain"])
def test_json_string_array_gives_each_group_its_values_as_a_json_array(values: list[str]) -> None:
    frame = pl.DataFrame({"group": [i % 2 for i in range(len(values))], "v": values})
    arrays = frame.group_by("group", maintain_order=True).agg(json_string_array(frame["v"]).alias("a"))
    assert [json.loads(text) for text in arrays["a"]] == [values[0::2], values[1::2]]


def test_objects_and_arrays_leave_nulls_out() -> None:
    frame = pl.DataFrame({"a": ["x", None], "b": ["y", "z"]})
    expr = json_object(
        [("a", json_string(pl.col("a"))), ("list", json_array([json_string(pl.col("a")), json_string(pl.col("b"))]))]
    )
    assert [json.loads(t) for t in frame.select(expr).to_series()] == [{"a": "x", "list": ["x", "y"]}, {"list": ["z"]}]


def test_a_required_object_is_one_concatenation_with_nested_objects_and_constants() -> None:
    frame = pl.DataFrame({"a": AWKWARD, "b": ["1", "2", "3", "4", "5"]})
    inner = RequiredObject([("b", json_string(pl.col("b"))), ("fixed", '"const"')])
    expr = RequiredObject([("a", json_string(pl.col("a"))), ("inner", inner), ("n", "7")]).expr()
    decoded = [json.loads(text) for text in frame.select(expr).to_series()]
    expected = [{"a": a, "inner": {"b": b, "fixed": "const"}, "n": 7} for a, b in zip(AWKWARD, "12345", strict=True)]
    assert decoded == expected
    assert pl.DataFrame({"a": ["x"]}).select(RequiredObject([]).expr()).item() == "{}"


def test_a_required_array_of_objects_is_written_in_its_object_s_concatenation() -> None:
    frame = pl.DataFrame({"a": AWKWARD, "b": ["1", "2", "3", "4", "5"]})
    items: list[JsonPart | RequiredObject] = [
        RequiredObject([("name", '"A"'), ("value", json_string(pl.col("a")))]),
        json_string(pl.col("b")),
    ]
    expr = RequiredObject([("data", RequiredArray(items)), ("none", RequiredArray([]))]).expr()
    decoded = [json.loads(text) for text in frame.select(expr).to_series()]
    expected = [{"data": [{"name": "A", "value": a}, b], "none": []} for a, b in zip(AWKWARD, "12345", strict=True)]
    assert decoded == expected


def test_a_required_object_with_a_null_value_is_null() -> None:
    frame = pl.DataFrame({"a": ["x", None]})
    expr = RequiredObject([("a", json_string(pl.col("a"))), ("k", "1")]).expr()
    assert frame.select(expr).to_series().to_list() == ['{"a":"x","k":1}', None]


def test_non_ascii_becomes_utf16_escapes_and_stays_valid_json() -> None:
    assert escape_non_ascii("€ é 😀") == "\\u20AC \\u00E9 \\uD83D\\uDE00"
    frame = pl.DataFrame({"v": [*AWKWARD, None]})
    characters = non_ascii_characters(frame["v"])
    assert characters == sorted(set("èéû😀€抹茶"))
    encoded = frame.select(ascii_json_string(frame["v"])).to_series().to_list()
    assert encoded[-1] is None
    encoded = encoded[:-1]
    assert all(text.isascii() for text in encoded)
    assert [json.loads(text) for text in encoded] == AWKWARD


def test_a_column_of_few_distinct_non_ascii_values_is_escaped_value_by_value() -> None:
    values = ["Zoë", "Søren", "Mia", None, "東京 Tote 😀"] * 30  # 3 distinct to escape in 150 rows
    frame = pl.DataFrame({"v": values})
    encoded = frame.select(ascii_json_string(frame["v"])).to_series().to_list()
    assert encoded[:5] == ['"Zo\\u00EB"', '"S\\u00F8ren"', '"Mia"', None, '"\\u6771\\u4EAC Tote \\uD83D\\uDE00"']
    assert [None if text is None else json.loads(text) for text in encoded] == values


@pytest.mark.parametrize(
    "values",
    [["C1", "SKU-001", ""], ["Zoë", "東京 Tote", "Party 🎉"], ['say "hi"', "a\\b", "tab\t"]],
    ids=["nothing-to-escape", "non-ascii-only", "json-escapes-only"],
)
def test_ascii_json_string_escapes_only_what_the_column_needs(values: list[str]) -> None:
    frame = pl.DataFrame({"v": values})
    encoded = frame.select(ascii_json_string(frame["v"])).to_series().to_list()
    assert all(text.isascii() for text in encoded)
    assert [json.loads(text) for text in encoded] == values
