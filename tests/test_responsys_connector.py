"""The Responsys connector against the documented request and response samples (vendor-docs/004)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from connectors.responsys import ResponsysConnector
from tests.support import RESPONSYS_PASSWORD, audience, responsys_spec, write_spec
from volley.batches import Batch
from volley.campaign import Campaign
from volley.connector import ConnectorError
from volley.resolution import Action
from volley.sources import ROW_INDEX


def make_connector(tmp_path: Path, **params: Any) -> ResponsysConnector:
    audience(1).write_csv(tmp_path / "a.csv")
    spec = responsys_spec(tmp_path / "a.csv", base_url="http://responsys.test")
    spec["connection"]["token_ttl_seconds"] = params.pop("token_ttl_seconds", 7200)
    spec["vendor_params"] = {**spec["vendor_params"], **params}
    connector = Campaign.load(write_spec(tmp_path / "spec.yaml", spec)).connector
    assert isinstance(connector, ResponsysConnector)
    return connector


def encode(connector: ResponsysConnector, rows: dict[str, list[Any]]) -> dict[str, Any]:
    frame = pl.DataFrame(rows).with_row_index(ROW_INDEX).with_columns(pl.col("customer_id").alias("recipient_key"))
    prepared = connector.prepare(frame)
    payload = connector.encode_rows(prepared).to_list()
    batch = Batch.of("b1", list(range(len(payload))), frame["recipient_key"].to_list(), payload)
    call = connector.build_call(batch, {"Authorization": "TOKEN"})
    assert call.content is not None
    assert call.content.isascii()
    assert call.headers["Authorization"] == "TOKEN", "the bare token, no Bearer"
    assert call.url == "http://responsys.test/rest/api/v1.3/events/rei/Back_In_Stock"
    body: dict[str, Any] = json.loads(call.content)
    return body


@pytest.mark.usefixtures("responsys_credentials")
def test_profile_list_request_matches_the_documented_sample(tmp_path: Path) -> None:
    connector = make_connector(
        tmp_path,
        list={"folder": "FOLDER_NAME", "object": "My_Profile_List"},
        optional_data=[{"name": "PRODUCT_NAME", "column": "product_name"}],
    )
    body = encode(connector, {"customer_id": ["8"], "product_name": ["Stonewash Jeans"]})
    assert body == {
        "reiEvent": {"eventNumberDataMapping": None, "eventDateDataMapping": None, "eventStringDataMapping": None},
        "recipientData": [
            {
                "recipient": {
                    "customerId": "8",
                    "listName": {"folderName": "FOLDER_NAME", "objectName": "My_Profile_List"},
                },
                "optionalData": [{"name": "PRODUCT_NAME", "value": "Stonewash Jeans"}],
            }
        ],
    }


@pytest.mark.usefixtures("responsys_credentials")
def test_app_channel_request_matches_the_documented_sample(tmp_path: Path) -> None:
    connector = make_connector(
        tmp_path,
        channel="app",
        identify_by=None,
        list={"folder": "My_Folder", "object": "My_App_Channel_List"},
        optional_data=[{"name": "PRODUCT_SKU_ID", "column": "sku"}],
    )
    body = encode(
        connector,
        {"customer_id": ["c1"], "deviceId": ["00008020-008D4548007B4F26"], "apiKey": ["k"], "sku": ["DDJ9289"]},
    )
    assert body["recipientData"][0] == {
        "recipient": {
            "listName": {"folderName": "My_Folder", "objectName": "My_App_Channel_List"},
            "mobileAppRecipient": {"deviceId": "00008020-008D4548007B4F26", "apiKey": "k"},
        },
        "optionalData": [{"name": "PRODUCT_SKU_ID", "value": "DDJ9289"}],
    }


@pytest.mark.usefixtures("responsys_credentials")
def test_non_ascii_is_sent_as_unicode_escapes_and_nulls_are_left_out(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    frame = pl.DataFrame(
        {"customer_id": ["1", "2"], "product_sku": ["€19", None], "product_name": ['Crème "brûlée" 😀', "ok"]}
    ).with_row_index(ROW_INDEX)
    prepared = connector.prepare(frame.with_columns(pl.col("customer_id").alias("recipient_key")))
    payload = connector.encode_rows(prepared).to_list()
    assert "\\u20AC19" in payload[0]
    assert 'Cr\\u00E8me \\"br\\u00FBl\\u00E9e\\" \\uD83D\\uDE00' in payload[0]
    assert all(fragment.isascii() for fragment in payload)
    decoded = [json.loads(fragment) for fragment in payload]
    assert decoded[0]["optionalData"][0]["value"] == "€19"
    assert decoded[0]["optionalData"][1]["value"] == 'Crème "brûlée" 😀'
    assert decoded[1]["optionalData"] == [{"name": "PRODUCT_NAME", "value": "ok"}]


def response(status: int, body: Any = None, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text)
    return httpx.Response(status, json=body)


@pytest.mark.usefixtures("responsys_credentials")
def test_per_recipient_results_map_in_order(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    batch = Batch.of("b", [0, 1, 2], ["a", "b", "c"], ["{}", "{}", "{}"])
    documented = [
        {"errorMessage": "MULTIPLE_RECIPIENTS_FOUND", "recipientId": -2, "success": False},
        {"errorMessage": None, "recipientId": 8147, "success": True},
        {
            "errorMessage": " The expected mandatory column RSYS_GEN_FENCE_NAME is missing.",
            "recipientId": 25667,
            "success": False,
        },
    ]
    results = connector.decode(batch, response(200, documented))
    assert results.status == ["rejected", "accepted", "rejected"]
    assert results.error_code == ["MULTIPLE_RECIPIENTS_FOUND", None, "RECIPIENT_REJECTED"]
    assert results.error_message[2] == "The expected mandatory column RSYS_GEN_FENCE_NAME is missing."
    assert results.vendor_ref == [None, 8147, 25667]  # the record holds their text


@pytest.mark.usefixtures("responsys_credentials")
@pytest.mark.parametrize(
    ("answer", "status", "refs"),
    [
        ([{"recipientId": 7, "success": True}, {"recipientId": -1, "success": True}], ["accepted"] * 2, [7, None]),
        ([{"recipientId": True, "success": True}, {"success": True}], ["accepted"] * 2, [None, None]),
        ([{"recipientId": 7, "success": 1}, {"recipientId": 8, "success": True}], ["rejected", "accepted"], [7, 8]),
        ([{"recipientId": 7, "success": True}, ["not", "an", "object"]], ["in_doubt"] * 2, [None, None]),
    ],
    ids=["unresolved-id", "odd-or-missing-id", "success-not-true", "not-objects"],
)
def test_unusual_results_are_read_result_by_result(
    tmp_path: Path, answer: list[Any], status: list[str], refs: list[int | None]
) -> None:
    results = make_connector(tmp_path).decode(Batch.of("b", [0, 1], ["a", "b"], ["{}", "{}"]), response(200, answer))
    assert results.status == status
    assert results.vendor_ref == refs


@pytest.mark.usefixtures("responsys_credentials")
def test_an_answer_that_does_not_match_the_batch_is_in_doubt(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    batch = Batch.of("b", [0, 1], ["a", "b"], ["{}", "{}"])
    results = connector.decode(batch, response(200, [{"errorMessage": None, "recipientId": 1, "success": True}]))
    assert results.status == ["in_doubt", "in_doubt"]


REI_EVENT_NOT_FOUND = {
    "type": "",
    "title": "Rei event not found",
    "errorCode": "REI_EVENT_NOT_FOUND",
    "detail": "Unable to retrieve EventDefinition for eventName:Purchase_Event for account:45147:oracleaccount",
    "errorDetails": [],
}


def _error(code: str) -> dict[str, Any]:
    return {"type": "", "title": code.title(), "errorCode": code, "detail": "d", "errorDetails": []}


@pytest.mark.usefixtures("responsys_credentials")
@pytest.mark.parametrize(
    ("answer", "action", "code"),
    [
        (response(401, _error("API_LIMIT_EXCEEDED")), Action.THROTTLE, "API_LIMIT_EXCEEDED"),
        (response(400, _error("API_LIMIT_EXCEEDED")), Action.THROTTLE, "API_LIMIT_EXCEEDED"),
        (response(404, REI_EVENT_NOT_FOUND), Action.ABORT, "REI_EVENT_NOT_FOUND"),
        (response(400, _error("RECIPIENT_LIMIT_EXCEEDED")), Action.FAIL, "RECIPIENT_LIMIT_EXCEEDED"),
        (response(400, _error("INVALID_REQUEST_CONTENT")), Action.FAIL, "INVALID_REQUEST_CONTENT"),
        (response(403, _error("API_BLOCKED")), Action.ABORT, "API_BLOCKED"),
        (response(401, _error("TOKEN_EXPIRED")), Action.REFRESH_AUTH, "TOKEN_EXPIRED"),
        (response(503, text="upstream unavailable"), Action.RETRY, "HTTP_503"),
        (response(504, text="gateway timeout"), Action.IN_DOUBT, "HTTP_504"),
        (response(500, _error("SOMETHING_BROKE")), Action.RETRY, "SOMETHING_BROKE"),
        (response(418, text="teapot"), Action.FAIL, "HTTP_418"),
    ],
)
def test_answers_are_classified_by_error_code_before_status(
    tmp_path: Path, answer: httpx.Response, action: Action, code: str
) -> None:
    resolution = make_connector(tmp_path).classify(answer)
    assert (resolution.action, resolution.error_code) == (action, code)


@pytest.mark.usefixtures("responsys_credentials")
def test_throttle_wait_defaults_to_a_minute_and_capacity_to_ten(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    assert connector.classify(response(401, _error("API_LIMIT_EXCEEDED"))).wait_seconds is None
    assert connector.throttle_backoff_seconds == 60.0
    capacity = connector.classify(response(400, _error("INTERNAL_CAPACITY_LIMIT_EXCEEDED")))
    assert capacity.wait_seconds == 600.0


class FakeResponsys:
    """Just enough of the auth endpoint to count logins and refreshes."""

    def __init__(self, password: str = RESPONSYS_PASSWORD) -> None:
        self.password = password
        self.logins = 0
        self.refreshes: list[str] = []
        self.tokens = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/rest/api/v1.3/auth/token"
        form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
        if form["auth_type"] == "password":
            if form["password"] != self.password:
                return response(401, _error("INVALID_USER_NAME_PASSWORD"))
            self.logins += 1
        else:
            self.refreshes.append(request.headers["Authorization"])
        self.tokens += 1
        return response(
            200, {"authToken": f"token-{self.tokens}", "issuedAt": 1, "endPoint": "http://api.responsys.test"}
        )


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.usefixtures("responsys_credentials")
async def test_login_once_for_many_concurrent_requests_and_follow_the_endpoint(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    fake = FakeResponsys()
    async with client_for(fake.handler) as client:
        headers = await asyncio.gather(*(connector.authorize(client) for _ in range(20)))
    assert fake.logins == 1
    assert {h["Authorization"] for h in headers} == {"token-1"}
    call = connector.build_call(Batch.of("b", [0], ["a"], ["{}"]), headers[0])
    assert call.url.startswith("http://api.responsys.test/rest/api/v1.3/events/rei/")


@pytest.mark.usefixtures("responsys_credentials")
async def test_token_is_refreshed_before_expiry_with_auth_type_token(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, token_ttl_seconds=0.2)
    fake = FakeResponsys()
    async with client_for(fake.handler) as client:
        assert (await connector.authorize(client))["Authorization"] == "token-1"
        await asyncio.sleep(0.15)
        assert (await connector.authorize(client))["Authorization"] == "token-2"
    assert fake.logins == 1
    assert fake.refreshes == ["token-1"]


@pytest.mark.usefixtures("responsys_credentials")
async def test_a_refused_token_means_one_new_login_whoever_asks(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    fake = FakeResponsys()
    async with client_for(fake.handler) as client:
        stale = await connector.authorize(client)
        await asyncio.gather(*(connector.reauthorize(client, stale) for _ in range(5)))
        assert (await connector.authorize(client))["Authorization"] == "token-2"
    assert fake.logins == 2


@pytest.mark.usefixtures("responsys_credentials")
async def test_bad_credentials_abort_without_echoing_the_password(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    fake = FakeResponsys(password="something-else")
    async with client_for(fake.handler) as client:
        with pytest.raises(ConnectorError) as caught:
            await connector.authorize(client)
    assert caught.value.resolution.action is Action.ABORT
    assert caught.value.resolution.error_code == "INVALID_USER_NAME_PASSWORD"
    assert RESPONSYS_PASSWORD not in str(caught.value)
