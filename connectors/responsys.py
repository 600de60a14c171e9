"""Oracle Responsys: Trigger REI event (up to 200 recipients a request).

Auth: one login (`auth_type=password`), the bare token in `Authorization`, a refresh
(`auth_type=token`) before the token's lifetime runs out, a new login when the vendor
says the token is no longer good. `API_LIMIT_EXCEEDED` is throttling whatever the status.
No idempotency key exists: a request that may have reached Responsys is never resent blindly.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx
import orjson
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pydantic import Field, SecretStr, model_validator

from schemas.responsys import IDENTIFIERS, OPTIONAL_PREFIX, audience_model
from volley.batches import Batch
from volley.connector import (
    RECIPIENT_KEY,
    Call,
    ConnectionParams,
    Connector,
    ConnectorError,
    VendorParams,
    json_error_body,
)
from volley.outcomes import RowResults, Status
from volley.resolution import Action, Resolution
from volley.secrets import SecretRef, register_secret
from volley.sources import ROW_INDEX
from volley.text import (
    JsonPart,
    RequiredArray,
    RequiredObject,
    as_text,
    ascii_json_string,
    escape_non_ascii,
    json_array,
)

__all__ = ["ResponsysConnection", "ResponsysConnector", "ResponsysParams"]

Identifier = Literal["recipientId", "emailAddress", "customerId", "mobileNumber", "emailMD5Hash", "emailSHA256Hash"]


class ListName(VendorParams):
    folder: str | None = Field(default=None, min_length=1)
    object: str | None = Field(default=None, min_length=1)
    folder_column: str | None = None
    object_column: str | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> ListName:
        for part in ("folder", "object"):
            if (getattr(self, part) is None) == (getattr(self, f"{part}_column") is None):
                raise ValueError(f"give exactly one of '{part}' or '{part}_column'")
        return self


class OptionalField(VendorParams):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_]+$")
    column: str = Field(min_length=1)


class ResponsysParams(VendorParams):
    event: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_]+$")
    list_name: ListName = Field(alias="list")
    channel: Literal["profile", "app", "web_push"] = "profile"
    identify_by: Identifier | None = "customerId"
    identifier_column: str | None = None  # defaults to the campaign's key column
    device_id_column: str = "deviceId"
    visitor_id_column: str = "visitorId"
    api_key_column: str = "apiKey"
    email_format: Literal["HTML_FORMAT", "TEXT_FORMAT", "MULTIPART_FORMAT", "NO_FORMAT"] | None = None
    optional_data: list[str | OptionalField] = Field(default_factory=list)

    @model_validator(mode="after")
    def _profile_needs_identifier(self) -> ResponsysParams:
        if self.channel == "profile" and self.identify_by is None:
            raise ValueError("a profile-list campaign needs 'identify_by'")
        return self

    def optional_fields(self) -> list[OptionalField]:
        return [f if isinstance(f, OptionalField) else OptionalField(name=f, column=f) for f in self.optional_data]


class ResponsysConnection(ConnectionParams):
    user_name: SecretRef
    password: SecretRef
    token_ttl_seconds: float = Field(default=7200.0, gt=0)
    refresh_before_expiry_seconds: float = Field(default=900.0, ge=0)
    follow_login_endpoint: bool = True


_PREFIX = (
    b'{"reiEvent":{"eventNumberDataMapping":null,"eventDateDataMapping":null,'
    b'"eventStringDataMapping":null},"recipientData":['
)
_ERROR_CODE = re.compile(r"^[A-Z][A-Z0-9_]+$")
_ERROR_ACTIONS: Mapping[str, Action] = {
    "API_LIMIT_EXCEEDED": Action.THROTTLE,
    "INTERNAL_CAPACITY_LIMIT_EXCEEDED": Action.THROTTLE,
    "API_BLOCKED": Action.ABORT,
    "REI_EVENT_NOT_FOUND": Action.ABORT,
    "INVALID_USER_NAME_PASSWORD": Action.ABORT,
    "RECIPIENT_LIMIT_EXCEEDED": Action.FAIL,
    "INVALID_REQUEST_CONTENT": Action.FAIL,
    "INVALID_PARAMETER": Action.FAIL,
}
_ACCEPTED = Status.ACCEPTED.value
_REJECTED = Status.REJECTED.value


def _recipient_ref(recipient_id: object) -> int | None:
    """Responsys's recipientId; -1 and -2 mean the recipient could not be resolved."""
    return recipient_id if type(recipient_id) is int and recipient_id > 0 else None  # not a bool


def _all_recipient_refs(ids: list[Any]) -> bool:
    """Whether every id is a recipientId as `_recipient_ref` keeps it (a positive int, not a bool).

    The ids stay ints: the outcome writer turns them into text in one vectorized cast, where
    `str()` on each one cost the event loop 28 us a 200-recipient answer (measured)."""
    return set(map(type, ids)) == {int} and min(ids) > 0


# INTERNAL_CAPACITY_LIMIT_EXCEEDED resets every 10 minutes (VENDORS.md).
_THROTTLE_WAITS: Mapping[str, float] = {"INTERNAL_CAPACITY_LIMIT_EXCEEDED": 600.0}


class ResponsysConnector(Connector):
    name: ClassVar[str] = "responsys"
    params_model = ResponsysParams
    connection_model = ResponsysConnection
    max_batch_rows: ClassVar[int] = 200
    default_batch_rows: ClassVar[int] = 200
    repeat_safe: ClassVar[bool] = False
    throttle_backoff_seconds: ClassVar[float] = 60.0  # "back off about a minute"

    params: ResponsysParams
    connection: ResponsysConnection

    def __init__(self, params: ResponsysParams, connection: ResponsysConnection, key: str) -> None:
        super().__init__(params, connection, key)
        self._user = connection.user_name.resolve("connection.user_name", redacted=False)
        self._password: SecretStr = connection.password.resolve("connection.password")
        self._token: str | None = None
        self._endpoint = self.base_url
        self._refresh_at = 0.0
        self._lock: asyncio.Lock | None = None
        self.logins = 0
        self.refreshes = 0

    # -- data ------------------------------------------------------------------------------
    def audience_model(self) -> type[DataFrameModel]:
        return audience_model(self.params.channel, self.params.identify_by)

    def _identifier_source(self) -> str:
        return self.params.identifier_column or self.key

    def required_columns(self) -> list[str]:
        p = self.params
        columns = [f.column for f in p.optional_fields()]
        columns += [c for c in (p.list_name.folder_column, p.list_name.object_column) if c is not None]
        if p.identify_by is not None:
            columns.append(self._identifier_source())
        if p.channel == "app":
            columns += [p.device_id_column, p.api_key_column]
        if p.channel == "web_push":
            columns += [p.visitor_id_column, p.api_key_column]
        return columns

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        schema = frame.schema
        columns: list[pl.Expr] = [pl.col(ROW_INDEX), pl.col(RECIPIENT_KEY)]
        for name in IDENTIFIERS:  # an identifier the audience does not hold is left out, not null
            if name == p.identify_by:
                source = self._identifier_source()
            elif name in schema and name != self._identifier_source():
                source = name  # a competing identifier Responsys would pick by its own order
            else:
                continue
            columns.append(as_text(source, schema[source]).alias(name))
        for part, constant, column in (
            ("listFolder", p.list_name.folder, p.list_name.folder_column),
            ("listObject", p.list_name.object, p.list_name.object_column),
        ):
            columns.append(
                pl.lit(constant, dtype=pl.String).alias(part)
                if column is None
                else as_text(column, schema[column]).alias(part)
            )
        channel_columns = {"app": ("deviceId", p.device_id_column), "web_push": ("visitorId", p.visitor_id_column)}
        if p.channel in channel_columns:
            target, source = channel_columns[p.channel]
            columns.append(as_text(source, schema[source]).alias(target))
            columns.append(as_text(p.api_key_column, schema[p.api_key_column]).alias("apiKey"))
        for field in p.optional_fields():
            dtype = schema[field.column]
            if dtype.is_nested():
                raise TypeError(f"column {field.column!r} holds {dtype}; expected scalar values")
            values = pl.col(field.column)
            text = (
                values.dt.to_string("%Y-%m-%d %H:%M:%S")
                if isinstance(dtype, pl.Datetime)
                else values.cast(pl.String, strict=False)
            )
            columns.append(text.alias(f"{OPTIONAL_PREFIX}{field.name}"))
        return frame.select(columns)

    def encode_rows(self, frame: pl.DataFrame) -> pl.Series:
        p = self.params

        def text(column: str) -> pl.Expr:
            # Responsys wants ASCII: non-ASCII characters as \uXXXX, looked for in the values only
            # (the JSON around them is ASCII already, and scanning it cost more than the encoding).
            return ascii_json_string(frame[column])

        # Every recipient value is required by the audience model, so the payload is one concatenation
        # (RequiredObject) but for optionalData, whose null items are left out.
        recipient: list[tuple[str, JsonPart | RequiredObject]] = []
        if p.identify_by is not None:
            recipient.append((p.identify_by, text(p.identify_by)))

        def folder_or_object(part: str, constant: str | None, column: str | None) -> JsonPart:
            if column is None:  # the spec's constant, encoded once rather than on every row
                return escape_non_ascii(json.dumps(constant, ensure_ascii=False))
            return text(part)

        list_name = p.list_name
        folder = folder_or_object("listFolder", list_name.folder, list_name.folder_column)
        table = folder_or_object("listObject", list_name.object, list_name.object_column)
        recipient.append(("listName", RequiredObject([("folderName", folder), ("objectName", table)])))
        if p.email_format is not None:
            recipient.append(("emailFormat", json.dumps(p.email_format)))
        if p.channel == "app":
            recipient.append(
                ("mobileAppRecipient", RequiredObject([("deviceId", text("deviceId")), ("apiKey", text("apiKey"))]))
            )
        if p.channel == "web_push":
            device: list[tuple[str, JsonPart | RequiredObject]] = [
                ("visitorId", text("visitorId")),
                ("apiKey", text("apiKey")),
            ]
            recipient.append(("webPushAppRecipient", RequiredObject(device)))
        members: list[tuple[str, JsonPart | RequiredObject | RequiredArray]] = [
            ("recipient", RequiredObject(recipient))
        ]
        fields = p.optional_fields()
        columns = [f"{OPTIONAL_PREFIX}{f.name}" for f in fields]
        if fields and not any(frame[column].has_nulls() for column in columns):
            # Every item there in every row: the whole payload is one concatenation (the bench
            # audience's 100k rows: 31 -> 16 ms of CPU without the escaping, measured).
            required = [
                RequiredObject([("name", json.dumps(f.name)), ("value", text(c))])
                for f, c in zip(fields, columns, strict=True)
            ]
            members.append(("optionalData", RequiredArray(required)))
        elif fields:
            # An item whose value is null is null as a whole, and json_array leaves it out.
            items = [
                pl.concat_str([pl.lit(f'{{"name":{json.dumps(f.name)},"value":'), text(c), pl.lit("}")])
                for f, c in zip(fields, columns, strict=True)
            ]
            members.append(("optionalData", json_array(items)))
        return frame.select(RequiredObject(members).expr().alias("payload")).to_series()

    def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
        body = b"".join((_PREFIX, batch.joined_payload, b"]}"))  # ASCII: encode_rows escapes the rest
        return Call(
            "POST",
            f"{self._endpoint}/rest/api/v1.3/events/rei/{self.params.event}",
            content=body,
            headers={
                **auth_headers,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-Request-Id": batch.batch_id,
            },
        )

    def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, list) or len(answer) != len(batch):
            # Responsys acted on the request but we cannot tell for whom.
            return RowResults.uniform(
                len(batch), Status.IN_DOUBT, "UNREADABLE_ANSWER", "a 200 answer without one result per recipient"
            )
        try:  # the usual answer, read in two passes (measured 92 -> 80 us for 200 results)
            ids = [item["recipientId"] for item in answer]
            accepted = all([item["success"] is True for item in answer])
        except (KeyError, TypeError):  # a result without one of them, or not an object
            ids, accepted = [], False
        if accepted:
            refs = ids if _all_recipient_refs(ids) else list(map(_recipient_ref, ids))
            return RowResults([_ACCEPTED] * len(answer), [None] * len(answer), [None] * len(answer), refs)
        if not all(isinstance(item, dict) for item in answer):
            return RowResults.uniform(len(batch), Status.IN_DOUBT, "UNREADABLE_ANSWER", "results are not objects")
        refs = [_recipient_ref(item.get("recipientId")) for item in answer]
        status: list[str] = []
        codes: list[str | None] = []
        messages: list[str | None] = []
        for item in answer:
            if item.get("success") is True:
                status.append(_ACCEPTED)
                codes.append(None)
                messages.append(None)
            else:
                message = str(item.get("errorMessage") or "rejected without a message").strip()
                status.append(_REJECTED)
                codes.append(message if _ERROR_CODE.match(message) else "RECIPIENT_REJECTED")
                messages.append(message)
        return RowResults(status, codes, messages, refs)

    # -- answers -----------------------------------------------------------------------------
    def error_resolution(self, response: httpx.Response) -> Resolution | None:
        body = json_error_body(response)
        code = body.get("errorCode") if body else None
        if not isinstance(code, str):
            return None
        detail = " ".join(str(body.get(k) or "") for k in ("title", "detail")).strip() if body else ""
        message = f"{code}: {detail}" if detail else code
        action = _ERROR_ACTIONS.get(code)
        if action is None:
            if response.status_code == 401:
                action = Action.REFRESH_AUTH
            elif response.status_code >= 500:
                action = Action.RETRY
            else:
                action = Action.FAIL
        wait = _THROTTLE_WAITS.get(code) if action is Action.THROTTLE else None
        return Resolution(action, code, message, wait)

    # -- auth --------------------------------------------------------------------------------
    def _auth_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        if self._token is None or time.monotonic() >= self._refresh_at:
            async with self._auth_lock():
                if self._token is None:
                    await self._login(client)
                elif time.monotonic() >= self._refresh_at:
                    await self._refresh(client)
        assert self._token is not None
        return {"Authorization": self._token}

    async def reauthorize(self, client: httpx.AsyncClient, stale: Mapping[str, str]) -> None:
        async with self._auth_lock():
            if self._token is None or stale.get("Authorization") == self._token:
                await self._login(client)

    async def _login(self, client: httpx.AsyncClient) -> None:
        self.logins += 1
        form = {
            "user_name": self._user.get_secret_value(),
            "password": self._password.get_secret_value(),
            "auth_type": "password",
        }
        await self._token_call(client, form, {})

    async def _refresh(self, client: httpx.AsyncClient) -> None:
        self.refreshes += 1
        assert self._token is not None
        try:
            await self._token_call(client, {"auth_type": "token"}, {"Authorization": self._token})
        except ConnectorError as exc:
            if exc.resolution.action is not Action.THROTTLE:
                await self._login(client)
                return
            raise

    async def _token_call(self, client: httpx.AsyncClient, form: dict[str, str], headers: dict[str, str]) -> None:
        response = await client.post(f"{self.base_url}/rest/api/v1.3/auth/token", data=form, headers=headers)
        if response.status_code != 200:
            resolution = self.classify(response)
            if resolution.action is Action.REFRESH_AUTH:
                resolution = Resolution(Action.ABORT, resolution.error_code or "AUTH_FAILED", resolution.message)
            raise ConnectorError(resolution, response.status_code)
        answer: dict[str, Any] = orjson.loads(response.content)
        token = str(answer["authToken"])
        register_secret(token)
        self._token = token
        if self.connection.follow_login_endpoint and answer.get("endPoint"):
            self._endpoint = str(answer["endPoint"]).rstrip("/")
        lifetime = self.connection.token_ttl_seconds
        self._refresh_at = time.monotonic() + max(
            lifetime - self.connection.refresh_before_expiry_seconds, lifetime / 2
        )
