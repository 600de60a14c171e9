"""The Oracle Responsys audience, as prepared by the Responsys connector (all text)."""

from __future__ import annotations

import functools
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.typing.polars import Series

__all__ = ["IDENTIFIERS", "ResponsysAppAudience", "ResponsysAudience", "ResponsysWebPushAudience", "audience_model"]

# Responsys resolves a profile-list recipient by the first non-null of these, in this order.
IDENTIFIERS = ("recipientId", "emailAddress", "customerId", "mobileNumber", "emailMD5Hash", "emailSHA256Hash")
OPTIONAL_PREFIX = "opt:"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_FORMATS: dict[str, dict[str, Any]] = {
    "recipientId": {"str_matches": r"^[0-9]{1,19}$"},
    "emailAddress": {"str_matches": _EMAIL, "str_length": {"max_value": 255}},
    "customerId": {"str_length": {"min_value": 1, "max_value": 255}},
    "mobileNumber": {"str_matches": r"^\+?[0-9][0-9 ()-]{4,24}$"},
    "emailMD5Hash": {"str_matches": r"^[0-9a-fA-F]{32}$"},
    "emailSHA256Hash": {"str_matches": r"^[0-9a-fA-F]{64}$"},
}


def _identifier_count(frame: pl.LazyFrame) -> pl.Expr:
    present = [pl.col(name).is_not_null() for name in IDENTIFIERS if name in frame.collect_schema().names()]
    return pl.sum_horizontal(present) if present else pl.lit(0)


class _Base(pa.DataFrameModel):
    # The identifiers an audience does not hold are absent, not null columns: pandera checks every
    # column it is given, and five null ones cost a third of a slice's validation (17.0 -> 11.9 ms
    # for 100k rows, measured; it is the same for 1k: pandera's cost is per column, not per row).
    recipient_key: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    recipientId: Series[str] = pa.Field(nullable=True, required=False, **_FORMATS["recipientId"])
    emailAddress: Series[str] = pa.Field(nullable=True, required=False, **_FORMATS["emailAddress"])
    customerId: Series[str] = pa.Field(nullable=True, required=False, **_FORMATS["customerId"])
    mobileNumber: Series[str] = pa.Field(nullable=True, required=False, **_FORMATS["mobileNumber"])
    emailMD5Hash: Series[str] = pa.Field(nullable=True, required=False, **_FORMATS["emailMD5Hash"])
    emailSHA256Hash: Series[str] = pa.Field(nullable=True, required=False, **_FORMATS["emailSHA256Hash"])
    listFolder: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})
    listObject: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})
    optional_data: Series[str] = pa.Field(nullable=True, alias=rf"^{OPTIONAL_PREFIX}.+$", regex=True)

    class Config:
        strict = False


class ResponsysAudience(_Base):
    """Profile-list recipients: exactly one identifier per row (the one `identify_by` names)."""

    @pa.dataframe_check(name="exactly_one_identifier")
    @classmethod
    def exactly_one_identifier(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        return frame.select(_identifier_count(frame) == 1)


class ResponsysAppAudience(_Base):
    """App-channel recipients: deviceId and apiKey both required, at most one identifier."""

    deviceId: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})
    apiKey: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})

    @pa.dataframe_check(name="at_most_one_identifier")
    @classmethod
    def at_most_one_identifier(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        return frame.select(_identifier_count(frame) <= 1)


class ResponsysWebPushAudience(_Base):
    """Web-push recipients: visitorId and apiKey both required, at most one identifier."""

    visitorId: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})
    apiKey: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})

    @pa.dataframe_check(name="at_most_one_identifier")
    @classmethod
    def at_most_one_identifier(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        return frame.select(_identifier_count(frame) <= 1)


_CHANNELS: dict[str, type[_Base]] = {
    "profile": ResponsysAudience,
    "app": ResponsysAppAudience,
    "web_push": ResponsysWebPushAudience,
}


@functools.cache
def audience_model(channel: str, identify_by: str | None) -> type[pa.DataFrameModel]:
    """The channel's model, with the chosen identifier made required (one class for each pair:
    pandera builds a model's schema once, and a new class on every slice cost 2 ms a slice)."""
    base = _CHANNELS[channel]
    if identify_by is None:
        return base
    required = pa.Field(nullable=False, **_FORMATS[identify_by])
    return type(
        f"{base.__name__}By{identify_by[0].upper()}{identify_by[1:]}",
        (base,),
        {"__annotations__": {identify_by: Series[str]}, identify_by: required, "__module__": __name__},
    )
