"""The MedChat audience, as prepared by the MedChat connector (all text).

Trigger: one column `parameters.<name>` per journey parameter. A datetime parameter holds
the audience's text (a datetime column is written as text in the journey's time zone) and
must read as a date and time; the connector formats it the way the journey expects.
Cancel: `journeyInstanceId`, a UUID (it becomes a path segment of the DELETE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pandera.typing.polars import Series

__all__ = [
    "INSTANCE_ID",
    "PARAMETER_PREFIX",
    "MedChatCancelAudience",
    "ParameterRule",
    "parse_datetime",
    "trigger_model",
]

PARAMETER_PREFIX = "parameters."
INSTANCE_ID = "journeyInstanceId"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# ISO 8601 as audiences write it: wall-clock time in the journey's zone, or with an offset / Z.
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_OFFSET_DIRECTIVES = ("%z", "%#z", "%:z", "%::z")


def has_offset(source_format: str) -> bool:
    return any(directive in source_format for directive in _OFFSET_DIRECTIVES)


def parse_datetime(text: pl.Expr, time_zone: str, source_format: str | None = None) -> pl.Expr:
    """Text to a naive datetime on the wall clock of `time_zone`; null when it does not read.

    Without `source_format`, ISO 8601: values without an offset are taken as already in
    `time_zone`, values with one (or Z) are converted into it.
    """

    def naive(fmt: str) -> pl.Expr:
        return text.str.strptime(pl.Datetime("us"), fmt, strict=False)

    def aware(fmt: str) -> pl.Expr:
        parsed = text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False)
        return parsed.dt.convert_time_zone(time_zone).dt.replace_time_zone(None)

    if source_format is not None:
        return aware(source_format) if has_offset(source_format) else naive(source_format)
    return pl.coalesce([*(naive(f) for f in _NAIVE_FORMATS), *(aware(f) for f in _AWARE_FORMATS)])


@dataclass(frozen=True, slots=True)
class ParameterRule:
    """What the audience model checks of one journey parameter."""

    name: str
    required: bool
    is_datetime: bool = False
    source_format: str | None = None

    @property
    def column(self) -> str:
        return f"{PARAMETER_PREFIX}{self.name}"


class _Base(pa.DataFrameModel):
    recipient_key: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})

    class Config:
        strict = False


class MedChatCancelAudience(_Base):
    """Journey instances to cancel: each id a UUID, as MedChat shows it."""

    journeyInstanceId: Series[str] = pa.Field(nullable=False, str_matches=_UUID)


def _datetime_check(rule: ParameterRule, time_zone: str) -> Any:
    expected = rule.source_format or "ISO 8601"

    def reads_as_datetime(cls: Any, data: Any) -> pl.LazyFrame:
        value = pl.col(data.key)
        frame: pl.LazyFrame = data.lazyframe
        return frame.select(value.is_null() | parse_datetime(value, time_zone, rule.source_format).is_not_null())

    return pa.check(rule.column, name=f"datetime(expected {expected})")(classmethod(reads_as_datetime))


def trigger_model(rules: Sequence[ParameterRule], time_zone: str | None) -> type[DataFrameModel]:
    """A model with one text column per journey parameter (required ones not null)."""
    annotations: dict[str, Any] = {}
    attributes: dict[str, Any] = {"__module__": __name__}
    for position, rule in enumerate(rules):
        attribute = f"parameter_{position}"
        annotations[attribute] = Series[str]
        attributes[attribute] = pa.Field(nullable=not rule.required, alias=rule.column)
        if rule.is_datetime:
            if time_zone is None:
                raise ValueError(f"parameter {rule.name!r} is a datetime: a time zone is required")
            attributes[f"check_{position}"] = _datetime_check(rule, time_zone)
    attributes["__annotations__"] = annotations
    return type("MedChatTriggerAudience", (_Base,), attributes)
