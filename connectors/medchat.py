"""MedChat journeys: bulk trigger of journey instances (main flow or subflow), and cancel.

Trigger: `POST {base}/chatbotapi/external/orgs/{orgId}/journeys/{chatBotId}/instances/bulk`
with `{"flowId", "timeZone", "instances": [{"parameters": {name: text}}]}`. `flowId` is null
for the main flow, a subflow id to run a subflow on existing instances (matched by the
journey's instance-identifier parameters). Every parameter value is a string; datetimes are
formatted as the journey expects, on the wall clock of `timeZone` (an IANA name).

Answers: 204 accepts every instance of the request (there is no per-instance result, so no
vendor_ref); 400 with an array of messages refuses the whole request: every row of the batch
is `rejected` with the messages. MedChat publishes no maximum per request: 100 by default,
at most `connection.max_instances_per_request` (1000 unless the account says otherwise) --
a 400 refuses the whole request, so a bigger batch only widens what one bad row takes down,
and 1000 instances stay a few hundred KB.

Cancel (`operation: cancel`, what `volley cancel` runs): `DELETE {base}/chatbotapi/orgs/{orgId}
/journeys/{chatBotId}/instances/{journeyInstanceId}/execution`, one instance a request;
204 cancelled (`accepted`), 404 unknown instance (`rejected`).

Auth: a static bearer token (no refresh): 401 or 403 stops the run. No idempotency key is
documented, so a request whose answer was lost is never resent (`in_doubt`).
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
import orjson
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pydantic import Field, field_validator, model_validator

from schemas.medchat import (
    INSTANCE_ID,
    PARAMETER_PREFIX,
    MedChatCancelAudience,
    ParameterRule,
    has_offset,
    parse_datetime,
    trigger_model,
)
from volley.batches import Batch
from volley.connector import RECIPIENT_KEY, Call, ConnectionParams, Connector, VendorParams
from volley.outcomes import RowResults, Status
from volley.resolution import Action, Resolution
from volley.secrets import SecretRef
from volley.sources import ROW_INDEX
from volley.text import as_text, json_object, json_string

__all__ = ["CANCEL_KEY", "JourneyParameter", "MedChatConnection", "MedChatConnector", "MedChatParams"]

CANCEL_KEY = "journey_instance_id"
DEFAULT_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_PATH_SEGMENT = r"^[A-Za-z0-9_.~-]+$"
_MESSAGES_LIMIT = 2000


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def _check_format(fmt: str) -> str:
    try:
        pl.Series([datetime(2023, 12, 1, 8, 30)]).dt.to_string(fmt)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{fmt!r} is not a usable strftime format: {exc}") from None
    return fmt


class JourneyParameter(VendorParams):
    """One journey parameter: the audience column it comes from and how it is written."""

    column: str = Field(min_length=1)
    type: Literal["string", "datetime"] = "string"
    # How the journey expects datetimes (strftime); MedChat's example is 2023-12-01 08:00:00.
    format: str = DEFAULT_DATETIME_FORMAT
    # How the audience writes them when the column is text; default ISO 8601.
    source_format: str | None = None
    # An optional parameter with no value is sent as "" (MedChat wants every parameter).
    required: bool = True

    @model_validator(mode="after")
    def _formats(self) -> JourneyParameter:
        _check_format(self.format)
        if self.source_format is not None:
            _check_format(self.source_format)
        return self


class MedChatParams(VendorParams):
    operation: Literal["trigger", "cancel"] = "trigger"
    chatbot_id: str = Field(min_length=1, pattern=_PATH_SEGMENT)
    flow_id: str | None = Field(default=None, min_length=1)  # null: the main flow
    time_zone: str | None = None  # IANA name; required with any datetime parameter
    # journey parameter name -> column name, or {column, type, format, source_format, required}
    parameters: dict[str, JourneyParameter] = Field(default_factory=dict)
    instance_id_column: str | None = None  # cancel: default the campaign key

    @field_validator("parameters", mode="before")
    @classmethod
    def _column_shorthand(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {name: {"column": p} if isinstance(p, str) else p for name, p in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MedChatParams:
        if self.time_zone is not None and self.time_zone not in _time_zones():
            raise ValueError(f"time_zone {self.time_zone!r} is not an IANA time zone name (e.g. America/Chicago, UTC)")
        if self.operation == "cancel":
            return self
        if not self.parameters:
            raise ValueError("a trigger needs 'parameters' (journey parameter name -> column)")
        if any(not name.strip() for name in self.parameters):
            raise ValueError("parameter names must not be empty")
        dated = [name for name, p in self.journey_parameters().items() if p.type == "datetime"]
        if dated and self.time_zone is None:
            raise ValueError(f"time_zone is required: parameter {dated[0]!r} is a datetime")
        return self

    def journey_parameters(self) -> dict[str, JourneyParameter]:
        return self.parameters


class MedChatConnection(ConnectionParams):
    org_id: str = Field(min_length=1, pattern=_PATH_SEGMENT)
    token: SecretRef
    # MedChat publishes no maximum (unconfirmed): raise it if the account allows more.
    max_instances_per_request: int = Field(default=1000, ge=1)


class MedChatConnector(Connector):
    name: ClassVar[str] = "medchat"
    params_model = MedChatParams
    connection_model = MedChatConnection
    max_batch_rows: ClassVar[int] = 1000
    default_batch_rows: ClassVar[int] = 100
    repeat_safe: ClassVar[bool] = False

    params: MedChatParams
    connection: MedChatConnection

    def __init__(self, params: MedChatParams, connection: MedChatConnection, key: str) -> None:
        super().__init__(params, connection, key)
        self._token = connection.token.resolve("connection.token")
        self._parameters = params.journey_parameters()
        self._cancel = params.operation == "cancel"
        journey = f"orgs/{connection.org_id}/journeys/{params.chatbot_id}"
        self._bulk_url = f"{self.base_url}/chatbotapi/external/{journey}/instances/bulk"
        self._instances_url = f"{self.base_url}/chatbotapi/{journey}/instances"
        head: dict[str, Any] = {"flowId": params.flow_id}
        if params.time_zone is not None:
            head["timeZone"] = params.time_zone
        self._prefix = orjson.dumps(head)[:-1] + b',"instances":['
        self._model: type[DataFrameModel] | None = None

    @classmethod
    def cancel_overrides(cls) -> dict[str, Any]:
        """What a cancel run lays over the trigger spec (besides its source): see flows/cancel.py."""
        return {"key": CANCEL_KEY, "batch_size": None, "vendor_params": {"operation": "cancel"}}

    def batch_limits(self) -> tuple[int, int]:
        if self._cancel:
            return 1, 1
        cap = self.connection.max_instances_per_request
        return min(self.default_batch_rows, cap), cap

    def _rules(self) -> list[ParameterRule]:
        return [
            ParameterRule(name, p.required, p.type == "datetime", p.source_format)
            for name, p in self._parameters.items()
        ]

    # -- data ------------------------------------------------------------------------------
    def audience_model(self) -> type[DataFrameModel]:
        if self._model is None:
            self._model = MedChatCancelAudience if self._cancel else trigger_model(self._rules(), self.params.time_zone)
        return self._model

    def _instance_source(self) -> str:
        return self.params.instance_id_column or self.key

    def required_columns(self) -> list[str]:
        if self._cancel:
            return [self._instance_source()]
        return [p.column for p in self._parameters.values()]

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        schema = frame.schema
        columns: list[pl.Expr] = [pl.col(ROW_INDEX), pl.col(RECIPIENT_KEY)]
        if self._cancel:
            source = self._instance_source()
            columns.append(as_text(source, schema[source]).alias(INSTANCE_ID))
            return frame.select(columns)
        for name, p in self._parameters.items():
            dtype = schema[p.column]
            text = self._datetime_text(p, dtype) if p.type == "datetime" else as_text(p.column, dtype)
            columns.append(text.alias(f"{PARAMETER_PREFIX}{name}"))
        return frame.select(columns)

    def _datetime_text(self, p: JourneyParameter, dtype: pl.DataType) -> pl.Expr:
        """A datetime parameter as text the model can check: temporal columns are written in the
        parameter's `source_format` (ISO 8601 by default), aware ones moved to the journey's zone."""
        if not isinstance(dtype, pl.Datetime | pl.Date):
            return as_text(p.column, dtype)
        zone = self.params.time_zone
        assert zone is not None  # the params model requires it with a datetime parameter
        value = pl.col(p.column).cast(pl.Datetime("us")) if isinstance(dtype, pl.Date) else pl.col(p.column)
        aware = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
        fmt = p.source_format or "%Y-%m-%d %H:%M:%S%.f"
        if p.source_format is not None and has_offset(p.source_format):
            value = value.dt.convert_time_zone(zone) if aware else value.dt.replace_time_zone(zone)
        elif aware:
            value = value.dt.convert_time_zone(zone).dt.replace_time_zone(None)
        return value.dt.to_string(fmt)

    def encode_rows(self, frame: pl.DataFrame) -> pl.Series:
        if self._cancel:
            return frame[INSTANCE_ID].alias("payload")
        zone = self.params.time_zone
        values: list[tuple[str, pl.Expr]] = []
        for name, p in self._parameters.items():
            value = pl.col(f"{PARAMETER_PREFIX}{name}")
            if p.type == "datetime":
                assert zone is not None
                value = parse_datetime(value, zone, p.source_format).dt.to_string(p.format)
            if not p.required:
                value = value.fill_null("")
            values.append((name, json_string(value)))
        instance = json_object([("parameters", json_object(values))])
        return frame.select(instance.alias("payload")).to_series()

    def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
        headers = {**auth_headers, "Accept": "application/json", "X-Request-Id": batch.batch_id}
        if self._cancel:
            if len(batch) != 1:
                raise ValueError(f"a cancel request takes one journey instance, not {len(batch)}")
            instance = quote(batch.payload[0], safe="")
            return Call("DELETE", f"{self._instances_url}/{instance}/execution", headers=headers)
        body = b"".join((self._prefix, batch.joined_payload, b"]}"))
        return Call("POST", self._bulk_url, content=body, headers={**headers, "Content-Type": "application/json"})

    def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
        if response.is_success:
            return RowResults.uniform(len(batch), Status.ACCEPTED)
        messages = _messages(response) or [_text(response)]
        text = "; ".join(messages)
        if len(text) > _MESSAGES_LIMIT:
            text = text[: _MESSAGES_LIMIT - 1] + "…"
        code = "INSTANCE_NOT_FOUND" if self._cancel else "REQUEST_REJECTED"
        return RowResults.uniform(len(batch), Status.REJECTED, code, text)

    # -- answers -----------------------------------------------------------------------------
    def error_resolution(self, response: httpx.Response) -> Resolution | None:
        status = response.status_code
        if status == 400 and not self._cancel and _messages(response) is not None:
            return Resolution(Action.SUCCESS)  # refused whole, with reasons: `decode` records them per row
        if status == 404 and self._cancel:
            return Resolution(Action.SUCCESS)  # no such instance: that row is `rejected`
        if status == 401:
            return Resolution(
                Action.ABORT,
                "UNAUTHORIZED",
                f"MedChat refused the access token (static: replace it): {_text(response)}",
            )
        if status == 403:
            return Resolution(Action.ABORT, "FORBIDDEN", f"the access token lacks the journey scope: {_text(response)}")
        if status == 404:
            return Resolution(
                Action.ABORT, "JOURNEY_NOT_FOUND", f"no journey {self.params.chatbot_id!r} in org: {_text(response)}"
            )
        return None

    # -- auth --------------------------------------------------------------------------------
    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}


def _messages(response: httpx.Response) -> list[str] | None:
    """The array of error messages of a 400, or None when the body is not one."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, list):
        return None
    return [item if isinstance(item, str) else orjson.dumps(item).decode() for item in body]


def _text(response: httpx.Response, limit: int = 300) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit] if text else (response.reason_phrase or f"HTTP {response.status_code}")
