"""Split an audience into valid rows and `invalid` outcomes with pandera.

Pandera's polars backend is asked for every failure (lazy=True); rows are split by the
`index` of the failure cases, never by coerce/drop_invalid_rows (see docs/DECISIONS.md).
"""

from __future__ import annotations

import re

import pandera.errors
import polars as pl
from pandera.api.polars.model import DataFrameModel

from volley.errors import SourceError

__all__ = ["split_invalid"]

_CHECK_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)")


def split_invalid(frame: pl.DataFrame, model: type[DataFrameModel], source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (valid rows, failures) where failures has one row per invalid position:
    `position` (0-based in `frame`), `error_code` and `error_message`."""
    try:
        model.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return frame, _no_failures()
    schema_level = cases.filter(pl.col("index").is_null())
    if schema_level.height:
        first = schema_level.row(0, named=True)
        raise SourceError(f"{source}: column {first['column']}: {first['check']}")
    column = pl.when(pl.col("schema_context") == "DataFrameSchema").then(pl.lit(None)).otherwise(pl.col("column"))
    check = pl.col("check").cast(pl.String).str.extract(_CHECK_NAME.pattern, 1)
    failures = (
        cases.with_columns(
            pl.col("index").cast(pl.Int64).alias("position"),
            pl.concat_str([column, check], separator=".", ignore_nulls=True).alias("code"),
            pl.concat_str([column, pl.col("check").cast(pl.String)], separator=": ", ignore_nulls=True).alias(
                "message"
            ),
        )
        .group_by("position")
        .agg(
            pl.col("code").sort().first().alias("error_code"),
            pl.col("message").unique().sort().str.join("; ").alias("error_message"),
        )
        .sort("position")
    )
    keep = pl.int_range(pl.len(), dtype=pl.Int64).is_in(failures["position"].implode()).not_()
    return frame.filter(keep), failures


def _no_failures() -> pl.DataFrame:
    return pl.DataFrame(schema={"position": pl.Int64, "error_code": pl.String, "error_message": pl.String})
