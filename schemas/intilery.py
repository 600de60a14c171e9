"""The Intilery audience, as prepared by the Intilery connector.

Columns: `userId`, `event` (lower-cased), `assetId`, `journeyIdToTrigger`, `stepIdToTrigger`,
`timestamp` (ISO-8601 UTC text) and `merge:<name>` (merge data, in the column's own type: not
checked here). `send_*` commands need an assetId, `start_journey` a journeyIdToTrigger.
"""

from __future__ import annotations

from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.typing.polars import Series

__all__ = ["COMMANDS", "MERGE_PREFIX", "SEND_COMMANDS", "TIMESTAMP_FORMAT", "IntileryAudience"]

SEND_COMMANDS: tuple[str, ...] = ("send_email", "send_sms", "send_print", "send_push")
COMMANDS: tuple[str, ...] = (*SEND_COMMANDS, "start_journey")
MERGE_PREFIX = "merge:"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
_ISO_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$"


class IntileryAudience(pa.DataFrameModel):
    recipient_key: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    userId: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 1024})
    event: Series[str] = pa.Field(nullable=False, isin=list(COMMANDS))
    assetId: Series[str] = pa.Field(nullable=True, str_length={"min_value": 1, "max_value": 255})
    journeyIdToTrigger: Series[str] = pa.Field(nullable=True, str_length={"min_value": 1, "max_value": 255})
    stepIdToTrigger: Series[str] = pa.Field(nullable=True, str_length={"min_value": 1, "max_value": 255})
    timestamp: Series[str] = pa.Field(nullable=True, str_matches=_ISO_UTC)

    class Config:
        strict = False

    @pa.check("timestamp", name="is_a_date")
    @classmethod
    def timestamp_is_a_date(cls, data: Any) -> pl.LazyFrame:
        """2019-02-30T00:00:00Z has the shape but is no date."""
        frame: pl.LazyFrame = data.lazyframe
        value = pl.col(data.key)
        parsed = value.str.strptime(pl.Datetime("us"), TIMESTAMP_FORMAT, strict=False)
        return frame.select(value.is_null() | parsed.is_not_null())

    @pa.dataframe_check(name="assetId_required_for_send")
    @classmethod
    def send_needs_asset(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        return frame.select(
            ~pl.col("event").is_in(list(SEND_COMMANDS)).fill_null(False) | pl.col("assetId").is_not_null()
        )

    @pa.dataframe_check(name="journeyIdToTrigger_required_for_start_journey")
    @classmethod
    def journey_needs_id(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        return frame.select(
            (pl.col("event") != "start_journey").fill_null(True) | pl.col("journeyIdToTrigger").is_not_null()
        )
