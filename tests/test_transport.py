"""The vendor client's direct path: what the client would add still reaches the transport."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from volley.transport import make_client


async def test_send_once_carries_the_clients_headers_and_timeouts_and_reads_the_answer() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async with make_client(4, 12.5, 3.0, transport=httpx.MockTransport(answer)) as client:
        request = client.build_request("POST", "http://vendor.test/a", content=b"{}", headers={"X-Request-Id": "r1"})
        response = await client.send_once(request)
    assert response.json() == {"ok": True}
    assert response.is_closed
    assert response.request is request
    sent = seen[0]
    assert sent.headers["User-Agent"] == "volley/0.1"
    assert sent.headers["X-Request-Id"] == "r1"
    assert sent.extensions["timeout"] == {"connect": 3.0, "read": 12.5, "write": 12.5, "pool": None}


async def test_send_once_raises_the_transports_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with make_client(1, 1.0, 1.0, transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.send_once(client.build_request("POST", "http://vendor.test/a", content=b"{}"))


@pytest.mark.parametrize(
    ("method", "content", "headers"),
    [
        ("POST", b'{"a":1}', {"Authorization": "token", "Content-Type": "application/json", "X-Request-Id": "r1"}),
        ("POST", None, {}),
        ("POST", b"", {"user-agent": "vendor-wants-its-own"}),
        ("GET", None, {"Accept": "application/json"}),
        ("PUT", "é".encode(), {"Accept-Encoding": "identity"}),
    ],
)
def test_request_for_builds_what_build_request_builds(
    method: str, content: bytes | None, headers: dict[str, str]
) -> None:
    client = make_client(4, 12.5, 3.0, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    url = httpx.URL("https://vendor.test:8443/rest/api/v1.3/events/rei/E?x=1")
    expected = client.build_request(method, url, content=content, headers=headers)
    made = client.request_for(method, url, content, headers)
    assert made.method == expected.method
    assert made.url == expected.url
    assert made.headers.raw == expected.headers.raw
    assert made.content == expected.content
    assert made.extensions == expected.extensions


def test_request_for_refuses_a_header_httpx_would_refuse() -> None:
    client = make_client(1, 1.0, 1.0, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    url = httpx.URL("https://vendor.test/a")
    with pytest.raises(UnicodeEncodeError):
        client.build_request("POST", url, content=b"{}", headers={"X-Name": "café"})
    with pytest.raises(UnicodeEncodeError):
        client.request_for("POST", url, b"{}", {"X-Name": "café"})


async def _serve(handler: Any) -> TestServer:
    app = web.Application()
    app.router.add_post("/a", handler)
    return TestServer(app)


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_send_once_over_aiohttp_reads_the_whole_body_plain_or_encoded(encoding: str | None) -> None:
    body = json.dumps([{"recipientId": i, "success": True} for i in range(2000)]).encode()

    async def answer(request: web.Request) -> web.Response:
        assert await request.read() == b"{}"
        if encoding is None:
            return web.Response(body=body, content_type="application/json")
        return web.Response(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})

    async with await _serve(answer) as server, make_client(2, 5.0, 5.0) as client:
        url = httpx.URL(str(server.make_url("/a")))
        response = await client.send_once(client.request_for("POST", url, b"{}", {}))
    assert response.status_code == 200
    assert response.content == body
    assert response.json()[1999] == {"recipientId": 1999, "success": True}
    assert response.is_closed


async def test_send_once_over_aiohttp_maps_a_body_cut_short_to_httpx_s_read_error() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()  # the answer stops after 10 of 1,000 bytes
        return response

    async with await _serve(cut) as server, make_client(2, 5.0, 5.0) as client:
        url = httpx.URL(str(server.make_url("/a")))
        with pytest.raises(httpx.ReadError):
            await client.send_once(client.request_for("POST", url, b"{}", {}))
