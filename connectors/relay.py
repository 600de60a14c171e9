"""Relay Network: trigger an experience for customers (bulk by default, or one at a time).

Bulk: `POST {base}/messaging/client/{client_id}/journey_trigger` with `{"batch": [item, ...]}`,
at most 100 items (more is a 400). Single (`mode: single`): `POST {base}/messaging/client/
{client_id}/journey_trigger/{trigger_id}/customer/{ccid}` with the item minus trigger_id and
ccid, one customer a request. An item: `trigger_id`, `ccid`, optional `journey_id`,
`asset_id`, `client_message_tag`, `input_parameters` (every key starts with `input_`), and
`lb_name` / `lb_source` naming Volley and the campaign (placed at the item's top level: the
docs name the two fields, not the object holding them; `connection.lb_object` nests them).
Base URL: `https://api.relayzone.com/platform/v3/api` (staging `api.relaystaging.com`).

Inputs: `inputs` lists columns (or `{name, column}`) sent as `input_<name>`; a name already
starting with `input_` keeps it. Audience columns already named `input_*` are sent as they
are (`forward_input_columns`, on by default: that is Relay's own naming). Two entries of
`inputs` landing on one key is a spec error. An entry mapped onto the name of an audience
column (`first_name` -> `input_first_name` while the audience also has `input_first_name`)
is a clash: a row where both hold different values is `invalid` (`input_first_name.key_clash`),
a row where they agree or one is empty sends the value it has. Empty inputs are left out.

The answer per customer (documented fields; the exact JSON is *unconfirmed*):
`{"message": {"status": "sent" | "not-sent" | "error"}, "notification": {"results":
[{"channel_addr", "channel_type", "status"}]}}`. The bulk answer's shape is not documented;
Volley reads (and its simulator answers) `{"results": [{"trigger_id", "ccid", "message",
"notification"}, ...]}`, one result per item in request order -- an answer that does not
line up with the request is `in_doubt`. sent -> `accepted`, not-sent -> `rejected`, error ->
`failed`; every row's `details` holds the message status and the per-channel results with
the address masked (`{"message_status": ..., "notifications": [{"channel_addr": "***1234",
"channel_type": "sms", "status": "no-consent"}]}`), for counting no-consent numbers.

Errors: 400 (bad body), 404 (unknown trigger, journey or client) and 409 fail the batch;
401 and 403 stop the run; 500 is retried; 429 (not documented; the simulator's) throttles.
Relay drops the same ccid + journey component + inputs within 15 minutes as a duplicate:
a safety net, not an idempotency key, so a request whose answer was lost stays `in_doubt`.

Status look-up (settles rows left in doubt before a re-run plans): `GET {status_base_url}/
experience-status/1.0/client/{client_id}/customer/{ccid}/trigger_status` (`status_base_url`
defaults to `base_url`: the same host, not under `/messaging`), same API key header, one
request per ccid, at most `look_up_concurrency` at a time. The answer's shape is not
documented; Volley reads (and its simulator answers) `{"ccid": "CRD-1", "triggers":
[{"trigger_id": "Delivery-Reminder-2", "journey_id": "...", "status": "sent" | "not-sent" |
"error", "triggered_at": "2026-11-23T10:15:00.123Z"}]}`, every trigger Relay recorded for the
customer (an empty list: none). Only triggers at or after the start of the run that sent the
row count (less `look_up_clock_skew`; older ones are another run key's). Of those:
- one of the campaign's trigger_id: `sent` (any) -> `accepted`, else the latest `not-sent` ->
  `rejected`, `error` -> `failed`, as the lost answer would have said; another status (still
  pending?) or a trigger without a readable `triggered_at` -> still in doubt;
- none at all -> `NOT_RECEIVED`: the request never reached Relay, the row is sent again
  (a request still queued at Relay would meet its 15-minute duplicate check);
- only other trigger ids -> still in doubt (Relay may report the generated id of a trigger
  sent by its friendly id, or the reverse; *unconfirmed*).
A failed look-up (transport error, 404 unknown ccid, 5xx, 429, an unreadable answer) leaves
the row in doubt, with one warning per call that counts the reasons. The look-up needs the
ccid to be the campaign key and one `trigger_id` for the campaign; otherwise rows stay in doubt.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
import orjson
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pydantic import Field, model_validator

from schemas.relay import AUDIENCE_PREFIX, INPUT_PREFIX, MAX_LENGTH, audience_model
from volley.batches import Batch
from volley.connector import (
    NOT_RECEIVED,
    RECIPIENT_KEY,
    Call,
    ConnectionParams,
    Connector,
    LookUpAnswer,
    VendorParams,
    json_error_body,
)
from volley.outcomes import RowResults, Status
from volley.resolution import Action, Resolution
from volley.secrets import SecretRef
from volley.sources import ROW_INDEX
from volley.text import as_text, json_object, json_string

__all__ = ["RelayConnection", "RelayConnector", "RelayInput", "RelayParams", "mask_address", "read_trigger_status"]

log = logging.getLogger("volley.connectors.relay")

API_KEY_HEADER = "xx-relay-api-key"
_KEY = r"^input_[A-Za-z0-9_.-]+$"
_NAME = r"^[A-Za-z0-9_.-]+$"
_ERRORS: Mapping[int, tuple[Action, str]] = {
    400: (Action.FAIL, "BAD_REQUEST"),
    401: (Action.ABORT, "UNAUTHORIZED"),
    403: (Action.ABORT, "FORBIDDEN"),
    404: (Action.FAIL, "NOT_FOUND"),
    409: (Action.FAIL, "CONFLICT"),
    500: (Action.RETRY, "SERVER_ERROR"),
}
_OUTCOMES: Mapping[str, tuple[Status, str | None]] = {
    "sent": (Status.ACCEPTED, None),
    "not-sent": (Status.REJECTED, "NOT_SENT"),
    "error": (Status.FAILED, "MESSAGE_ERROR"),
}


def input_key(name: str) -> str:
    return name if name.startswith(INPUT_PREFIX) else f"{INPUT_PREFIX}{name}"


class RelayInput(VendorParams):
    name: str = Field(min_length=1, pattern=_NAME)  # the input, with or without `input_`
    column: str = Field(min_length=1)

    @property
    def key(self) -> str:
        return input_key(self.name)


class RelayParams(VendorParams):
    mode: Literal["bulk", "single"] = "bulk"
    trigger_id: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH)
    trigger_id_column: str | None = None
    ccid_column: str | None = None  # default: the campaign key
    journey_id: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH)
    asset_id: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH)
    client_message_tag: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH)
    client_message_tag_column: str | None = None
    inputs: list[str | RelayInput] = Field(default_factory=list)
    forward_input_columns: bool = True
    lb_name: str = Field(default="volley", min_length=1, max_length=MAX_LENGTH)
    lb_source: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH)  # default: the campaign name

    @model_validator(mode="after")
    def _consistent(self) -> RelayParams:
        if (self.trigger_id is None) == (self.trigger_id_column is None):
            raise ValueError("give exactly one of 'trigger_id' or 'trigger_id_column'")
        if self.client_message_tag is not None and self.client_message_tag_column is not None:
            raise ValueError("give at most one of 'client_message_tag' or 'client_message_tag_column'")
        sources: dict[str, str] = {}
        for entry in self.input_fields():
            if not re.match(_KEY, entry.key):
                raise ValueError(f"input {entry.column!r} would be sent as {entry.key!r}: use {{name, column}}")
            if entry.key in sources:
                raise ValueError(
                    f"inputs: columns {sources[entry.key]!r} and {entry.column!r} are both sent as {entry.key!r}"
                )
            sources[entry.key] = entry.column
        return self

    def input_fields(self) -> list[RelayInput]:
        fields = []
        for entry in self.inputs:
            if isinstance(entry, RelayInput):
                fields.append(entry)
            else:
                fields.append(RelayInput.model_construct(name=entry, column=entry))
        return fields


class RelayConnection(ConnectionParams):
    client_id: str = Field(min_length=1, pattern=_NAME)
    api_key: SecretRef
    lb_object: str | None = Field(default=None, min_length=1)  # nest lb_name/lb_source under this key
    # Where the status look-up lives, when not on `base_url` (its path there is *unconfirmed*).
    status_base_url: str | None = Field(default=None, min_length=1, pattern=r"^https?://")


def mask_address(address: object) -> str | None:
    """A channel address with all but its last four characters hidden."""
    if address is None:
        return None
    text = str(address)
    return f"***{text[-4:]}" if len(text) > 4 else "***"


class RelayConnector(Connector):
    name: ClassVar[str] = "relay"
    params_model = RelayParams
    connection_model = RelayConnection
    max_batch_rows: ClassVar[int] = 100
    default_batch_rows: ClassVar[int] = 100
    repeat_safe: ClassVar[bool] = False
    supports_look_up: ClassVar[bool] = True
    look_up_concurrency: ClassVar[int] = 8
    # Relay's clock may be behind ours: its triggers this long before the run started still count.
    look_up_clock_skew: ClassVar[timedelta] = timedelta(minutes=5)

    params: RelayParams
    connection: RelayConnection

    def __init__(self, params: RelayParams, connection: RelayConnection, key: str) -> None:
        super().__init__(params, connection, key)
        self._api_key = connection.api_key.resolve("connection.api_key")
        self._single = params.mode == "single"
        self._inputs = params.input_fields()
        client_id = quote(connection.client_id, safe="")
        self._client_url = f"{self.base_url}/messaging/client/{client_id}/journey_trigger"
        status_base = (connection.status_base_url or self.base_url).rstrip("/")
        self._status_url = f"{status_base}/experience-status/1.0/client/{client_id}/customer"
        self._model: type[DataFrameModel] | None = None

    def batch_limits(self) -> tuple[int, int]:
        return (1, 1) if self._single else (self.default_batch_rows, self.max_batch_rows)

    # -- data ------------------------------------------------------------------------------
    def audience_model(self) -> type[DataFrameModel]:
        if self._model is None:
            self._model = audience_model([(entry.key, entry.column) for entry in self._inputs])
        return self._model

    def _ccid_source(self) -> str:
        return self.params.ccid_column or self.key

    def required_columns(self) -> list[str]:
        p = self.params
        columns = [entry.column for entry in self._inputs]
        columns += [c for c in (p.trigger_id_column, p.client_message_tag_column) if c is not None]
        return [*columns, self._ccid_source()]

    def _forwarded(self, schema: pl.Schema) -> list[str]:
        """Audience columns already named `input_*` that go out as they are."""
        if not self.params.forward_input_columns:
            return []
        taken = {entry.key for entry in self._inputs} | {entry.column for entry in self._inputs}
        return [c for c in schema.names() if c.startswith(INPUT_PREFIX) and c not in taken]

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        schema = frame.schema

        def text(column: str) -> pl.Expr:
            return as_text(column, schema[column])

        columns: list[pl.Expr] = [
            pl.col(ROW_INDEX),
            pl.col(RECIPIENT_KEY),
            (pl.lit(p.trigger_id) if p.trigger_id_column is None else text(p.trigger_id_column)).alias("trigger_id"),
            text(self._ccid_source()).alias("ccid"),
        ]
        if p.client_message_tag is not None:
            columns.append(pl.lit(p.client_message_tag).alias("client_message_tag"))
        elif p.client_message_tag_column is not None:
            columns.append(text(p.client_message_tag_column).alias("client_message_tag"))
        for entry in self._inputs:
            columns.append(text(entry.column).alias(entry.key))
            if entry.key != entry.column and entry.key in schema and p.forward_input_columns:
                columns.append(text(entry.key).alias(f"{AUDIENCE_PREFIX}{entry.key}"))
        columns += [text(column).alias(column) for column in self._forwarded(schema)]
        return frame.select(columns)

    def _lb(self) -> list[tuple[str, pl.Expr]]:
        fields = [("lb_name", _constant(self.params.lb_name))]
        source = self.params.lb_source or self.campaign_name
        if source is not None:
            fields.append(("lb_source", _constant(source[:MAX_LENGTH])))
        if self.connection.lb_object is None:
            return fields
        return [(self.connection.lb_object, json_object(fields))]

    def encode_rows(self, frame: pl.DataFrame) -> pl.Series:
        p = self.params
        item = [("trigger_id", json_string(pl.col("trigger_id"))), ("ccid", json_string(pl.col("ccid")))]
        for name, constant in (("journey_id", p.journey_id), ("asset_id", p.asset_id)):
            if constant is not None:
                item.append((name, _constant(constant)))
        optional = [c for c in frame.columns if c.startswith(INPUT_PREFIX)]
        if "client_message_tag" in frame.columns:
            item.append(("client_message_tag", json_string(pl.col("client_message_tag"))))  # left out when null
        if optional:

            def value(c: str) -> pl.Expr:
                # An input mapped onto an audience `input_*` column: the model checked that they agree.
                audience = f"{AUDIENCE_PREFIX}{c}"
                return pl.coalesce(c, audience) if audience in frame.columns else pl.col(c)

            # An input without a value is left out.
            item.append(("input_parameters", json_object([(c, json_string(value(c))) for c in optional])))
        item += self._lb()
        return frame.select(json_object(item).alias("payload")).to_series()

    def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
        headers = {
            **auth_headers,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Request-Id": batch.batch_id,
        }
        if not self._single:
            body = b"".join((b'{"batch":[', batch.joined_payload, b"]}"))
            return Call("POST", self._client_url, content=body, headers=headers)
        if len(batch) != 1:
            raise ValueError(f"single mode sends one customer a request, not {len(batch)}")
        item: dict[str, Any] = orjson.loads(batch.payload[0])
        trigger_id = quote(str(item.pop("trigger_id")), safe="")
        ccid = quote(str(item.pop("ccid")), safe="")
        url = f"{self._client_url}/{trigger_id}/customer/{ccid}"
        return Call("POST", url, content=orjson.dumps(item), headers=headers)

    def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        results: Any = [answer] if self._single else (answer.get("results") if isinstance(answer, dict) else None)
        if not isinstance(results, list) or len(results) != len(batch) or not all(isinstance(r, dict) for r in results):
            return RowResults.uniform(
                len(batch), Status.IN_DOUBT, "UNREADABLE_ANSWER", "an answer without one result per customer"
            )
        if not self._single and not _lines_up(batch, results):
            return RowResults.uniform(
                len(batch), Status.IN_DOUBT, "UNREADABLE_ANSWER", "the answer's customers do not match the request"
            )
        rows = RowResults([], [], [], [], [])
        assert rows.details is not None
        for result in results:
            status, code, message, details = _read_result(result)
            rows.status.append(status)
            rows.error_code.append(code)
            rows.error_message.append(message)
            rows.vendor_ref.append(None)
            rows.details.append(details)
        return rows

    # -- answers -----------------------------------------------------------------------------
    def error_resolution(self, response: httpx.Response) -> Resolution | None:
        known = _ERRORS.get(response.status_code)
        if known is None:
            return None
        action, code = known
        return Resolution(action, code, _error_message(response))

    # -- settling rows in doubt -----------------------------------------------------------------
    async def look_up(
        self, client: httpx.AsyncClient, keys: list[str], since: datetime | None = None
    ) -> dict[str, LookUpAnswer]:
        """Each customer's `trigger_status`, concurrently (see the module docstring)."""
        trigger_id = self.params.trigger_id
        if trigger_id is None or self._ccid_source() != self.key:
            log.warning(
                "relay status look-up skipped: it needs the campaign key as the ccid and one trigger_id; "
                "%d rows stay in doubt",
                len(keys),
            )
            return {}
        headers = {**await self.authorize(client), "Accept": "application/json"}
        earliest = None if since is None else _utc(since) - self.look_up_clock_skew
        gate = asyncio.Semaphore(self.look_up_concurrency)
        problems: Counter[str] = Counter()

        async def one(ccid: str) -> LookUpAnswer | None:
            async with gate:
                try:
                    response = await client.get(
                        f"{self._status_url}/{quote(ccid, safe='')}/trigger_status", headers=headers
                    )
                except (httpx.HTTPError, OSError, TimeoutError) as exc:
                    problems[type(exc).__name__] += 1
                    return None
            if response.status_code != 200:
                problems[f"HTTP {response.status_code}"] += 1
                return None
            answer = read_trigger_status(response.content, ccid, trigger_id, earliest)
            if answer is None:
                problems["no clear answer"] += 1
            return answer

        answers = await asyncio.gather(*(one(key) for key in keys))
        if problems:
            reasons = ", ".join(f"{why} x{n}" for why, n in problems.most_common())
            log.warning(
                "relay status look-up: %d of %d rows stay in doubt (%s)", sum(problems.values()), len(keys), reasons
            )
        return {key: answer for key, answer in zip(keys, answers, strict=True) if answer is not None}

    # -- auth --------------------------------------------------------------------------------
    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        return {API_KEY_HEADER: self._api_key.get_secret_value()}


def _constant(text: str) -> pl.Expr:
    return json_string(pl.lit(text, dtype=pl.String))


def _lines_up(batch: Batch, results: list[dict[str, Any]]) -> bool:
    """Each result names the customer at its position (when it names one at all)."""
    for fragment, result in zip(batch.payload, results, strict=True):
        if "ccid" not in result and "trigger_id" not in result:
            continue
        sent = orjson.loads(fragment)
        if str(result.get("ccid")) != str(sent["ccid"]) or str(result.get("trigger_id")) != str(sent["trigger_id"]):
            return False
    return True


def _read_result(result: dict[str, Any]) -> tuple[str, str | None, str | None, str]:
    message = result.get("message")
    message_status = message.get("status") if isinstance(message, dict) else None
    notification = result.get("notification")
    channels = notification.get("results") if isinstance(notification, dict) else None
    notifications = [
        {
            "channel_addr": mask_address(channel.get("channel_addr")),
            "channel_type": channel.get("channel_type"),
            "status": channel.get("status"),
        }
        for channel in channels or []
        if isinstance(channel, dict)
    ]
    details = orjson.dumps({"message_status": message_status, "notifications": notifications}).decode()
    known = _OUTCOMES.get(message_status) if isinstance(message_status, str) else None
    if known is None:
        return Status.IN_DOUBT.value, "UNREADABLE_ANSWER", f"unknown message status {message_status!r}", details
    status, code = known
    if status is Status.ACCEPTED:
        return status.value, None, None, details
    reason = message.get("error") or message.get("reason") if isinstance(message, dict) else None
    text = f"{message_status}: {reason}" if reason else str(message_status)
    if notifications:
        text += "; channels: " + ", ".join(str(n["status"]) for n in notifications)
    return status.value, code, text, details


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _triggered_at(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def read_trigger_status(content: bytes, ccid: str, trigger_id: str, earliest: datetime | None) -> LookUpAnswer | None:
    """What a `trigger_status` answer says of the campaign's trigger for `ccid` (None: cannot tell)."""
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    triggers = answer.get("triggers") if isinstance(answer, dict) else None
    if not isinstance(triggers, list) or not isinstance(answer, dict) or str(answer.get("ccid", ccid)) != ccid:
        return None
    relevant: list[tuple[datetime | None, str, object]] = []
    for trigger in triggers:
        if not isinstance(trigger, dict):
            return None
        at = _triggered_at(trigger.get("triggered_at"))
        if earliest is not None:
            if at is None:
                return None  # cannot tell whether it is this run key's
            if at < earliest:
                continue
        relevant.append((at, str(trigger.get("trigger_id")), trigger.get("status")))
    ours = [(at, status) for at, trigger, status in relevant if trigger == trigger_id]
    if not ours:
        return None if relevant else NOT_RECEIVED
    statuses = [status for _, status in ours]
    if "sent" in statuses:
        return Status.ACCEPTED
    if not all(isinstance(status, str) and status in _OUTCOMES for status in statuses):
        return None
    oldest = datetime.min.replace(tzinfo=UTC)
    _, latest = max(ours, key=lambda entry: entry[0] or oldest)
    return _OUTCOMES[str(latest)][0]


def _error_message(response: httpx.Response, limit: int = 300) -> str:
    body = json_error_body(response)
    if body is not None:
        for name in ("message", "detail", "error"):
            value = body.get(name)
            if isinstance(value, str) and value:
                return value[:limit]
    text = response.text.strip().replace("\n", " ")
    return text[:limit] if text else (response.reason_phrase or f"HTTP {response.status_code}")
