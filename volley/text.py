"""Column-to-text conversions shared by connectors (vectorized)."""

from __future__ import annotations

import re

import polars as pl

__all__ = ["as_text", "escape_non_ascii", "escape_non_ascii_series"]

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


def escape_non_ascii_series(series: pl.Series) -> pl.Series:
    """Escape only the rows that need it; most audiences are ASCII and stay vectorized."""
    needs = series.str.contains(r"[^\x00-\x7F]").fill_null(False)
    if not needs.any():
        return series
    positions = needs.arg_true()
    fixed = pl.Series([escape_non_ascii(text) for text in series.gather(positions).to_list()], dtype=pl.String)
    return series.scatter(positions, fixed)
