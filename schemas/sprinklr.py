"""The Sprinklr audience, as prepared by the Sprinklr connector (all text).

Two shapes, one per endpoint:

- `trigger` (existing profiles): `snType`, `snId`, `journeyId` and `ctx:<name>` context params.
- `new_profile` (`triggerWithNewProfile`): `profileId`, `journeyId`, `createdTime` (epoch ms as
  digits, optional), `contact:<field>`, and channel profiles `chType:<i>` / `chId:<i>` /
  `chName:<i>` (one triple per configured profile; a triple without a channel id is left out,
  a row with none at all is invalid).

The known snTypes (channel types) are the campaign's (`vendor_params.sn_types`), so the models
are built per set. An `EMAIL` id must look like an address and an `SMS` or
`WHATSAPP_BUSINESS` id like a phone number; other channels only need a non-empty id.
"""

from __future__ import annotations

import functools
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.typing.polars import Series

__all__ = [
    "CHANNEL_ID",
    "CHANNEL_NAME",
    "CHANNEL_TYPE",
    "CONTACT_PREFIX",
    "CONTEXT_PREFIX",
    "DEFAULT_SN_TYPES",
    "new_profile_model",
    "trigger_model",
]

DEFAULT_SN_TYPES: tuple[str, ...] = (
    "EMAIL",
    "SMS",
    "WHATSAPP_BUSINESS",
    "TWITTER",
    "FACEBOOK",
    "INSTAGRAM",
    "LINKEDIN",
    "TELEGRAM",
    "VIBER",
    "LINE",
    "WECHAT",
    "APPLE_BUSINESS_CHAT",
)
CONTEXT_PREFIX = "ctx:"
CONTACT_PREFIX = "contact:"
CHANNEL_TYPE = "chType:"
CHANNEL_ID = "chId:"
CHANNEL_NAME = "chName:"

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_PHONE = r"^\+?[0-9][0-9 ()-]{4,24}$"
_PHONE_TYPES = ["SMS", "WHATSAPP_BUSINESS"]
_TEXT = {"min_value": 1, "max_value": 1024}


def id_matches_type(channel_type: pl.Expr, channel_id: pl.Expr) -> pl.Expr:
    """True where the id has the shape its channel type needs (or nothing is known of the type)."""
    return (
        pl.when(channel_type == "EMAIL")
        .then(channel_id.str.contains(_EMAIL))
        .when(channel_type.is_in(_PHONE_TYPES))
        .then(channel_id.str.contains(_PHONE))
        .otherwise(pl.lit(True))
        .fill_null(True)
    )


class _Common(pa.DataFrameModel):
    recipient_key: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    journeyId: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})
    context: Series[str] = pa.Field(nullable=True, alias=rf"^{CONTEXT_PREFIX}.+$", regex=True)

    class Config:
        strict = False


class SprinklrTriggerAudience(_Common):
    """Existing profiles: one snType and snId per row."""

    snId: Series[str] = pa.Field(nullable=False, str_length=_TEXT)

    @pa.dataframe_check(name="snId_matches_snType")
    @classmethod
    def sn_id_matches_sn_type(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        return frame.select(id_matches_type(pl.col("snType"), pl.col("snId")))


class SprinklrNewProfileAudience(_Common):
    """New profiles: an id, contact fields and at least one channel profile."""

    profileId: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})
    createdTime: Series[str] = pa.Field(nullable=True, str_matches=r"^[0-9]{1,15}$")
    contact: Series[str] = pa.Field(nullable=True, alias=rf"^{CONTACT_PREFIX}.+$", regex=True)
    channel_id: Series[str] = pa.Field(nullable=True, alias=rf"^{CHANNEL_ID}[0-9]+$", regex=True, str_length=_TEXT)
    channel_name: Series[str] = pa.Field(nullable=True, alias=rf"^{CHANNEL_NAME}[0-9]+$", regex=True)

    @pa.dataframe_check(name="at_least_one_channel_profile")
    @classmethod
    def at_least_one_channel(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        ids = [pl.col(c).is_not_null() for c in frame.collect_schema().names() if c.startswith(CHANNEL_ID)]
        return frame.select(pl.any_horizontal(ids) if ids else pl.lit(False))

    @pa.dataframe_check(name="channelId_matches_channelType")
    @classmethod
    def channel_id_matches_type(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        slots = [c.removeprefix(CHANNEL_ID) for c in frame.collect_schema().names() if c.startswith(CHANNEL_ID)]
        checks = [id_matches_type(pl.col(f"{CHANNEL_TYPE}{i}"), pl.col(f"{CHANNEL_ID}{i}")) for i in slots]
        return frame.select(pl.all_horizontal(checks) if checks else pl.lit(True))

    @pa.dataframe_check(name="channelType_given_for_channelId")
    @classmethod
    def channel_type_given(cls, data: Any) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe
        slots = [c.removeprefix(CHANNEL_ID) for c in frame.collect_schema().names() if c.startswith(CHANNEL_ID)]
        checks = [pl.col(f"{CHANNEL_ID}{i}").is_null() | pl.col(f"{CHANNEL_TYPE}{i}").is_not_null() for i in slots]
        return frame.select(pl.all_horizontal(checks) if checks else pl.lit(True))


@functools.cache
def trigger_model(sn_types: tuple[str, ...]) -> type[pa.DataFrameModel]:
    """The `trigger` model with snType restricted to the campaign's known types."""
    return type(
        "SprinklrTriggerAudienceChecked",
        (SprinklrTriggerAudience,),
        {
            "__annotations__": {"snType": Series[str]},
            "snType": pa.Field(nullable=False, isin=sorted(sn_types)),
            "__module__": __name__,
        },
    )


@functools.cache
def new_profile_model(sn_types: tuple[str, ...]) -> type[pa.DataFrameModel]:
    """The `new_profile` model with every channel type restricted to the campaign's known types."""
    return type(
        "SprinklrNewProfileAudienceChecked",
        (SprinklrNewProfileAudience,),
        {
            "__annotations__": {"channel_type": Series[str]},
            "channel_type": pa.Field(
                nullable=True, alias=rf"^{CHANNEL_TYPE}[0-9]+$", regex=True, isin=sorted(sn_types)
            ),
            "__module__": __name__,
        },
    )
