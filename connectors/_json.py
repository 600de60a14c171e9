"""JSON text built column-wise with polars: objects whose null members are left out.

`struct.json_encode` writes a null member as `"name":null`; vendors that take
`Map<String,String>` or "any root field is merge data" want it absent instead. Each member
is encoded on its own (`{"name":value}` with the braces stripped) and the members of a row
are joined with `concat_str(..., ignore_nulls=True)`: no per-row Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import polars as pl

__all__ = ["json_member", "json_object", "raw_member"]


def json_member(name: str, value: pl.Expr) -> pl.Expr:
    """`"name":<value as JSON>`, or null when the value is null (any dtype json_encode takes)."""
    encoded = pl.struct(value.alias(name)).struct.json_encode().str.strip_prefix("{").str.strip_suffix("}")
    return pl.when(value.is_null()).then(None).otherwise(encoded)


def raw_member(name: str, json_text: pl.Expr) -> pl.Expr:
    """`"name":<json_text>` for a value already written as JSON text (an object, a number)."""
    prefix = orjson.dumps(name).decode() + ":"
    return pl.when(json_text.is_null()).then(None).otherwise(pl.concat_str([pl.lit(prefix), json_text]))


def json_object(members: Sequence[pl.Expr]) -> pl.Expr:
    """`{...}` of the non-null members, in order (`{}` when every member is null)."""
    if not members:
        return pl.lit("{}")
    return pl.concat_str([pl.lit("{"), pl.concat_str(list(members), separator=",", ignore_nulls=True), pl.lit("}")])
