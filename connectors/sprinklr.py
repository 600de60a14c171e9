"""Sprinklr: trigger a marketing journey, one profile a request.

Endpoints (`{base}{api_path}/marketing-journey/...`, `api_path` `/api` by default, `/api/v2`
on the newer `/{env}/api/v2/` bases, the env being part of `base_url`):

- `mode: trigger` (existing profiles): `POST .../trigger` with `{"snType", "snId", "journeyId",
  "contextParams": {string: string}}`; success is 204 with no body (no vendor_ref).
- `mode: new_profile`: `POST .../triggerWithNewProfile` (`connection.new_profile_endpoint:
  triggerJourney` for the newer name) with `{"journeyId", "contextParams", "unifiedProfile":
  {"id", "contact": {...}, "profiles": [{"channelType", "channelId", "name"}], "createdTime"}}`;
  the answer `{"data": {"status": "SUCCESS", "message", "trackingId"}, "errors": []}` gives
  vendor_ref = trackingId; another status, or errors, is `rejected` with the message.

Context params, contact fields and channel names are text; empty values are left out.
snType (and a new profile's channelType) must be one of `vendor_params.sn_types`
(upper-cased); an unknown type, an EMAIL id that is no address or an SMS/WhatsApp id that is
no phone number is `invalid` before anything is sent.

Headers: `Authorization: Bearer <access token>`, `Key: <api key>`. OAuth, the single-use
refresh token and where it is kept between runs: see `connectors.sprinklr_auth`. A 401 means
refresh once and send again; a 401 to the token just issued stops the run.

Answers: 403 "Developer Over Rate" (an HTML page from the gateway) and 429 are throttling;
any other 403 stops the run (a key that is inactive or not allowed). 400/422 refuse the one
recipient of the request: `rejected`, with Sprinklr's error (unless the error names the
journey, which would refuse everyone: the run stops). 404 (no such endpoint) stops the run.
503 and other 5xx are retried. 504 stays `in_doubt`: Sprinklr names it transient, but a
gateway timeout does not say the journey was not triggered, and no idempotency key exists,
so resending could message the person twice; with one recipient a request, the doubt costs
one row, which `--resend-in-doubt` may send again after checking.

Pace: 10 requests a second and 1,000 an hour by default (the spec's `limits` override both);
a run needing more than an hour's quota is paced across hours, or refused up front with
`limits.quota_policy: refuse`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import orjson
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.sprinklr_auth import SprinklrAuth, TokenStore, is_over_rate, store_path
from schemas.sprinklr import (
    CHANNEL_ID,
    CHANNEL_NAME,
    CHANNEL_TYPE,
    CONTACT_PREFIX,
    CONTEXT_PREFIX,
    DEFAULT_SN_TYPES,
    new_profile_model,
    trigger_model,
)
from volley.batches import Batch
from volley.connector import (
    RECIPIENT_KEY,
    Call,
    ConnectionParams,
    Connector,
    VendorParams,
    json_error_body,
)
from volley.outcomes import RowResults, Status
from volley.resolution import DEFAULT_STATUS_TABLE, Action, Resolution
from volley.secrets import SecretRef
from volley.sources import ROW_INDEX
from volley.text import as_text, json_array, json_object, json_string

__all__ = ["SprinklrConnection", "SprinklrConnector", "SprinklrParams"]

_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f")
# Errors that refuse every recipient alike: stop instead of refusing them one by one.
_ABORT_CODES = frozenset({"JOURNEY_NOT_FOUND", "INVALID_JOURNEY", "JOURNEY_NOT_ACTIVE", "INVALID_API_KEY"})


class NamedColumn(VendorParams):
    """A JSON member taken from a column (`name` defaults to the column) or a constant `value`."""

    name: str = Field(min_length=1, max_length=255)
    column: str | None = Field(default=None, min_length=1)
    value: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> NamedColumn:
        if (self.column is None) == (self.value is None):
            raise ValueError(f"{self.name}: give exactly one of 'column' or 'value'")
        return self


def _named(entries: list[str | NamedColumn]) -> list[NamedColumn]:
    return [e if isinstance(e, NamedColumn) else NamedColumn(name=e, column=e) for e in entries]


def _unique_names(entries: list[str | NamedColumn], what: str) -> None:
    names = [e.name for e in _named(entries)]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{what}: {duplicated[0]!r} is given twice")


class ChannelProfile(VendorParams):
    """One of the new profile's channel profiles (left out for a row whose id column is empty)."""

    channel_type: str | None = Field(default=None, min_length=1)
    channel_type_column: str | None = Field(default=None, min_length=1)
    channel_id_column: str = Field(min_length=1)
    name_column: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_type(self) -> ChannelProfile:
        if (self.channel_type is None) == (self.channel_type_column is None):
            raise ValueError("give exactly one of 'channel_type' or 'channel_type_column'")
        return self


class NewProfile(VendorParams):
    id_column: str | None = Field(default=None, min_length=1)  # defaults to the campaign's key column
    contact: list[str | NamedColumn] = Field(default_factory=list)
    profiles: list[ChannelProfile] = Field(min_length=1)
    created_time_column: str | None = Field(default=None, min_length=1)  # datetimes or epoch milliseconds

    @model_validator(mode="after")
    def _distinct(self) -> NewProfile:
        _unique_names(self.contact, "contact")
        return self


class SprinklrParams(VendorParams):
    mode: Literal["trigger", "new_profile"] = "trigger"
    journey_id: str | None = Field(default=None, min_length=1)
    journey_id_column: str | None = Field(default=None, min_length=1)
    sn_type: str | None = Field(default=None, min_length=1)
    sn_type_column: str | None = Field(default=None, min_length=1)
    sn_id_column: str | None = Field(default=None, min_length=1)  # defaults to the campaign's key column
    context_params: list[str | NamedColumn] = Field(default_factory=list)
    new_profile: NewProfile | None = None
    sn_types: tuple[str, ...] = Field(default=DEFAULT_SN_TYPES, min_length=1)

    @field_validator("sn_types")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({v.strip().upper() for v in value if v.strip()}))

    @model_validator(mode="after")
    def _consistent(self) -> SprinklrParams:
        if (self.journey_id is None) == (self.journey_id_column is None):
            raise ValueError("give exactly one of 'journey_id' or 'journey_id_column'")
        _unique_names(self.context_params, "context_params")
        if self.mode == "trigger":
            if (self.sn_type is None) == (self.sn_type_column is None):
                raise ValueError("mode trigger: give exactly one of 'sn_type' or 'sn_type_column'")
            if self.new_profile is not None:
                raise ValueError("'new_profile' goes with mode new_profile")
        else:
            if self.new_profile is None:
                raise ValueError("mode new_profile needs 'new_profile' (id_column, contact, profiles)")
            if self.sn_type is not None or self.sn_type_column is not None or self.sn_id_column is not None:
                raise ValueError("sn_type, sn_type_column and sn_id_column go with mode trigger")
        constants = [self.sn_type] if self.sn_type else []
        constants += [p.channel_type for p in (self.new_profile.profiles if self.new_profile else []) if p.channel_type]
        for constant in constants:
            if constant.strip().upper() not in self.sn_types:
                raise ValueError(f"snType {constant!r} is not one of sn_types ({', '.join(self.sn_types)})")
        return self


class SprinklrConnection(ConnectionParams):
    api_path: str = Field(default="/api", pattern=r"^(/[A-Za-z0-9._~-]+)+$")
    new_profile_endpoint: Literal["triggerWithNewProfile", "triggerJourney"] = "triggerWithNewProfile"
    api_key: SecretRef
    access_token: SecretRef | None = None  # without one, the first request refreshes
    refresh_token: SecretRef
    client_id: str | SecretRef
    client_secret: SecretRef
    redirect_uri: str | SecretRef
    token_store_dir: str = Field(default=".volley/tokens", min_length=1)
    refresh_before_expiry_seconds: float = Field(default=300.0, ge=0)


def _secret(value: str | SecretRef, field: str) -> str:
    return value if isinstance(value, str) else value.resolve(field).get_secret_value()


class SprinklrConnector(Connector):
    name: ClassVar[str] = "sprinklr"
    params_model = SprinklrParams
    connection_model = SprinklrConnection
    max_batch_rows: ClassVar[int] = 1  # both endpoints take one profile
    default_batch_rows: ClassVar[int] = 1
    repeat_safe: ClassVar[bool] = False
    throttle_backoff_seconds: ClassVar[float] = 1.0
    default_requests_per_second: ClassVar[float | None] = 10.0
    default_requests_per_hour: ClassVar[int | None] = 1000
    status_table: ClassVar[Mapping[int, Action]] = {**DEFAULT_STATUS_TABLE, 404: Action.ABORT}

    params: SprinklrParams
    connection: SprinklrConnection

    def __init__(self, params: SprinklrParams, connection: SprinklrConnection, key: str) -> None:
        super().__init__(params, connection, key)
        c = connection
        refresh: SecretStr = c.refresh_token.resolve("connection.refresh_token")
        client_id = _secret(c.client_id, "connection.client_id")
        self.auth = SprinklrAuth(
            token_url=f"{self.base_url}/oauth/token",
            api_key=c.api_key.resolve("connection.api_key").get_secret_value(),
            client_id=client_id,
            client_secret=c.client_secret.resolve("connection.client_secret").get_secret_value(),
            redirect_uri=_secret(c.redirect_uri, "connection.redirect_uri"),
            refresh_token=refresh.get_secret_value(),
            refresh_ref=c.refresh_token,
            access_token=c.access_token.resolve("connection.access_token").get_secret_value()
            if c.access_token
            else None,
            access_ref=c.access_token,
            store=TokenStore(store_path(c.token_store_dir, self.base_url, client_id, c.refresh_token)),
            refresh_margin_seconds=c.refresh_before_expiry_seconds,
        )
        journey = f"{self.base_url}{c.api_path}/marketing-journey"
        self.url = f"{journey}/trigger" if params.mode == "trigger" else f"{journey}/{c.new_profile_endpoint}"

    @property
    def token_store(self) -> Path:
        return self.auth.store.path

    # -- data ------------------------------------------------------------------------------
    def audience_model(self) -> type[DataFrameModel]:
        if self.params.mode == "trigger":
            return trigger_model(self.params.sn_types)
        return new_profile_model(self.params.sn_types)

    def required_columns(self) -> list[str]:
        p = self.params
        columns = [e.column for e in _named(p.context_params) if e.column is not None]
        columns += [c for c in (p.journey_id_column, p.sn_type_column) if c is not None]
        if p.mode == "trigger":
            columns.append(p.sn_id_column or self.key)
        else:
            assert p.new_profile is not None
            n = p.new_profile
            columns.append(n.id_column or self.key)
            columns += [e.column for e in _named(n.contact) if e.column is not None]
            columns += [c for c in (n.created_time_column,) if c is not None]
            for profile in n.profiles:
                columns += [
                    c
                    for c in (profile.channel_id_column, profile.channel_type_column, profile.name_column)
                    if c is not None
                ]
        return list(dict.fromkeys(columns))

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        schema = frame.schema

        def text(column: str) -> pl.Expr:
            return as_text(column, schema[column])

        def constant_or(value: str | None, column: str | None) -> pl.Expr:
            return pl.lit(value, dtype=pl.String) if column is None else text(column)

        def channel_type(expr: pl.Expr) -> pl.Expr:
            return expr.str.strip_chars().str.to_uppercase()

        columns: list[pl.Expr] = [
            pl.col(ROW_INDEX),
            pl.col(RECIPIENT_KEY),
            constant_or(p.journey_id, p.journey_id_column).alias("journeyId"),
        ]
        for entry in _named(p.context_params):
            columns.append(constant_or(entry.value, entry.column).alias(f"{CONTEXT_PREFIX}{entry.name}"))
        if p.mode == "trigger":
            columns.append(channel_type(constant_or(p.sn_type, p.sn_type_column)).alias("snType"))
            columns.append(text(p.sn_id_column or self.key).alias("snId"))
            return frame.select(columns)
        assert p.new_profile is not None
        n = p.new_profile
        columns.append(text(n.id_column or self.key).alias("profileId"))
        columns.append(self._created_time(n.created_time_column, schema).alias("createdTime"))
        for entry in _named(n.contact):
            columns.append(constant_or(entry.value, entry.column).alias(f"{CONTACT_PREFIX}{entry.name}"))
        for i, profile in enumerate(n.profiles):
            columns.append(
                channel_type(constant_or(profile.channel_type, profile.channel_type_column)).alias(f"{CHANNEL_TYPE}{i}")
            )
            columns.append(text(profile.channel_id_column).alias(f"{CHANNEL_ID}{i}"))
            name = text(profile.name_column) if profile.name_column else pl.lit(None, dtype=pl.String)
            columns.append(name.alias(f"{CHANNEL_NAME}{i}"))
        return frame.select(columns)

    @staticmethod
    def _created_time(column: str | None, schema: pl.Schema) -> pl.Expr:
        """Epoch milliseconds as digits. Datetimes and ISO-like text (`2025-03-01 08:39:00`,
        `2025-03-01T08:39:00.5Z`, `2025-03-01`; naive times read as UTC) are converted; text
        that is neither stays as given, and fails the model's check (`createdTime.str_matches`)."""
        if column is None:
            return pl.lit(None, dtype=pl.String)
        dtype = schema[column]
        if isinstance(dtype, pl.Datetime):
            return pl.col(column).dt.epoch("ms").cast(pl.String)
        if isinstance(dtype, pl.Date):
            return pl.col(column).cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.String)
        text = as_text(column, dtype)
        if dtype != pl.String:
            return text
        bare = text.str.strip_suffix("Z")
        parsed = pl.coalesce(
            *(bare.str.strptime(pl.Datetime("ms"), f, strict=False) for f in _TIME_FORMATS),
            bare.str.strptime(pl.Date, "%Y-%m-%d", strict=False).cast(pl.Datetime("ms")),
        )
        epoch = parsed.dt.epoch("ms").cast(pl.String)
        return pl.when(text.str.contains(r"^[0-9]+$")).then(text).otherwise(pl.coalesce(epoch, text))

    def _context(self) -> pl.Expr:
        """The contextParams object, or null (left out) when the campaign maps none."""
        entries = _named(self.params.context_params)
        if not entries:
            return pl.lit(None, dtype=pl.String)
        return json_object([(e.name, _string(f"{CONTEXT_PREFIX}{e.name}")) for e in entries])

    def encode_rows(self, frame: pl.DataFrame) -> pl.Series:
        p = self.params
        if p.mode == "trigger":
            members = [
                ("snType", _string("snType")),
                ("snId", _string("snId")),
                ("journeyId", _string("journeyId")),
                ("contextParams", self._context()),
            ]
            return frame.select(json_object(members).alias("payload")).to_series()
        assert p.new_profile is not None
        n = p.new_profile
        contact = json_object([(entry.name, _string(f"{CONTACT_PREFIX}{entry.name}")) for entry in _named(n.contact)])
        channels = [
            pl.when(pl.col(f"{CHANNEL_ID}{i}").is_not_null()).then(
                json_object(
                    [
                        ("channelType", _string(f"{CHANNEL_TYPE}{i}")),
                        ("channelId", _string(f"{CHANNEL_ID}{i}")),
                        ("name", _string(f"{CHANNEL_NAME}{i}")),
                    ]
                )
            )
            for i in range(len(n.profiles))
        ]
        unified = json_object(
            [
                ("id", _string("profileId")),
                ("contact", contact),
                ("profiles", json_array(channels)),
                ("createdTime", pl.col("createdTime")),  # epoch milliseconds: digits, written as a number
            ]
        )
        members = [
            ("journeyId", _string("journeyId")),
            ("contextParams", self._context()),
            ("unifiedProfile", unified),
        ]
        return frame.select(json_object(members).alias("payload")).to_series()

    def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
        return Call(
            "POST",
            self.url,
            content=bytes(batch.joined_payload),  # one profile a batch: its fragment
            headers={
                **auth_headers,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-Request-Id": batch.batch_id,
            },
        )

    def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
        """One row: 2xx is `accepted` (new profiles: when data.status is SUCCESS), 4xx `rejected`."""
        rows = len(batch)
        body = _json(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        first_error = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        if response.status_code >= 300:
            code = str(first_error.get("code") or f"HTTP_{response.status_code}")
            message = _error_text(body, first_error) or _short(response)
            return RowResults.uniform(rows, Status.REJECTED, code, message)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            if self.params.mode == "trigger" and not errors:
                return RowResults.uniform(rows, Status.ACCEPTED)  # 204, as documented
            if errors:
                return RowResults.uniform(
                    rows, Status.REJECTED, str(first_error.get("code") or "REJECTED"), _error_text(body, first_error)
                )
            return RowResults.uniform(
                rows, Status.IN_DOUBT, "UNREADABLE_ANSWER", f"a {response.status_code} answer without data.status"
            )
        status = str(data.get("status") or "")
        tracking = data.get("trackingId")
        reference = str(tracking) if tracking not in (None, "") else None
        if status.upper() == "SUCCESS" and not errors:
            return RowResults.uniform(rows, Status.ACCEPTED, vendor_ref=reference)
        code = str(first_error.get("code") or status or "REJECTED")
        message = _error_text(body, first_error) or f"status {status or 'missing'}"
        return RowResults.uniform(rows, Status.REJECTED, code, message, reference)

    # -- answers -----------------------------------------------------------------------------
    def classify(self, response: httpx.Response) -> Resolution:
        self.auth.saw_answer(response)
        return super().classify(response)

    def error_resolution(self, response: httpx.Response) -> Resolution | None:
        status = response.status_code
        if status == 403:
            if is_over_rate(response):
                return Resolution(Action.THROTTLE, "DEVELOPER_OVER_RATE", "Developer Over Rate")
            return Resolution(Action.ABORT, "FORBIDDEN", f"403: {_short(response)}")
        if status in (400, 409, 422):
            body = json_error_body(response) or {}
            errors = body.get("errors")
            first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
            code = str(first.get("code") or "")
            if code.upper() in _ABORT_CODES:
                return Resolution(Action.ABORT, code, _error_text(body, first) or code)
            return Resolution(Action.SUCCESS)  # one recipient a request: `decode` records it `rejected`
        return None

    # -- auth --------------------------------------------------------------------------------
    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        return await self.auth.authorize(client)

    async def reauthorize(self, client: httpx.AsyncClient, stale: Mapping[str, str]) -> None:
        await self.auth.reauthorize(client, stale)


def _string(column: str) -> pl.Expr:
    """A prepared text column as JSON strings (null stays null: its member is left out)."""
    return json_string(pl.col(column))


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _error_text(body: Any, first_error: Mapping[str, Any]) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    for value in (first_error.get("message"), data.get("message") if isinstance(data, dict) else None):
        if value:
            return str(value)[:300]
    return None


def _short(response: httpx.Response, limit: int = 200) -> str:
    """The answer's words without markup (the gateway answers HTML)."""
    text = re.sub(r"<[^>]+>", " ", response.text)
    text = " ".join(text.split())
    return text[:limit] if text else (response.reason_phrase or f"HTTP {response.status_code}")
