"""Intilery: track commands that send an asset or start a journey.

`POST {base}/track/{clientId}/{accountId}/{BRANDID}/v1/batch` with `{"batch": [event, ...]}`
(`mode: batch`, the default), or `.../v1/track` with one event (`mode: single`); header
`auth-token`. The track base is `connection.base_url` when it already ends in
`/track/{clientId}/{accountId}/{BRANDID}`, else base_url plus `client_id`, `account_id` and
`brand_id` from the connection.

An event: `userId` (the campaign's key by default), `event` (`send_email`, `send_sms`,
`send_print`, `send_push` with `assetId`; or `start_journey` with
`properties.journeyIdToTrigger` and optional `properties.stepIdToTrigger`), an optional
`timestamp` (ISO-8601 UTC, e.g. `2019-11-18T13:30:11.444Z`; datetime columns are converted,
naive ones read as UTC) and any other root field as merge data (`merge_data`: columns, or
`{name, column}`, sent in their own JSON type; empty values are left out). Event names are
compared case-insensitively and sent in lower case; a row with an unknown event, a send_*
without an assetId or a start_journey without a journey id is `invalid` before sending.

Size: at most 32 KB an event (a larger one is `invalid`, `payload.too_large`) and 1 MB a
request (batches are cut by bytes; a 413 all the same splits the batch in two).

Answers: single `{"success": true, "eventId": "..."}` (vendor_ref = eventId). The batch
answer is not documented: Volley reads (and its simulator answers) `{"success": true,
"results": [{"success": true, "eventId": "..."} | {"success": false, "message": "..."}]}`,
one result per event in request order; `{"success": true}` without results accepts every
event (no eventId); results that do not line up with the request are `in_doubt`. 400
`{"success": false, "message"}` rejects the request's rows with the message. 401/403 (bad or
missing token) and 404 (no such client/account/brand path) stop the run; 429 (over 100
requests a second, burst 500) throttles; 502/503 are retried; 504 stays `in_doubt` (no
idempotency key: a timed-out batch may have been applied, and resending would send its
assets twice).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import orjson
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pydantic import Field, field_validator, model_validator

from schemas.intilery import COMMANDS, MERGE_PREFIX, SEND_COMMANDS, IntileryAudience
from volley.batches import Batch
from volley.connector import RECIPIENT_KEY, Call, ConnectionParams, Connector, VendorParams, json_error_body
from volley.outcomes import RowResults, Status
from volley.resolution import DEFAULT_STATUS_TABLE, Action, Resolution
from volley.secrets import SecretRef
from volley.sources import ROW_INDEX
from volley.text import as_text, json_object, json_string, json_value

__all__ = ["IntileryConnection", "IntileryConnector", "IntileryParams"]

AUTH_HEADER = "auth-token"
MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 1024 * 1024
_ENVELOPE = b'{"batch":[]}'
_RESERVED = frozenset({"userId", "event", "assetId", "timestamp", "properties"})
_TRACK_PATH = re.compile(r"/track/[^/]+/[^/]+/[^/]+$")
_PATH_PART = r"^[A-Za-z0-9._~-]+$"


class MergeField(VendorParams):
    name: str = Field(min_length=1, max_length=255)
    column: str = Field(min_length=1)


def _pair(constant: str | None, column: str | None, what: str) -> None:
    if constant is not None and column is not None:
        raise ValueError(f"give at most one of '{what}' or '{what}_column'")


class IntileryParams(VendorParams):
    mode: Literal["batch", "single"] = "batch"
    user_id_column: str | None = Field(default=None, min_length=1)  # defaults to the campaign's key column
    event: str | None = Field(default=None, min_length=1)
    event_column: str | None = Field(default=None, min_length=1)
    asset_id: str | None = Field(default=None, min_length=1)
    asset_id_column: str | None = Field(default=None, min_length=1)
    journey_id_to_trigger: str | None = Field(default=None, min_length=1)
    journey_id_to_trigger_column: str | None = Field(default=None, min_length=1)
    step_id_to_trigger: str | None = Field(default=None, min_length=1)
    step_id_to_trigger_column: str | None = Field(default=None, min_length=1)
    timestamp_column: str | None = Field(default=None, min_length=1)
    merge_data: list[str | MergeField] = Field(default_factory=list)

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str | None) -> str | None:
        if value is None:
            return None
        event = value.strip().lower()
        if event not in COMMANDS:
            raise ValueError(f"unknown event {value!r}; expected one of {', '.join(COMMANDS)} (any case)")
        return event

    @model_validator(mode="after")
    def _consistent(self) -> IntileryParams:
        if (self.event is None) == (self.event_column is None):
            raise ValueError("give exactly one of 'event' or 'event_column'")
        for what in ("asset_id", "journey_id_to_trigger", "step_id_to_trigger"):
            _pair(getattr(self, what), getattr(self, f"{what}_column"), what)
        if self.event in SEND_COMMANDS and self.asset_id is None and self.asset_id_column is None:
            raise ValueError(f"event {self.event} needs 'asset_id' or 'asset_id_column'")
        if (
            self.event == "start_journey"
            and self.journey_id_to_trigger is None
            and (self.journey_id_to_trigger_column is None)
        ):
            raise ValueError("event start_journey needs 'journey_id_to_trigger' or 'journey_id_to_trigger_column'")
        names = [f.name for f in self.merge_fields()]
        for name in names:
            if name in _RESERVED:
                raise ValueError(f"merge_data: {name!r} is a field of the event itself; map it under another name")
            if names.count(name) > 1:
                raise ValueError(f"merge_data: {name!r} is given twice")
        return self

    def merge_fields(self) -> list[MergeField]:
        return [f if isinstance(f, MergeField) else MergeField(name=f, column=f) for f in self.merge_data]


class IntileryConnection(ConnectionParams):
    auth_token: SecretRef
    client_id: str | None = Field(default=None, pattern=_PATH_PART)
    account_id: str | None = Field(default=None, pattern=_PATH_PART)
    brand_id: str | None = Field(default=None, pattern=_PATH_PART)

    @model_validator(mode="after")
    def _track_base(self) -> IntileryConnection:
        ids = (self.client_id, self.account_id, self.brand_id)
        in_url = bool(_TRACK_PATH.search(urlsplit(self.base_url.rstrip("/")).path))
        if all(i is None for i in ids):
            if not in_url:
                raise ValueError(
                    "base_url must end in /track/{clientId}/{accountId}/{BRANDID}, "
                    "or give client_id, account_id and brand_id"
                )
        elif any(i is None for i in ids) or in_url:
            raise ValueError("give all of client_id, account_id and brand_id (and a base_url without /track/...)")
        return self

    def track_base(self) -> str:
        base = self.base_url.rstrip("/")
        if self.client_id is None:
            return base
        return f"{base}/track/{self.client_id}/{self.account_id}/{self.brand_id}"


class IntileryConnector(Connector):
    name: ClassVar[str] = "intilery"
    params_model = IntileryParams
    connection_model = IntileryConnection
    max_batch_rows: ClassVar[int] = 5000
    default_batch_rows: ClassVar[int] = 500
    max_row_bytes: ClassVar[int | None] = MAX_EVENT_BYTES
    max_batch_bytes: ClassVar[int | None] = MAX_REQUEST_BYTES - len(_ENVELOPE)
    repeat_safe: ClassVar[bool] = False
    throttle_backoff_seconds: ClassVar[float] = 1.0
    default_requests_per_second: ClassVar[float | None] = 100.0
    status_table: ClassVar[Mapping[int, Action]] = {
        **DEFAULT_STATUS_TABLE,
        401: Action.ABORT,
        403: Action.ABORT,
        404: Action.ABORT,
    }

    params: IntileryParams
    connection: IntileryConnection

    def __init__(self, params: IntileryParams, connection: IntileryConnection, key: str) -> None:
        super().__init__(params, connection, key)
        token = connection.auth_token.resolve("connection.auth_token").get_secret_value()
        self._headers = {AUTH_HEADER: token}
        base = connection.track_base()
        self.url = f"{base}/v1/batch" if params.mode == "batch" else f"{base}/v1/track"

    def batch_limits(self) -> tuple[int, int]:
        return (1, 1) if self.params.mode == "single" else (self.default_batch_rows, self.max_batch_rows)

    # -- data ------------------------------------------------------------------------------
    def audience_model(self) -> type[DataFrameModel]:
        return IntileryAudience

    def required_columns(self) -> list[str]:
        p = self.params
        columns = [p.user_id_column or self.key]
        columns += [
            c
            for c in (
                p.event_column,
                p.asset_id_column,
                p.journey_id_to_trigger_column,
                p.step_id_to_trigger_column,
                p.timestamp_column,
            )
            if c is not None
        ]
        columns += [f.column for f in p.merge_fields()]
        return list(dict.fromkeys(columns))

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        schema = frame.schema

        def constant_or(value: str | None, column: str | None) -> pl.Expr:
            return pl.lit(value, dtype=pl.String) if column is None else as_text(column, schema[column])

        columns: list[pl.Expr] = [
            pl.col(ROW_INDEX),
            pl.col(RECIPIENT_KEY),
            as_text(p.user_id_column or self.key, schema[p.user_id_column or self.key]).alias("userId"),
            constant_or(p.event, p.event_column).str.to_lowercase().alias("event"),
            constant_or(p.asset_id, p.asset_id_column).alias("assetId"),
            constant_or(p.journey_id_to_trigger, p.journey_id_to_trigger_column).alias("journeyIdToTrigger"),
            constant_or(p.step_id_to_trigger, p.step_id_to_trigger_column).alias("stepIdToTrigger"),
            self._timestamp(p.timestamp_column, schema).alias("timestamp"),
        ]
        for field in p.merge_fields():
            columns.append(_merge_value(field.column, schema[field.column]).alias(f"{MERGE_PREFIX}{field.name}"))
        return frame.select(columns)

    @staticmethod
    def _timestamp(column: str | None, schema: pl.Schema) -> pl.Expr:
        if column is None:
            return pl.lit(None, dtype=pl.String)
        dtype = schema[column]
        if isinstance(dtype, pl.Datetime):
            value = pl.col(column)
            if dtype.time_zone is not None:
                value = value.dt.convert_time_zone("UTC")
            return value.dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ")
        text = as_text(column, dtype)
        return text.str.replace(r"(\+00:?00|z)$", "Z")  # +00:00 is UTC too; the docs write Z

    def encode_rows(self, frame: pl.DataFrame) -> pl.Series:
        event = pl.col("event")
        is_send = event.is_in(list(SEND_COMMANDS))
        properties = pl.when(event == "start_journey").then(
            json_object(
                [
                    ("journeyIdToTrigger", json_string(pl.col("journeyIdToTrigger"))),
                    ("stepIdToTrigger", json_string(pl.col("stepIdToTrigger"))),
                ]
            )
        )
        members = [
            ("userId", json_string(pl.col("userId"))),
            ("event", json_string(event)),
            ("assetId", json_string(pl.when(is_send).then(pl.col("assetId")))),
            ("properties", properties),
            ("timestamp", json_string(pl.col("timestamp"))),
        ]
        schema = frame.schema
        for f in self.params.merge_fields():
            column = f"{MERGE_PREFIX}{f.name}"
            members.append((f.name, json_value(pl.col(column), schema[column])))  # merge data keeps its JSON type
        return frame.select(json_object(members).alias("payload")).to_series()

    def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
        if self.params.mode == "single":
            body = bytes(batch.joined_payload)  # one row a batch in single mode: its fragment
        else:
            body = b"".join((b'{"batch":[', batch.joined_payload, b"]}"))
        headers = {
            **auth_headers,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Request-Id": batch.batch_id,
        }
        return Call("POST", self.url, content=body, headers=headers)

    def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
        rows = len(batch)
        answer = _json(response)
        if response.status_code >= 300:  # 400: the request refused, with a message
            message = _message(answer) or f"HTTP {response.status_code}"
            return RowResults.uniform(rows, Status.REJECTED, "BAD_REQUEST", message)
        if not isinstance(answer, dict):
            return RowResults.uniform(rows, Status.IN_DOUBT, "UNREADABLE_ANSWER", "a 2xx answer that is not JSON")
        if self.params.mode == "single":
            return _read_one(answer, rows)
        results = answer.get("results")
        if results is None:
            if answer.get("success") is True:
                return RowResults.uniform(rows, Status.ACCEPTED)
            return RowResults.uniform(rows, Status.REJECTED, "BATCH_REFUSED", _message(answer) or "success is false")
        if not isinstance(results, list) or len(results) != rows or not all(isinstance(r, dict) for r in results):
            return RowResults.uniform(
                rows, Status.IN_DOUBT, "UNREADABLE_ANSWER", "a batch answer without one result per event"
            )
        status: list[str] = []
        codes: list[str | None] = []
        messages: list[str | None] = []
        refs: list[str | int | None] = []
        for result in results:
            one = _read_one(result, 1)
            status.append(one.status[0])
            codes.append(one.error_code[0])
            messages.append(one.error_message[0])
            refs.append(one.vendor_ref[0])
        return RowResults(status, codes, messages, refs)

    # -- answers -----------------------------------------------------------------------------
    def error_resolution(self, response: httpx.Response) -> Resolution | None:
        if response.status_code == 400:
            return Resolution(Action.SUCCESS)  # refused with a message: `decode` records the rows `rejected`
        if response.status_code in (401, 403):
            body = json_error_body(response)
            return Resolution(Action.ABORT, "AUTH_REFUSED", _message(body) or "bad or missing auth-token")
        return None

    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        return self._headers


def _merge_value(column: str, dtype: pl.DataType) -> pl.Expr:
    """Merge data keeps its JSON type; dates and datetimes become ISO text, blank text is left out."""
    value = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            value = value.dt.convert_time_zone("UTC")
        return value.dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ")
    if isinstance(dtype, pl.Date):
        return value.dt.to_string("%Y-%m-%d")
    if dtype == pl.String:
        return pl.when(value.str.strip_chars() == "").then(None).otherwise(value)
    return value


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _message(answer: Any) -> str | None:
    if isinstance(answer, dict) and answer.get("message"):
        return str(answer["message"])[:300]
    return None


def _read_one(answer: Mapping[str, Any], rows: int) -> RowResults:
    if answer.get("success") is True:
        event_id = answer.get("eventId")
        return RowResults.uniform(rows, Status.ACCEPTED, vendor_ref=str(event_id) if event_id else None)
    if answer.get("success") is False:
        return RowResults.uniform(rows, Status.REJECTED, "EVENT_REFUSED", _message(answer) or "success is false")
    return RowResults.uniform(rows, Status.IN_DOUBT, "UNREADABLE_ANSWER", "an answer without success")
