"""Which failures are safe to resend: only those that prove the request never left."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import httpx
import pytest

from volley.resolution import Action, classify_transport_error, parse_retry_after


def caused_by(exc: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (httpx.ConnectError("refused"), Action.RETRY),
        (httpx.ConnectTimeout("slow connect"), Action.RETRY),
        (httpx.PoolTimeout("pool"), Action.RETRY),
        (httpx.ReadTimeout("no answer"), Action.IN_DOUBT),
        (httpx.RemoteProtocolError("reset"), Action.IN_DOUBT),
        (httpx.ReadError("reset"), Action.IN_DOUBT),
        (httpx.WriteError("broken pipe"), Action.IN_DOUBT),
        # httpx-aiohttp maps a disconnect after sending to ConnectTimeout: the cause decides
        (caused_by(httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()), Action.IN_DOUBT),
        (caused_by(httpx.ReadTimeout("x"), aiohttp.SocketTimeoutError()), Action.IN_DOUBT),
        (caused_by(httpx.ConnectTimeout("x"), aiohttp.ConnectionTimeoutError()), Action.RETRY),
    ],
)
def test_only_never_sent_requests_are_retried_for_a_vendor_without_idempotency(
    exc: httpx.HTTPError, action: Action
) -> None:
    assert classify_transport_error(exc, repeat_safe=False).action is action


def test_a_repeat_safe_vendor_retries_any_transport_error() -> None:
    assert classify_transport_error(httpx.ReadTimeout("x"), repeat_safe=True).action is Action.RETRY


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("yesterday") is None
    assert parse_retry_after(None) is None
