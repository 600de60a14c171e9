"""The Relay audience, as prepared by the Relay connector (all text).

`trigger_id` and `ccid` are required and at most 100 characters (they may be path segments);
`client_message_tag` at most 100. Input parameters are the `input_*` columns. An input mapped
from another column (`first_name` -> `input_first_name`) beside an audience column already
named `input_first_name` must agree with it: the connector keeps that audience column as
`audience:input_first_name` and the model flags the rows where both hold different values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pandera.typing.polars import Series

__all__ = ["AUDIENCE_PREFIX", "INPUT_PREFIX", "MAX_LENGTH", "MappedInput", "audience_model"]

INPUT_PREFIX = "input_"
AUDIENCE_PREFIX = "audience:"
MAX_LENGTH = 100


class RelayAudience(pa.DataFrameModel):
    recipient_key: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    trigger_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": MAX_LENGTH})
    ccid: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": MAX_LENGTH})
    client_message_tag: Series[str] | None = pa.Field(nullable=True, str_length={"max_value": MAX_LENGTH})
    inputs: Series[str] | None = pa.Field(nullable=True, alias=rf"^{INPUT_PREFIX}.+$", regex=True)

    class Config:
        strict = False


MappedInput = tuple[str, str]
"""(input key, audience column it is mapped from)"""


def _clash_check(key: str, column: str) -> Any:
    companion = f"{AUDIENCE_PREFIX}{key}"

    def agrees(cls: Any, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        mapped = pl.col(data.key)
        if companion not in frame.collect_schema().names():
            return frame.select(mapped.is_null() | mapped.is_not_null())
        other = pl.col(companion)
        return frame.select(mapped.is_null() | other.is_null() | (mapped == other))

    return pa.check(key, name=f"key_clash(column {column!r} vs audience column {key!r})")(classmethod(agrees))


def audience_model(mapped: Sequence[MappedInput]) -> type[DataFrameModel]:
    """The model, with a clash check for every input mapped from a column of another name."""
    annotations: dict[str, Any] = {}
    attributes: dict[str, Any] = {"__module__": __name__}
    for position, (key, column) in enumerate(mapped):
        if key != column:
            annotations[f"input_{position}"] = Series[str]
            attributes[f"input_{position}"] = pa.Field(nullable=True, alias=key)
            attributes[f"clash_{position}"] = _clash_check(key, column)
    if not annotations:
        return RelayAudience
    attributes["__annotations__"] = annotations
    return type("RelayAudienceWithInputs", (RelayAudience,), attributes)
