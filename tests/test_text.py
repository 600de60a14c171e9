"""Vectorized JSON building and escaping: what comes out parses back to what went in."""

from __future__ import annotations

import json

import polars as pl

from volley.text import (
    escape_characters,
    escape_non_ascii,
    json_array,
    json_object,
    json_string,
    non_ascii_characters,
)

AWKWARD = ["plain", 'quote " and back\\slash', "line\nbreak\ttab\x01\x1f", "Crème brûlée 😀 €19 抹茶", ""]


def test_json_string_round_trips_every_awkward_value() -> None:
    encoded = pl.DataFrame({"v": AWKWARD}).select(json_string(pl.col("v"))).to_series().to_list()
    assert [json.loads(text) for text in encoded] == AWKWARD


def test_objects_and_arrays_leave_nulls_out() -> None:
    frame = pl.DataFrame({"a": ["x", None], "b": ["y", "z"]})
    expr = json_object(
        [("a", json_string(pl.col("a"))), ("list", json_array([json_string(pl.col("a")), json_string(pl.col("b"))]))]
    )
    assert [json.loads(t) for t in frame.select(expr).to_series()] == [{"a": "x", "list": ["x", "y"]}, {"list": ["z"]}]


def test_non_ascii_becomes_utf16_escapes_and_stays_valid_json() -> None:
    assert escape_non_ascii("€ é 😀") == "\\u20AC \\u00E9 \\uD83D\\uDE00"
    frame = pl.DataFrame({"v": [*AWKWARD, None]})
    characters = non_ascii_characters(frame["v"])
    assert characters == sorted(set("èéû😀€抹茶"))
    encoded = frame.select(escape_characters(json_string(pl.col("v")), characters)).to_series().to_list()
    assert encoded[-1] is None
    encoded = encoded[:-1]
    assert all(text.isascii() for text in encoded)
    assert [json.loads(text) for text in encoded] == AWKWARD
