"""Column-to-text conversions shared by connectors (vectorized)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import polars as pl

__all__ = [
    "JsonPart",
    "RequiredArray",
    "RequiredObject",
    "as_text",
    "ascii_json_string",
    "escape_non_ascii",
    "json_array",
    "json_object",
    "json_string",
    "json_string_array",
    "json_string_arrays",
    "json_value",
    "non_ascii_characters",
]

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """A column as text: datetimes as `YYYY-MM-DD HH:MM:SS`, dates ISO, the rest by cast; blanks are null."""
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        text = column.dt.to_string("%Y-%m-%d %H:%M:%S")
    elif isinstance(dtype, pl.Date):
        text = column.dt.to_string("%Y-%m-%d")
    elif dtype.is_nested():
        raise TypeError(f"column {name!r} holds {dtype}; expected text, numbers or dates")
    else:
        text = column.cast(pl.String, strict=False)
    text = text.str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def _escape_char(match: re.Match[str]) -> str:
    units = match.group(0).encode("utf-16-be")
    return "".join(f"\\u{units[i]:02X}{units[i + 1]:02X}" for i in range(0, len(units), 2))


def escape_non_ascii(text: str) -> str:
    """JSON text with every non-ASCII character written as a `\\uXXXX` escape (UTF-16 units)."""
    return _NON_ASCII.sub(_escape_char, text)


def _non_ascii_values(values: pl.Series) -> pl.Series:
    """The distinct values of a text column that hold a non-ASCII character (found by byte length
    against character length, which is cheaper than a regex on every row)."""
    return values.filter(values.str.len_bytes() != values.str.len_chars()).unique()


def non_ascii_characters(values: pl.Series) -> list[str]:
    """The distinct non-ASCII characters of a text column, looked for only in the distinct values
    that hold any (names repeat: the regex on distinct values only measured 4 ms instead of 22 ms
    for the bench audience's 100k product names)."""
    affected = _non_ascii_values(values)
    if affected.is_empty():
        return []
    return affected.str.extract_all(r"[^\x00-\x7F]").explode().drop_nulls().unique().sort().to_list()


_CONTROL = [chr(code) for code in range(0x20)]
_SPECIAL = ["\\", '"', *_CONTROL]
_SPECIAL_ESCAPES = [json.dumps(character)[1:-1] for character in _SPECIAL]


def _quoted(text: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit('"'), text, pl.lit('"')])


def _needs_json_escapes(values: pl.Series) -> bool:
    """Whether some value holds a character `json_string` escapes (a quote, a backslash, a control)."""
    return bool(values.str.contains_any(_SPECIAL).any())


def json_string(value: pl.Expr) -> pl.Expr:
    """A text column as JSON string literals (quotes, backslashes and control characters escaped).

    Null stays null, so that `json_object` and `json_array` can leave it out. Written with
    polars string kernels: about ten times faster here than `struct.json_encode` on lists.
    """
    return _quoted(value.str.replace_many(_SPECIAL, _SPECIAL_ESCAPES))  # one pass for all of them


_FEW = 20  # `ascii_json_string` escapes value by value when a column has at most one such value in _FEW rows


def ascii_json_string(values: pl.Series) -> pl.Expr:
    """The column `values` as JSON string literals in ASCII (as Responsys wants them): `json_string`'s
    escapes, and each non-ASCII character as `\\uXXXX`. The characters to escape are looked for
    first, so that a column needs at most one replacing pass and one with none (keys, codes, most
    names) is only quoted: 122 -> 94 ms of CPU for the bench audience's four columns, 250k rows.
    """
    column = pl.col(values.name)
    special, escapes = (_SPECIAL, _SPECIAL_ESCAPES) if _needs_json_escapes(values) else ([], [])
    affected = _non_ascii_values(values)
    if not special and affected.is_empty():
        return _quoted(column)
    if not special and affected.len() * _FEW <= values.len():
        # Few distinct values to escape (names, products): each escaped once, and the rows looked up
        # by value, rather than every row searched for every character (the bench audience's four
        # columns, 100k rows, 12 and 16 distinct names: 64 -> 55 ms of CPU, measured interleaved).
        originals = affected.to_list()
        return _quoted(column.replace(originals, [escape_non_ascii(text) for text in originals]))
    non_ascii = non_ascii_characters(affected)
    escapes = [*escapes, *(escape_non_ascii(character) for character in non_ascii)]
    return _quoted(column.str.replace_many([*special, *non_ascii], escapes))


def json_string_array(values: pl.Series) -> pl.Expr:
    """An aggregation: the group's values of the `values` column as one JSON array of strings.

    Where no value has a character to escape (as keys usually have not), the array is written
    without `json_string`'s escaping pass: looking for one costs a fifth of that pass (measured).
    """
    column = pl.col(values.name)
    if _needs_json_escapes(values):
        return pl.format("[{}]", json_string(column).str.join(","))
    return pl.format('["{}"]', column.str.join('","'))


def json_string_arrays(values: pl.Series, width: int) -> pl.Series:
    """The text column `values`, `width` values at a time in order, as JSON arrays of strings (its
    length a multiple of `width`): `json_string_array` for runs of equal length, without grouping."""
    if _needs_json_escapes(values):
        quoted = values.to_frame().select(json_string(pl.col(values.name))).to_series()
        return "[" + quoted.reshape((-1, width)).arr.join(",") + "]"
    return '["' + values.reshape((-1, width)).arr.join('","') + '"]'


def json_value(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A column of `dtype` as JSON values: text by `json_string`, anything else (numbers, booleans)
    as `struct.json_encode` writes it. Null stays null."""
    if dtype == pl.String:
        return json_string(value)
    encoded = pl.struct(value.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(value.is_null()).then(None).otherwise(encoded)


def json_object(fields: Sequence[tuple[str, pl.Expr]]) -> pl.Expr:
    """`{"key": value, ...}` from already-encoded JSON values; a null value leaves its key out.

    Keys are written as UTF-8, as `struct.json_encode` writes them (`ascii_json_string`
    makes values ASCII where a vendor wants that).
    """
    if not fields:
        return pl.lit("{}")
    members = [pl.concat_str([pl.lit(json.dumps(key, ensure_ascii=False) + ":"), value]) for key, value in fields]
    return pl.concat_str([pl.lit("{"), pl.concat_str(members, separator=",", ignore_nulls=True), pl.lit("}")])


JsonPart = str | pl.Expr
"""Encoded JSON: literal text, or an expression of it."""


class RequiredObject:
    """`{"key": value, ...}` whose values are never null (validated before encoding), kept as
    the list of its parts so that objects nested in it are written by the same concatenation.

    `json_object` builds each member, then the member list, then the braces, each a new column:
    one concatenation of the whole Responsys payload took its encoding from 171-195 to about
    120 ms CPU per 100k rows of the bench audience.
    """

    parts: list[JsonPart]

    def __init__(self, fields: Sequence[tuple[str, JsonPart | RequiredObject | RequiredArray]]) -> None:
        parts: list[JsonPart] = []
        for position, (key, value) in enumerate(fields):
            parts.append(("{" if position == 0 else ",") + json.dumps(key, ensure_ascii=False) + ":")
            parts.extend(value.parts if isinstance(value, RequiredObject | RequiredArray) else [value])
        parts.append("}" if fields else "{}")
        self.parts = parts

    def expr(self) -> pl.Expr:
        """The object as one concatenation (a null value makes it null)."""
        merged: list[pl.Expr] = []
        text = ""
        for part in self.parts:
            if isinstance(part, str):
                text += part
                continue
            if text:
                merged.append(pl.lit(text))
                text = ""
            merged.append(part)
        if text:
            merged.append(pl.lit(text))
        return pl.concat_str(merged)


class RequiredArray:
    """`[item, ...]` whose items are never null, kept as parts like `RequiredObject`, which writes it
    in its own concatenation: `json_array`, which leaves null items out, makes each item, then
    their list, then the brackets, each a new column."""

    parts: list[JsonPart]

    def __init__(self, items: Sequence[JsonPart | RequiredObject]) -> None:
        parts: list[JsonPart] = ["["]
        for position, item in enumerate(items):
            if position:
                parts.append(",")
            parts.extend(item.parts if isinstance(item, RequiredObject) else [item])
        parts.append("]")
        self.parts = parts


def json_array(items: Sequence[pl.Expr]) -> pl.Expr:
    """`[item, ...]` from already-encoded JSON values; null items are left out."""
    if not items:
        return pl.lit("[]")
    return pl.concat_str([pl.lit("["), pl.concat_str(list(items), separator=",", ignore_nulls=True), pl.lit("]")])
