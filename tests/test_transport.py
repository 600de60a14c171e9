"""The vendor client: the dispatcher's direct path over pyreqwest, and httpx's API beside it."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from pyreqwest.exceptions import ConnectError, ConnectTimeoutError, PoolTimeoutError, ReadError, RequestPanicError

from sim.context import reset_connection
from volley.connector import Call
from volley.resolution import Action, classify_transport_error
from volley.transport import as_httpx_error, make_client


async def _serve(handler: Any, method: str = "POST") -> TestServer:
    app = web.Application()
    app.router.add_route(method, "/a", handler)
    return TestServer(app)


async def test_send_call_sends_the_calls_method_headers_and_body_and_the_clients_user_agent() -> None:
    seen: list[tuple[str, CIMultiDict[str], bytes]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.copy(), await request.read()))
        return web.json_response({"ok": True}, headers={"Retry-After": "7"})

    headers = {"Authorization": "token", "Content-Type": "application/json", "X-Request-Id": "r1"}
    async with await _serve(answer, "PUT") as server, make_client(2, 5.0, 5.0) as client:
        url = str(server.make_url("/a"))
        response = await client.send_call(Call("PUT", url, "é".encode(), headers))
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.headers["retry-after"] == "7"
    assert response.request.method == "PUT"
    assert response.request.url == url
    assert response.request.headers["Authorization"] == "token"  # which token an answer accepted
    assert response.raise_for_status() is response
    method, sent, body = seen[0]
    assert (method, body) == ("PUT", "é".encode())
    assert sent["Authorization"] == "token"
    assert sent["X-Request-Id"] == "r1"
    assert sent["Content-Type"] == "application/json"
    assert sent["User-Agent"] == "volley/0.1"
    assert sent["Content-Length"] == "2"


async def test_send_call_sends_a_form_and_lets_a_call_set_its_own_user_agent() -> None:
    seen: list[tuple[CIMultiDict[str], dict[str, str]]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.headers.copy(), dict(await request.post())))  # type: ignore[arg-type]
        return web.Response(status=204)

    async with await _serve(answer) as server, make_client(2, 5.0, 5.0) as client:
        form = {"user_name": "u", "auth_type": "password"}
        call = Call("POST", str(server.make_url("/a")), headers={"User-Agent": "vendor-wants-its-own"}, data=form)
        response = await client.send_call(call)
    assert response.status_code == 204
    headers, form = seen[0]
    assert form == {"user_name": "u", "auth_type": "password"}
    assert headers["User-Agent"] == "vendor-wants-its-own"


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_send_call_reads_the_whole_body_plain_or_encoded(encoding: str | None) -> None:
    body = json.dumps([{"recipientId": i, "success": True} for i in range(2000)]).encode()

    async def answer(request: web.Request) -> web.Response:
        assert await request.read() == b"{}"
        if encoding is None:
            return web.Response(body=body, content_type="application/json")
        return web.Response(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})

    async with await _serve(answer) as server, make_client(2, 5.0, 5.0) as client:
        response = await client.send_call(Call("POST", str(server.make_url("/a")), content=b"{}"))
    assert response.status_code == 200
    assert response.content == body
    assert response.json()[1999] == {"recipientId": 1999, "success": True}


async def test_a_redirect_is_answered_not_followed() -> None:
    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/elsewhere"})

    async with await _serve(moved) as server, make_client(2, 5.0, 5.0) as client:
        response = await client.send_call(Call("POST", str(server.make_url("/a")), content=b"{}"))
    assert response.status_code == 307


async def test_a_body_cut_short_is_httpx_s_read_error_and_leaves_the_request_in_doubt() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()  # the answer stops after 10 of 1,000 bytes
        return response

    async with await _serve(cut) as server, make_client(2, 5.0, 5.0) as client:
        with pytest.raises(httpx.TransportError) as caught:
            await client.send_call(Call("POST", str(server.make_url("/a")), content=b"{}"))
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout)
    assert classify_transport_error(caught.value, repeat_safe=False).action is Action.IN_DOUBT


async def test_an_answer_slower_than_the_timeout_is_a_read_timeout_in_doubt() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2.0)
        return web.Response(text="late")

    async with await _serve(slow) as server, make_client(2, 0.3, 5.0) as client:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.send_call(Call("POST", str(server.make_url("/a")), content=b"{}"))
    assert classify_transport_error(caught.value, repeat_safe=False).action is Action.IN_DOUBT


async def test_a_body_slower_than_the_timeout_is_a_read_timeout_in_doubt() -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "20"})
        await response.prepare(request)  # the status and headers come at once
        await response.write(b"x" * 10)
        await asyncio.sleep(2.0)  # the rest of the body does not
        await response.write(b"x" * 10)
        return response

    async with await _serve(stalls) as server, make_client(2, 0.3, 5.0) as client:
        with pytest.raises(httpx.ReadTimeout) as caught:  # the whole body would come, 2 s late
            await client.send_call(Call("POST", str(server.make_url("/a")), content=b"{}"))
    assert classify_transport_error(caught.value, repeat_safe=False).action is Action.IN_DOUBT


async def test_a_refused_connection_is_httpx_s_connect_error_safe_to_retry() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response()

    async with await _serve(answer) as server:
        url = str(server.make_url("/a"))  # the server is gone once the block ends: nothing listens
    async with make_client(2, 5.0, 5.0) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.send_call(Call("POST", url, content=b"{}"))
    assert classify_transport_error(caught.value, repeat_safe=False).action is Action.RETRY


async def test_a_reset_after_the_request_was_read_leaves_it_in_doubt() -> None:
    received: list[bytes] = []

    async def reset(request: web.Request) -> web.Response:
        received.append(await request.read())
        return reset_connection(request)  # the vendor has the request; its answer is lost

    async with await _serve(reset) as server, make_client(2, 5.0, 5.0) as client:
        with pytest.raises(httpx.TransportError) as caught:
            await client.send_call(Call("POST", str(server.make_url("/a")), content=b"{}"))
    assert received == [b"{}"]
    assert classify_transport_error(caught.value, repeat_safe=False).action is Action.IN_DOUBT


async def test_a_connection_never_accepted_is_a_connect_timeout_safe_to_retry() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        waiting = [socket.socket() for _ in range(3)]  # the accept queue full: later handshakes go unanswered
        for sock in waiting:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        try:
            async with make_client(2, 5.0, 0.3) as client:
                with pytest.raises(httpx.ConnectTimeout) as caught:
                    await client.send_call(Call("POST", f"http://127.0.0.1:{port}/a", content=b"{}"))
        finally:
            for sock in waiting:
                sock.close()
    assert classify_transport_error(caught.value, repeat_safe=False).action is Action.RETRY


def _causes(*messages: str) -> dict[str, Any]:
    return {"causes": [{"message": m} for m in ("error sending request for url (http://vendor.test/a)", *messages)]}


@pytest.mark.parametrize(
    ("error", "details", "expected"),
    [
        (
            ConnectError,
            _causes("client error (Connect)", "tcp connect error", "Connection refused"),
            httpx.ConnectError,
        ),
        (ConnectTimeoutError, _causes("client error (Connect)", "deadline has elapsed"), httpx.ConnectTimeout),
        # What pyreqwest 0.15 raised for a reset after sending, and for a slow answer under a read timeout:
        (ConnectError, _causes("client error (SendRequest)", "connection error", "reset by peer"), httpx.ReadError),
        (ConnectTimeoutError, _causes("operation timed out"), httpx.ReadTimeout),
        (ReadError, _causes("error reading a body from connection"), httpx.ReadError),
        (RequestPanicError, {"causes": None}, httpx.ReadError),
        (PoolTimeoutError, {"causes": None}, httpx.PoolTimeout),  # no free connection in time: never sent
    ],
)
def test_only_a_failure_while_connecting_says_the_request_never_left(
    error: type[Exception], details: dict[str, Any], expected: type[httpx.TransportError]
) -> None:
    mapped = as_httpx_error(error("boom", details))  # type: ignore[arg-type]
    assert type(mapped) is expected
    assert str(mapped) == "boom"


async def test_with_another_transport_send_call_goes_through_httpx_with_the_clients_headers() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async with make_client(4, 12.5, 3.0, transport=httpx.MockTransport(answer)) as client:
        response = await client.send_call(Call("POST", "http://vendor.test/a", content=b"{}", headers={"X": "1"}))
        login = await client.post("http://vendor.test/login", data={"user": "u"})
    assert response.json() == {"ok": True}
    assert login.status_code == 200
    assert [r.headers["User-Agent"] for r in seen] == ["volley/0.1", "volley/0.1"]
    assert seen[0].headers["X"] == "1"
    assert seen[0].extensions["timeout"] == {"connect": 3.0, "read": 12.5, "write": 12.5, "pool": None}
    assert seen[1].content == b"user=u"


async def test_httpx_s_api_goes_through_pyreqwest_by_default() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"token": "t", "user_agent": request.headers["User-Agent"]})

    async with await _serve(answer) as server, make_client(2, 5.0, 5.0) as client:
        response = await client.post(str(server.make_url("/a")), data={"user": "u"})
    assert response.json() == {"token": "t", "user_agent": "volley/0.1"}
