"""The Sprinklr connector against the documented requests and answers (vendor-docs/001),
its throttle and auth answers, the single-use refresh token kept across runs, bad input
and the hourly quota."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import polars as pl
import pytest

import connectors.sprinklr_auth as sprinklr_auth
import volley.secrets
from connectors.sprinklr import SprinklrConnector
from tests.marketing_support import NEW_PROFILE_PARAMS, SPRINKLR_ENV, set_env, sprinklr_audience, sprinklr_spec
from tests.support import write_spec
from volley.batches import Batch
from volley.campaign import Campaign, dry_run
from volley.connector import RECIPIENT_KEY, ConnectorError
from volley.errors import SpecError
from volley.resolution import Action
from volley.secrets import redact
from volley.sources import ROW_INDEX
from volley.validation import split_invalid

BASE = "http://sprinklr.test/prod2"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SPRINKLR_ENV)


def make_connector(tmp_path: Path, rows: pl.DataFrame | None = None, **spec_overrides: Any) -> SprinklrConnector:
    source = tmp_path / "a.csv"
    (rows if rows is not None else sprinklr_audience(3)).write_csv(source)
    spec = sprinklr_spec(source, base_url=BASE, token_dir=tmp_path / "tokens", **spec_overrides)
    connector = Campaign.load(write_spec(tmp_path / "spec.yaml", spec)).connector
    assert isinstance(connector, SprinklrConnector)
    return connector


def prepared(connector: SprinklrConnector, rows: dict[str, Any], key: str = "email") -> pl.DataFrame:
    frame = pl.DataFrame(rows).with_row_index(ROW_INDEX).with_columns(pl.col(key).alias(RECIPIENT_KEY))
    return connector.prepare(frame)


def bodies(connector: SprinklrConnector, rows: dict[str, Any], key: str = "email") -> list[dict[str, Any]]:
    frame = prepared(connector, rows, key)
    valid, failures = split_invalid(frame, connector.audience_model(), "test")
    assert failures.height == 0, failures
    payload = connector.encode_rows(valid).to_list()
    calls = [
        connector.build_call(Batch.of(f"b{i}", [i], [k], [p]), {"Authorization": "Bearer T", "Key": "K"})
        for i, (k, p) in enumerate(zip(valid[RECIPIENT_KEY], payload, strict=True))
    ]
    for call in calls:
        assert call.url == connector.url
        assert call.headers["Authorization"] == "Bearer T"
        assert call.headers["Key"] == "K"
        assert call.headers["Content-Type"] == "application/json"
    return [json.loads(call.content or b"") for call in calls]


# -- requests ----------------------------------------------------------------------------------


def test_trigger_request_matches_the_documented_sample(tmp_path: Path) -> None:
    connector = make_connector(
        tmp_path,
        vendor_params={
            "journey_id": "string",
            "sn_type": "EMAIL",
            "sn_id_column": "sn_id",
            "context_params": [{"name": "key1", "column": "a"}, {"name": "key2", "column": "b"}],
        },
    )
    assert connector.url == f"{BASE}/api/marketing-journey/trigger"
    [body] = bodies(connector, {"email": ["x@y.zz"], "sn_id": ["acme@sprinklr.com"], "a": ["string"], "b": ["string"]})
    assert body == {
        "snType": "EMAIL",
        "snId": "acme@sprinklr.com",
        "journeyId": "string",
        "contextParams": {"key1": "string", "key2": "string"},
    }


def test_context_params_are_strings_and_empty_ones_are_left_out(tmp_path: Path) -> None:
    connector = make_connector(
        tmp_path,
        vendor_params={
            "sn_type_column": "channel",
            "sn_type": None,
            "context_params": ["count", {"name": "source", "value": "volley"}, {"name": "note", "column": "note"}],
        },
    )
    rows = {
        "email": ["a@b.co", "+44 20 7946 0000"],
        "channel": ["email", "sms"],
        "count": [3, None],
        "note": ["é", " "],
    }
    first, second = bodies(connector, rows)
    assert first == {
        "snType": "EMAIL",
        "snId": "a@b.co",
        "journeyId": "welcome-journey",
        "contextParams": {"count": "3", "source": "volley", "note": "é"},
    }
    assert second["snType"] == "SMS"
    assert second["contextParams"] == {"source": "volley"}


def test_new_profile_request_matches_the_documented_sample(tmp_path: Path) -> None:
    params: dict[str, Any] = {
        "mode": "new_profile",
        "sn_type": None,
        "journey_id": "string",
        "context_params": [{"name": "key1", "column": "k1"}, {"name": "key2", "column": "k2"}],
        "new_profile": {
            "id_column": "profile_id",
            "contact": [{"name": "firstName", "column": "first_name"}],
            "profiles": [{"channel_type": "EMAIL", "channel_id_column": "email", "name_column": "full_name"}],
            "created_time_column": "created",
        },
    }
    connector = make_connector(tmp_path, vendor_params=params)
    assert connector.url == f"{BASE}/api/marketing-journey/triggerWithNewProfile"
    rows = {
        "profile_id": ["id8"],
        "email": ["acme@sprinklr.com"],
        "first_name": ["Parth"],
        "full_name": ["John Snow"],
        "k1": ["string"],
        "k2": ["string"],
        "created": [1599816142000],
    }
    [body] = bodies(connector, rows)
    assert body == {
        "journeyId": "string",
        "contextParams": {"key1": "string", "key2": "string"},
        "unifiedProfile": {
            "id": "id8",
            "contact": {"firstName": "Parth"},
            "profiles": [{"channelType": "EMAIL", "channelId": "acme@sprinklr.com", "name": "John Snow"}],
            "createdTime": 1599816142000,
        },
    }


def test_new_profile_leaves_out_empty_channels_and_converts_datetimes(tmp_path: Path) -> None:
    profile = {**NEW_PROFILE_PARAMS["new_profile"], "id_column": "id", "created_time_column": "at"}
    params = {**NEW_PROFILE_PARAMS, "new_profile": profile}
    connector = make_connector(tmp_path, vendor_params=params)
    rows = {
        "email": ["a@b.co", None],
        "phone": [None, "+33 1 23 45 67 89"],
        "first_name": ["Zoë", None],
        "offer": ["X", None],
        "at": pl.Series([None, "2020-09-11 09:42:22"]).str.to_datetime(),
    }
    frame = pl.DataFrame(rows).with_columns(pl.Series("id", ["p1", "p2"])).with_row_index(ROW_INDEX)
    spec_key = frame.with_columns(pl.col("id").alias(RECIPIENT_KEY))
    payload = connector.encode_rows(connector.prepare(spec_key)).to_list()
    first, second = (json.loads(p) for p in payload)
    assert first["unifiedProfile"]["profiles"] == [{"channelType": "EMAIL", "channelId": "a@b.co", "name": "Zoë"}]
    assert "createdTime" not in first["unifiedProfile"]
    assert second["unifiedProfile"] == {
        "id": "p2",
        "contact": {},
        "profiles": [{"channelType": "SMS", "channelId": "+33 1 23 45 67 89"}],
        "createdTime": 1599817342000,
    }
    assert second["contextParams"] == {}


def test_created_time_text_is_read_as_utc_epoch_milliseconds(tmp_path: Path) -> None:
    profile = {**NEW_PROFILE_PARAMS["new_profile"], "created_time_column": "at"}
    connector = make_connector(tmp_path, vendor_params={**NEW_PROFILE_PARAMS, "new_profile": profile})
    texts = ["2020-09-11 09:42:22", "2020-09-11T09:42:22.000Z", "2020-09-11", "1599816142000", "11/09/2020", None]
    rows = {"email": [f"{i}@x.io" for i in range(6)], "phone": [None] * 6, "first_name": ["a"] * 6, "offer": ["o"] * 6}
    frame = prepared(connector, {**rows, "at": texts})
    expected = ["1599817342000", "1599817342000", "1599782400000", "1599816142000", "11/09/2020", None]
    assert frame["createdTime"].to_list() == expected
    _, failures = split_invalid(frame, connector.audience_model(), "t")
    assert failures.select("position", "error_code").rows() == [(4, "createdTime.str_matches")]


def test_newer_base_paths_and_endpoint_name_are_configurable(tmp_path: Path) -> None:
    connector = make_connector(
        tmp_path,
        vendor_params=NEW_PROFILE_PARAMS,
        connection={"api_path": "/api/v2", "new_profile_endpoint": "triggerJourney"},
    )
    assert connector.url == f"{BASE}/api/v2/marketing-journey/triggerJourney"
    assert connector.auth.token_url == f"{BASE}/oauth/token"


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_sn_types_and_ids_of_the_wrong_shape_are_invalid_rows(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, vendor_params={"sn_type": None, "sn_type_column": "channel"})
    rows = {
        "email": ["ok@example.com", "x1", "not-an-address", "12ab", "+1 555 0100", "@handle"],
        "channel": ["EMAIL", "CARRIER_PIGEON", "EMAIL", "SMS", "WHATSAPP_BUSINESS", "TWITTER"],
        "first_name": ["a"] * 6,
        "offer": ["o"] * 6,
    }
    valid, failures = split_invalid(prepared(connector, rows), connector.audience_model(), "test")
    assert valid[RECIPIENT_KEY].to_list() == ["ok@example.com", "+1 555 0100", "@handle"]
    codes = dict(zip(failures["position"].to_list(), failures["error_code"].to_list(), strict=True))
    assert codes == {1: "snType.isin", 2: "snId_matches_snType", 3: "snId_matches_snType"}


def test_a_new_profile_without_any_channel_is_invalid(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, vendor_params=NEW_PROFILE_PARAMS)
    rows = {"email": ["a@b.co", None, "nope"], "phone": [None, None, None], "first_name": ["a"] * 3, "offer": ["o"] * 3}
    frame = pl.DataFrame(rows).with_columns(pl.Series("id", ["p1", "p2", "p3"])).with_row_index(ROW_INDEX)
    valid, failures = split_invalid(
        connector.prepare(frame.with_columns(pl.col("id").alias(RECIPIENT_KEY))), connector.audience_model(), "t"
    )
    assert valid[RECIPIENT_KEY].to_list() == ["p1"]
    assert failures["error_code"].to_list() == ["at_least_one_channel_profile", "channelId_matches_channelType"]


def test_the_planner_records_bad_rows_as_invalid_with_a_clear_code(tmp_path: Path) -> None:
    audience = sprinklr_audience(4).with_columns(pl.Series("channel", ["EMAIL", "FAX", "email", "SMS"]))
    source = tmp_path / "a.csv"
    audience.write_csv(source)
    spec = sprinklr_spec(source, base_url=BASE, vendor_params={"sn_type": None, "sn_type_column": "channel"})
    campaign = Campaign.load(write_spec(tmp_path / "spec.yaml", spec))
    report = dry_run(campaign, "k")
    assert report.counts == {"invalid: snType.isin": 1, "invalid: snId_matches_snType": 1}
    assert (report.to_send, report.batches) == (2, 2), "one profile a request"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sn_type": "FAX"}, "snType 'FAX' is not one of sn_types"),
        ({"sn_type_column": "c"}, "give exactly one of 'sn_type' or 'sn_type_column'"),
        ({"journey_id": None}, "give exactly one of 'journey_id' or 'journey_id_column'"),
        ({"mode": "new_profile"}, "mode new_profile needs 'new_profile'"),
        ({**NEW_PROFILE_PARAMS, "sn_type": "EMAIL"}, "sn_type, sn_type_column and sn_id_column go with mode trigger"),
        ({"context_params": ["offer", {"name": "offer", "value": "x"}]}, "'offer' is given twice"),
    ],
)
def test_spec_mistakes_are_one_line_errors(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match="vendor_params") as caught:
        make_connector(tmp_path, vendor_params=params)
    assert message in str(caught.value)


def test_the_known_sn_types_are_configurable(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, vendor_params={"sn_type": "fax", "sn_types": ["EMAIL", "fax"]})
    [body] = bodies(connector, {"email": ["+1 555 0100"], "first_name": ["a"], "offer": ["b"]})
    assert body["snType"] == "FAX"


# -- answers -----------------------------------------------------------------------------------


def answer(status: int, body: Any = None, text: str | None = None, **headers: str) -> httpx.Response:
    request = httpx.Request("POST", f"{BASE}/api/marketing-journey/trigger")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


OVER_RATE = "<html><head><title>403 Developer Over Rate</title></head><body><h1>Developer Over Rate</h1></body></html>"
ONE = Batch.of("b", [0], ["a@b.co"], ["{}"])


@pytest.mark.parametrize(
    ("response", "action", "code"),
    [
        (answer(403, text=OVER_RATE), Action.THROTTLE, "DEVELOPER_OVER_RATE"),
        (answer(403, text="", **{"X-Mashery-Error-Code": "ERR_403_DEVELOPER_OVER_QPS"}), Action.THROTTLE, None),
        (answer(403, text="<h1>Developer Inactive</h1>"), Action.ABORT, "FORBIDDEN"),
        (answer(429, {"errors": []}), Action.THROTTLE, "HTTP_429"),
        (answer(401, {"errors": [{"code": "UNAUTHORIZED"}]}), Action.REFRESH_AUTH, "HTTP_401"),
        (answer(400, {"data": None, "errors": [{"code": "PROFILE_NOT_FOUND", "message": "m"}]}), Action.SUCCESS, None),
        (answer(400, {"data": None, "errors": [{"code": "JOURNEY_NOT_FOUND", "message": "m"}]}), Action.ABORT, None),
        (answer(404, text="not found"), Action.ABORT, "HTTP_404"),
        (answer(503, text="unavailable"), Action.RETRY, "HTTP_503"),
        (answer(500, text="oops"), Action.RETRY, "HTTP_500"),
        (answer(504, text="gateway timeout"), Action.IN_DOUBT, "HTTP_504"),
    ],
)
def test_answers_are_classified(tmp_path: Path, response: httpx.Response, action: Action, code: str | None) -> None:
    resolution = make_connector(tmp_path).classify(response)
    assert resolution.action is action
    if code is not None:
        assert resolution.error_code == code


def test_a_trigger_204_is_accepted_without_a_reference(tmp_path: Path) -> None:
    results = make_connector(tmp_path).decode(ONE, answer(204))
    assert (results.status, results.vendor_ref) == (["accepted"], [None])


def test_a_new_profile_answer_gives_the_tracking_id(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, vendor_params=NEW_PROFILE_PARAMS)
    documented = {"data": {"status": "SUCCESS", "message": "ok", "trackingId": "trk-42"}, "errors": []}
    results = connector.decode(ONE, answer(200, documented))
    assert (results.status, results.vendor_ref, results.error_code) == (["accepted"], ["trk-42"], [None])


def test_a_new_profile_not_triggered_is_rejected_with_the_message(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, vendor_params=NEW_PROFILE_PARAMS)
    failed = {"data": {"status": "FAILED", "message": "channel has opted out", "trackingId": None}, "errors": []}
    results = connector.decode(ONE, answer(200, failed))
    assert (results.status, results.error_code, results.error_message) == (
        ["rejected"],
        ["FAILED"],
        ["channel has opted out"],
    )
    with_errors = {
        "data": {"status": "SUCCESS", "trackingId": "t"},
        "errors": [{"code": "CHANNEL_OPTED_OUT", "message": "nope"}],
    }
    results = connector.decode(ONE, answer(200, with_errors))
    assert (results.status, results.error_code, results.vendor_ref) == (["rejected"], ["CHANNEL_OPTED_OUT"], ["t"])
    unreadable = connector.decode(ONE, answer(200, {"unexpected": True}))
    assert unreadable.status == ["in_doubt"]


def test_a_refused_profile_is_rejected_with_sprinklrs_words(tmp_path: Path) -> None:
    refused = {"data": None, "errors": [{"code": "PROFILE_NOT_FOUND", "message": "no EMAIL profile 'x'"}]}
    results = make_connector(tmp_path).decode(ONE, answer(400, refused))
    assert (results.status, results.error_code, results.error_message) == (
        ["rejected"],
        ["PROFILE_NOT_FOUND"],
        ["no EMAIL profile 'x'"],
    )
    bare = make_connector(tmp_path).decode(ONE, answer(422, text="unprocessable"))
    assert (bare.status, bare.error_code, bare.error_message) == (["rejected"], ["HTTP_422"], ["unprocessable"])


# -- the hourly quota --------------------------------------------------------------------------


def test_a_run_over_the_hourly_quota_is_refused_up_front_with_the_arithmetic(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    sprinklr_audience(1_500).write_csv(source)
    spec = sprinklr_spec(source, base_url=BASE, limits={"requests_per_hour": None, "quota_policy": "refuse"})
    campaign = Campaign.load(write_spec(tmp_path / "spec.yaml", spec))
    assert (campaign.requests_per_second, campaign.requests_per_hour) == (10.0, 1000), "Sprinklr's published limits"
    with pytest.raises(SpecError) as caught:
        campaign.check_quota("k")
    assert "1,500 requests at 1,000 an hour take 1.50 h, more than one hour's quota" in str(caught.value)

    paced = sprinklr_spec(source, base_url=BASE, limits={"requests_per_hour": 600})
    campaign = Campaign.load(write_spec(tmp_path / "paced.yaml", paced))
    assert campaign.check_quota("k") == "1,500 requests at 600 an hour take 2.50 h"
    assert campaign.policy().requests_per_hour == 600


# -- OAuth and the token store -----------------------------------------------------------------


class FakeSprinklr:
    """The refresh endpoint with single-use refresh tokens, and a trigger endpoint checking the token."""

    def __init__(self, refresh_tokens: set[str] | None = None, expires_in: float = 3600) -> None:
        self.refresh_tokens = refresh_tokens if refresh_tokens is not None else {SPRINKLR_ENV["SPRINKLR_REFRESH_TOKEN"]}
        self.access_tokens: set[str] = set()
        self.expires_in = expires_in
        self.refreshes: list[str] = []
        self.issued = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            assert form["grant_type"] == "refresh_token"
            assert form["client_id"] == "sprinklr-demo-client"
            assert form["client_secret"] == SPRINKLR_ENV["SPRINKLR_CLIENT_SECRET"]
            assert form["redirect_uri"] == "https://localhost/volley/callback"
            self.refreshes.append(form["refresh_token"])
            if form["refresh_token"] not in self.refresh_tokens:
                return httpx.Response(401, json={"error": "invalid_grant", "error_description": "already used"})
            self.refresh_tokens.discard(form["refresh_token"])
            self.issued += 1
            access, refresh = f"access-{self.issued}", f"refresh-{self.issued}"
            self.access_tokens.add(access)
            self.refresh_tokens.add(refresh)
            body = {"access_token": access, "refresh_token": refresh, "expires_in": self.expires_in}
            return httpx.Response(200, json=body)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return httpx.Response(204 if token in self.access_tokens else 401, request=request)


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def without_access_token(tmp_path: Path, **spec: Any) -> SprinklrConnector:
    return make_connector(tmp_path, connection={"access_token": None}, **spec)


async def test_the_first_request_without_an_access_token_refreshes_once_and_stores_the_new_token(
    tmp_path: Path,
) -> None:
    connector = without_access_token(tmp_path)
    fake = FakeSprinklr()
    async with client_for(fake.handler) as client:
        headers = await asyncio.gather(*(connector.authorize(client) for _ in range(20)))
    assert fake.refreshes == ["sprinklr-demo-refresh"], "single flight"
    assert {h["Authorization"] for h in headers} == {"Bearer access-1"}
    assert {h["Key"] for h in headers} == {"sprinklr-demo-key"}
    store = connector.token_store
    assert store.parent == tmp_path / "tokens"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    saved = json.loads(store.read_text())
    assert saved["refresh_token"] == "refresh-1"
    assert saved["access_token"] == "access-1"
    assert "sprinklr-demo-refresh" not in store.read_text()
    assert redact("tokens access-1 and refresh-1") == "tokens *** and ***"


async def test_a_401_refreshes_once_whoever_asks_and_the_next_run_uses_the_rotated_token(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    fake = FakeSprinklr()
    async with client_for(fake.handler) as client:
        stale = await connector.authorize(client)
        assert stale["Authorization"] == "Bearer sprinklr-demo-access"
        await asyncio.gather(*(connector.reauthorize(client, stale) for _ in range(8)))
        assert (await connector.authorize(client))["Authorization"] == "Bearer access-1"
    assert fake.refreshes == ["sprinklr-demo-refresh"]

    # The next run: same environment (its refresh token is spent), so the store is read first.
    rerun = make_connector(tmp_path)
    async with client_for(fake.handler) as client:
        assert (await rerun.authorize(client))["Authorization"] == "Bearer access-1"
        await rerun.reauthorize(client, {"Authorization": "Bearer access-1"})
        assert (await rerun.authorize(client))["Authorization"] == "Bearer access-2"
    assert fake.refreshes == ["sprinklr-demo-refresh", "refresh-1"]


async def test_a_second_401_right_after_a_refresh_stops_the_run(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    fake = FakeSprinklr()
    async with client_for(fake.handler) as client:
        stale = await connector.authorize(client)
        await connector.reauthorize(client, stale)
        fresh = await connector.authorize(client)
        with pytest.raises(ConnectorError) as caught:
            await connector.reauthorize(client, fresh)
    assert caught.value.resolution.action is Action.ABORT
    assert caught.value.resolution.error_code == "TOKEN_REFUSED_AFTER_REFRESH"
    assert fake.refreshes == ["sprinklr-demo-refresh"], "no second refresh"


async def test_a_refreshed_token_that_worked_and_then_expired_is_refreshed_again(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    fake = FakeSprinklr()
    async with client_for(fake.handler) as client:
        await connector.reauthorize(client, await connector.authorize(client))
        headers = await connector.authorize(client)
        response = await client.post(connector.url, headers=headers)
        assert connector.classify(response).action is Action.SUCCESS  # the new token is proven
        fake.access_tokens.clear()  # ... and expires
        await connector.reauthorize(client, headers)
        assert (await connector.authorize(client))["Authorization"] == "Bearer access-2"


async def test_tokens_are_refreshed_before_they_expire(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, connection={"access_token": None, "refresh_before_expiry_seconds": 0})
    fake = FakeSprinklr(expires_in=0.2)
    async with client_for(fake.handler) as client:
        assert (await connector.authorize(client))["Authorization"] == "Bearer access-1"
        await asyncio.sleep(0.25)
        assert (await connector.authorize(client))["Authorization"] == "Bearer access-2"
    assert fake.refreshes == ["sprinklr-demo-refresh", "refresh-1"]


async def test_a_spent_refresh_token_stops_the_run_without_echoing_secrets(tmp_path: Path) -> None:
    connector = without_access_token(tmp_path)
    fake = FakeSprinklr(refresh_tokens=set())
    async with client_for(fake.handler) as client:
        with pytest.raises(ConnectorError) as caught:
            await connector.authorize(client)
    resolution = caught.value.resolution
    assert (resolution.action, resolution.error_code) == (Action.ABORT, "REFRESH_REFUSED")
    assert "invalid_grant: already used" in str(resolution.message)
    for secret in SPRINKLR_ENV.values():
        assert secret not in str(caught.value)


async def test_a_new_refresh_token_in_the_environment_wins_over_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSprinklr()
    first = without_access_token(tmp_path)
    async with client_for(fake.handler) as client:
        await first.authorize(client)
    # The chain is broken elsewhere; an operator authorizes again and puts the new token in the env.
    fake.refresh_tokens = {"operator-new-refresh"}
    monkeypatch.setenv("SPRINKLR_REFRESH_TOKEN", "operator-new-refresh")
    second = without_access_token(tmp_path)
    async with client_for(fake.handler) as client:
        assert (await second.authorize(client))["Authorization"] == "Bearer access-2"
    assert fake.refreshes[-1] == "operator-new-refresh"


async def test_a_run_that_shares_the_store_adopts_tokens_another_run_rotated(tmp_path: Path) -> None:
    fake = FakeSprinklr()
    one = make_connector(tmp_path)
    other = make_connector(tmp_path)
    assert one.token_store == other.token_store, "same credentials, same store"
    async with client_for(fake.handler) as client:
        stale_one = await one.authorize(client)
        stale_other = await other.authorize(client)
        await one.reauthorize(client, stale_one)
        await other.reauthorize(client, stale_other)  # would spend a dead token; reads the store instead
        assert (await other.authorize(client))["Authorization"] == "Bearer access-1"
    assert fake.refreshes == ["sprinklr-demo-refresh"]


@pytest.mark.parametrize("save_works", [True, False])
async def test_a_prefect_secret_refresh_token_is_saved_back_to_its_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save_works: bool
) -> None:
    blocks = {"sprinklr-refresh": "sprinklr-demo-refresh"}

    def load(name: str, field: str, described: str) -> str:
        return blocks[name]

    async def save(name: str, value: str, fallback: Path) -> bool:
        if save_works:
            blocks[name] = value
        return save_works

    monkeypatch.setattr(volley.secrets, "_load_prefect_secret", load)
    monkeypatch.setattr(sprinklr_auth, "_save_block", save)
    connection = {"access_token": None, "refresh_token": {"prefect_secret": "sprinklr-refresh"}}
    fake = FakeSprinklr()
    async with client_for(fake.handler) as client:
        await make_connector(tmp_path, connection=connection).authorize(client)
        assert blocks["sprinklr-refresh"] == ("refresh-1" if save_works else "sprinklr-demo-refresh")
        # The next run starts from the block; when saving failed, the store file has the live token.
        fake.access_tokens.clear()
        rerun = make_connector(tmp_path, connection=connection)
        headers = await rerun.authorize(client)
        if (await client.post(rerun.url, headers=headers)).status_code == 401:
            await rerun.reauthorize(client, headers)
        assert (await client.post(rerun.url, headers=await rerun.authorize(client))).status_code == 204
    assert fake.refreshes == ["sprinklr-demo-refresh", "refresh-1"]
