"""What to do with an answer or an error: data, not a chain of ifs.

Connectors map answers to a `Resolution`; the dispatcher is the only place that acts on it.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import aiohttp
import httpx

__all__ = [
    "DEFAULT_STATUS_TABLE",
    "Action",
    "Resolution",
    "classify_transport_error",
    "parse_retry_after",
]


class Action(Enum):
    SUCCESS = "success"  # decode the answer into per-row outcomes
    RETRY = "retry"  # transient: back off and send again
    THROTTLE = "throttle"  # the vendor's rate budget is spent: pause every worker, then send again
    REFRESH_AUTH = "refresh_auth"  # credentials expired: refresh once, then send again
    FAIL = "fail"  # final for this batch
    ABORT = "abort"  # final for this batch and every batch not yet sent (bad credentials, unknown event)
    IN_DOUBT = "in_doubt"  # may have reached the vendor, no answer: do not resend blindly
    SPLIT = "split"  # the request was too large and refused whole: send each half on its own


@dataclass(frozen=True, slots=True)
class Resolution:
    action: Action
    error_code: str | None = None
    message: str | None = None
    wait_seconds: float | None = None  # the vendor's own hint (Retry-After) or the connector's throttle pause


DEFAULT_STATUS_TABLE: Mapping[int, Action] = {
    408: Action.RETRY,
    425: Action.RETRY,
    429: Action.THROTTLE,
    500: Action.RETRY,
    502: Action.RETRY,
    503: Action.RETRY,
    # A gateway timed out waiting for the vendor: the vendor may have acted on the request.
    504: Action.IN_DOUBT,
    401: Action.REFRESH_AUTH,
    413: Action.SPLIT,
}

# Failures that prove the request never left this machine: always safe to send again.
_NEVER_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


def classify_transport_error(exc: BaseException, repeat_safe: bool) -> Resolution:
    """A request that got no answer: safe to retry only if it surely never reached the vendor.

    httpx-aiohttp maps aiohttp's ServerDisconnectedError (a reset after sending) to
    httpx.ConnectTimeout, so the original aiohttp exception decides when there is one.
    """
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else None
    never_sent = isinstance(cause, _NEVER_SENT) if cause is not None else isinstance(exc, _NEVER_SENT)
    name = type(cause or exc).__name__
    if never_sent:
        return Resolution(Action.RETRY, "CONNECT_FAILED", f"{name}: the request was not sent")
    if repeat_safe:
        return Resolution(Action.RETRY, "NO_ANSWER", f"{name} after sending; safe to resend")
    return Resolution(Action.IN_DOUBT, "NO_ANSWER", f"{name} after the request was sent; not resent")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
