"""The connector contract: one class per vendor, declared rather than wired.

A connector encodes rows into requests, reads answers into one outcome per row and says
what each answer means (`Resolution`). It never retries, sleeps or paces: the dispatcher does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final, Literal, TypeAlias

import httpx
import orjson
import polars as pl
from pandera.api.polars.model import DataFrameModel
from pydantic import BaseModel, ConfigDict, Field

from volley.batches import Batch
from volley.outcomes import RowResults, Status
from volley.resolution import DEFAULT_STATUS_TABLE, Action, Resolution, parse_retry_after

__all__ = [
    "NOT_RECEIVED",
    "RECIPIENT_KEY",
    "Call",
    "ConnectionParams",
    "Connector",
    "ConnectorError",
    "LookUpAnswer",
    "VendorParams",
    "json_error_body",
]

RECIPIENT_KEY = "recipient_key"

NOT_RECEIVED: Final = "not_received"
"""A status look-up's answer: the vendor positively has no record of the request, so it never
took effect and the row may be sent again (unlike a key left out of the answer: unknown)."""
LookUpAnswer: TypeAlias = Status | Literal["not_received"]


class VendorParams(BaseModel):
    """Base of every connector's `vendor_params` and `connection` models."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionParams(VendorParams):
    """Base of every connector's `connection` model: where the vendor is."""

    base_url: str = Field(min_length=1, pattern=r"^https?://")


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request, ready to send."""

    method: str
    url: str
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] | None = None


class ConnectorError(Exception):
    """Raised by a connector (typically while authenticating) with what to do about it."""

    def __init__(self, resolution: Resolution, http_status: int | None = None) -> None:
        super().__init__(resolution.message or resolution.error_code or resolution.action.value)
        self.resolution = resolution
        self.http_status = http_status


class Connector(ABC):
    """Base of every vendor connector. Subclasses declare the class variables and the hooks."""

    name: ClassVar[str]
    params_model: ClassVar[type[VendorParams]]
    connection_model: ClassVar[type[ConnectionParams]]
    max_batch_rows: ClassVar[int]
    default_batch_rows: ClassVar[int]
    # Vendors that limit requests by size: a row's fragment over `max_row_bytes` is `invalid`,
    # and batches are cut so that their fragments (plus separators) fit `max_batch_bytes`.
    max_row_bytes: ClassVar[int | None] = None
    max_batch_bytes: ClassVar[int | None] = None
    # True only when the vendor deduplicates resends (an idempotency key): then a request
    # that got no answer may be sent again. Otherwise it is `in_doubt`.
    repeat_safe: ClassVar[bool] = False
    throttle_backoff_seconds: ClassVar[float] = 1.0
    # The vendor's published limits, used when the spec sets none.
    default_requests_per_second: ClassVar[float | None] = None
    default_requests_per_hour: ClassVar[int | None] = None
    status_table: ClassVar[Mapping[int, Action]] = DEFAULT_STATUS_TABLE

    def __init__(self, params: Any, connection: Any, key: str) -> None:
        self.params = params
        self.connection = connection
        self.key = key
        self.base_url = str(connection.base_url).rstrip("/")
        # Set by Campaign.load: vendors that record the calling system (Relay's lb_source) use it.
        self.campaign_name: str | None = None

    def required_columns(self) -> list[str]:
        """Audience columns the vendor params refer to (checked before anything is sent)."""
        return []

    def batch_limits(self) -> tuple[int, int]:
        """(default, max) rows a request for these params: the class's, unless a mode of the
        connector (one customer per request, a per-account cap) says otherwise."""
        return self.default_batch_rows, self.max_batch_rows

    # -- data ------------------------------------------------------------------------------
    @abstractmethod
    def audience_model(self) -> type[DataFrameModel]:
        """The pandera model the prepared audience must satisfy."""

    @abstractmethod
    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Map audience columns to the model's columns (as text); keep ROW_INDEX and RECIPIENT_KEY."""

    @abstractmethod
    def encode_rows(self, frame: pl.DataFrame) -> pl.Series:
        """One request fragment per valid row (vectorized), in row order."""

    @abstractmethod
    def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
        """The request that sends one batch."""

    @abstractmethod
    def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
        """One result per row of the batch from a successful answer."""

    # -- settling rows in doubt -----------------------------------------------------------------
    supports_look_up: ClassVar[bool] = False

    async def look_up(
        self, client: httpx.AsyncClient, keys: list[str], since: datetime | None = None
    ) -> dict[str, LookUpAnswer]:
        """Ask the vendor what became of recipients whose answer was lost (a status look-up).

        Returns the keys it could settle: `accepted`, `rejected` or `failed` (what the lost
        answer would have said), or `NOT_RECEIVED` when the vendor positively has no record of
        the request. Keys it cannot tell (the look-up failed, the record is ambiguous) are left
        out and stay in doubt: one key's failure never raises. `since` is when the run that sent
        them started (None: unknown): a vendor record older than that is another run key's.
        Only for connectors with `supports_look_up`.
        """
        raise NotImplementedError

    # -- auth --------------------------------------------------------------------------------
    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        """Headers that authenticate the next request (logging in or refreshing as needed)."""
        return {}

    async def reauthorize(self, client: httpx.AsyncClient, stale: Mapping[str, str]) -> None:
        """The vendor refused `stale` credentials: get new ones (once, whoever asks first)."""
        raise ConnectorError(Resolution(Action.ABORT, "AUTH_REFUSED", "the vendor refused the credentials"))

    # -- answers -----------------------------------------------------------------------------
    def classify(self, response: httpx.Response) -> Resolution:
        """What an answer means. Override `error_resolution` for vendor error codes."""
        if 200 <= response.status_code < 300:
            return Resolution(Action.SUCCESS)
        specific = self.error_resolution(response)
        if specific is not None:
            return specific
        action = self.status_table.get(response.status_code, Action.FAIL)
        if 500 <= response.status_code < 600 and response.status_code not in self.status_table:
            action = Action.RETRY
        wait = parse_retry_after(response.headers.get("retry-after"))
        if action is Action.THROTTLE and wait is None:
            wait = self.throttle_backoff_seconds
        return Resolution(action, f"HTTP_{response.status_code}", _short_text(response), wait)

    def error_resolution(self, response: httpx.Response) -> Resolution | None:
        """Vendor-specific meaning of an error answer, or None for the status table."""
        return None


def _short_text(response: httpx.Response, limit: int = 300) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit] if text else (response.reason_phrase or f"HTTP {response.status_code}")


def json_error_body(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON object of an error answer, or None when the body is not a JSON object."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None
