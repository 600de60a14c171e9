"""The HTTP client: httpx's API for connectors, pyreqwest underneath, and a direct path for the dispatcher.

pyreqwest (Rust: reqwest, hyper) does the sockets, HTTP parsing and connection pool on
its own thread, outside the GIL. Measured here, 5,000 Responsys requests (200 recipients)
on uvloop against the simulator: pyreqwest took 150 us of CPU a request in all and 55 us on
the event loop, against 290 us, all of it on the loop, for httpx over the aiohttp transport.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import httpx
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import PoolTimeoutError, PyreqwestError, RequestTimeoutError

from volley.connector import Call

__all__ = ["NativeTransport", "VendorClient", "as_httpx_error", "make_client"]

USER_AGENT = "volley/0.1"

# hyper's word for a failure while connecting (before any byte of the request was written).
# pyreqwest's own classes cannot tell that apart: it reported a reset after the vendor had
# applied the request as ConnectError ("client error (SendRequest)"), and a slow answer as
# ConnectTimeoutError (measured), so the cause chain decides.
_CONNECTING = "client error (Connect)"


def as_httpx_error(exc: PyreqwestError) -> httpx.TransportError:
    """The httpx error that says the same of the request: `PoolTimeout` when no connection was free
    within its time limit, `ConnectError`/`ConnectTimeout` only when it failed while connecting
    (either way it never left); otherwise `ReadTimeout` or `ReadError` (it may have reached the vendor)."""
    if isinstance(exc, PoolTimeoutError):  # raised only while waiting for pyreqwest's connection limit
        return httpx.PoolTimeout(exc.message)
    details = getattr(exc, "details", None) or {}
    causes = details.get("causes") or []
    connecting = any(cause.get("message") == _CONNECTING for cause in causes)
    timed_out = isinstance(exc, RequestTimeoutError)
    if connecting:
        return httpx.ConnectTimeout(exc.message) if timed_out else httpx.ConnectError(exc.message)
    return httpx.ReadTimeout(exc.message) if timed_out else httpx.ReadError(exc.message)


class NativeTransport(httpx.AsyncBaseTransport):
    """httpx's transport over a pyreqwest client, with `exchange` for callers that skip httpx's objects."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | Sequence[tuple[str, str]],
        content: bytes | None,
        answer_seconds: float | None,
        form: Mapping[str, str] | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request, its answer (status, headers, body) read whole within `answer_seconds` of the
        request (connecting included: a connection is there, or made within the client's connect
        timeout). Failures are httpx's `TransportError`s, as `as_httpx_error` maps them.

        The time limit is reqwest's own: `asyncio.timeout` around the request cost the event loop
        about 20 us a request more (a timer made and cancelled on the loop each time; measured)."""
        builder = self._client.request(method, url).headers(headers)
        builder = builder.form(dict(form)) if form is not None else builder.body_bytes(content or b"")
        if answer_seconds is not None:
            builder = builder.timeout(_duration(answer_seconds))
        try:
            response = await builder.build().send()
            body = await response.bytes()
        except PyreqwestError as exc:
            raise as_httpx_error(exc) from exc
        return response.status, list(response.headers.items()), bytes(body)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read")
        content = await request.aread()
        status, headers, body = await self.exchange(
            request.method, str(request.url), request.headers.multi_items(), content, timeout
        )
        return httpx.Response(status, headers=headers, content=body)

    async def aclose(self) -> None:
        await self._client.close()


class VendorClient(httpx.AsyncClient):
    """httpx's client (logins, refreshes, look-ups), plus `send_call` for the dispatcher's requests.

    Made by `make_client`, both go through one pyreqwest client and its connection pool; `send_call`
    hands the call to pyreqwest directly, around httpx's request building and sending (measured:
    most of a request's CPU on the loop), and only labels the answer with an `httpx.Request`. With
    another httpx transport (a test's `MockTransport`), `send_call` goes through httpx.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._native = transport if isinstance(transport, NativeTransport) else None

    async def send_call(self, call: Call) -> httpx.Response:
        """The call sent, its answer read whole within the client's read timeout. The answer carries
        its request (method, URL, the call's headers) as httpx's do: connectors read it (Sprinklr
        checks which token an answer accepted)."""
        if self._native is None:
            request = self.build_request(
                call.method, call.url, content=call.content, data=call.data, headers=call.headers
            )
            return await self.send(request)
        status, headers, body = await self._native.exchange(
            call.method, call.url, call.headers, call.content, self.timeout.read, form=call.data
        )
        return _CallAnswer(status, headers, body, call)


class _CallAnswer(httpx.Response):
    """The answer to a dispatcher call. Its `request` (method, URL, the call's headers, as httpx
    labels its answers) is made only when asked for: a connector rarely does, and making it for
    every answer cost 10 us a request on the event loop (measured)."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, call: Call) -> None:
        if any(name.lower() == "content-encoding" for name, _ in headers):  # httpx decodes it, as it would
            super().__init__(status, headers=headers, content=body)
        else:
            # The body is whole already: httpx reading it again through its stream and decoders cost
            # 19 of the 23 us it took to make an answer (measured).
            super().__init__(status, headers=headers, stream=httpx.ByteStream(body))
            self._content = body
        self._call = call

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            call = self._call
            self._request = httpx.Request(call.method, _parsed_url(call.url), headers=call.headers)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value

    def raise_for_status(self) -> httpx.Response:
        _ = self.request  # httpx reads the private attribute there
        return super().raise_for_status()


@functools.lru_cache(maxsize=16)
def _duration(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@functools.lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    """Parsed once: httpx parses a URL given as text on every request (43 against 15 us a request, measured)."""
    return httpx.URL(url)


def make_client(
    concurrency: int,
    timeout_seconds: float,
    connect_timeout_seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> VendorClient:
    """One client per run, with a connection for each of the dispatcher's workers (and two for logins).

    `timeout_seconds` for an answer, `connect_timeout_seconds` to connect. Redirects are not
    followed and no proxy is used. Keep-alive expiry is short so that the client never reuses a
    connection the server is about to close: such a reset would leave the request `in_doubt` for nothing.
    """
    if transport is None:
        native = (
            ClientBuilder()
            .max_connections(concurrency + 2)
            .pool_max_idle_per_host(concurrency + 2)
            .pool_idle_timeout(timedelta(seconds=5.0))
            .connect_timeout(timedelta(seconds=connect_timeout_seconds))
            .follow_redirects(False)
            .no_proxy()
            .user_agent(USER_AGENT)  # the dispatcher's requests carry no client headers: reqwest adds it
            .build()
        )
        transport = NativeTransport(native)
    return VendorClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_seconds, connect=connect_timeout_seconds, pool=None),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )
