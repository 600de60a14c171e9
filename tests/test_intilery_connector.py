"""The Intilery connector against the documented track commands (vendor-docs/003), the batch
answer Volley reads, its error answers, packing by size and bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from connectors.intilery import AUTH_HEADER as AUTH
from connectors.intilery import MAX_EVENT_BYTES, MAX_REQUEST_BYTES, IntileryConnector
from tests.marketing_support import INTILERY_ENV, intilery_audience, intilery_spec, set_env
from tests.support import write_spec
from volley.batches import Batch
from volley.campaign import Campaign, dry_run
from volley.connector import RECIPIENT_KEY
from volley.errors import SpecError
from volley.resolution import Action
from volley.sources import ROW_INDEX
from volley.validation import split_invalid

TRACK = "https://tracking.intilery.com/track/{clientId}/{accountId}/{BRANDID}"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, INTILERY_ENV)


def make_connector(tmp_path: Path, **spec_overrides: Any) -> IntileryConnector:
    source = tmp_path / "a.csv"
    intilery_audience(3).write_csv(source)
    spec = intilery_spec(source, **spec_overrides)
    connector = Campaign.load(write_spec(tmp_path / "spec.yaml", spec)).connector
    assert isinstance(connector, IntileryConnector)
    return connector


def documented(tmp_path: Path, **params: Any) -> IntileryConnector:
    """The documented base (`.../track/{clientId}/{accountId}/{BRANDID}`) and only the given params."""
    source = tmp_path / "a.csv"
    intilery_audience(3).write_csv(source)
    full = intilery_spec(source)
    full["vendor_params"] = params
    full["connection"] = {"base_url": TRACK, "auth_token": {"env": "INTILERY_AUTH_TOKEN"}}
    connector = Campaign.load(write_spec(tmp_path / "doc.yaml", full)).connector
    assert isinstance(connector, IntileryConnector)
    return connector


def prepared(connector: IntileryConnector, rows: dict[str, Any], key: str = "customer_id") -> pl.DataFrame:
    frame = pl.DataFrame(rows).with_row_index(ROW_INDEX).with_columns(pl.col(key).alias(RECIPIENT_KEY))
    return connector.prepare(frame)


def events(connector: IntileryConnector, rows: dict[str, Any], key: str = "customer_id") -> list[dict[str, Any]]:
    valid, failures = split_invalid(prepared(connector, rows, key), connector.audience_model(), "test")
    assert failures.height == 0, failures
    payload = connector.encode_rows(valid).to_list()
    call = connector.build_call(Batch.of("b", list(range(len(payload))), ["k"] * len(payload), payload), {AUTH: "T"})
    assert call.headers[AUTH] == "T"
    assert call.headers["Content-Type"] == "application/json"
    body = json.loads(call.content or b"")
    if connector.params.mode == "single":
        return [body]
    assert set(body) == {"batch"}
    result: list[dict[str, Any]] = body["batch"]
    return result


# -- requests ----------------------------------------------------------------------------------


def test_send_command_matches_the_documented_example(tmp_path: Path) -> None:
    connector = documented(
        tmp_path,
        mode="single",
        user_id_column="user",
        event="SEND_SMS",
        asset_id="202007-B-AbandonedBooking",
        timestamp_column="ts",
        merge_data=[{"name": "bookingId", "column": "booking"}],
    )
    assert connector.url == f"{TRACK}/v1/track"
    assert connector.batch_limits() == (1, 1)
    [event] = events(
        connector,
        {"user": ["ABC/123"], "ts": ["2019-11-18T13:30:12.984Z"], "booking": ["1234"], "customer_id": ["c"]},
        key="user",
    )
    assert event == {
        "userId": "ABC/123",
        "event": "send_sms",  # compared case-insensitively by Intilery; sent as the docs' table writes it
        "assetId": "202007-B-AbandonedBooking",
        "timestamp": "2019-11-18T13:30:12.984Z",
        "bookingId": "1234",
    }


def test_start_journey_matches_the_documented_example(tmp_path: Path) -> None:
    connector = documented(
        tmp_path,
        mode="single",
        user_id_column="user",
        event="start_journey",
        journey_id_to_trigger="6046429d73096e3b2dca973d",
        step_id_to_trigger_column="step",
    )
    [event] = events(
        connector, {"user": ["ABC/123"], "step": ["01c318b8-1f16-40b3-9808-709c5c1b44f6"], "customer_id": ["c"]}, "user"
    )
    assert event == {
        "userId": "ABC/123",
        "event": "start_journey",
        "properties": {
            "journeyIdToTrigger": "6046429d73096e3b2dca973d",
            "stepIdToTrigger": "01c318b8-1f16-40b3-9808-709c5c1b44f6",
        },
    }


def test_a_batch_mixes_commands_per_row_and_keeps_merge_data_types(tmp_path: Path) -> None:
    connector = make_connector(
        tmp_path,
        vendor_params={
            "event": None,
            "event_column": "command",
            "asset_id": None,
            "asset_id_column": "asset",
            "journey_id_to_trigger_column": "journey",
            "timestamp_column": "at",
        },
    )
    assert connector.url == "http://127.0.0.1:9/intilery/track/volley/1/DEMO/v1/batch"
    assert connector.batch_limits() == (500, 5000)
    rows = {
        "customer_id": ["u1", "u2"],
        "command": ["Send_Email", "START_JOURNEY"],
        "asset": ["A-1", "A-unused"],
        "journey": [None, "J-9"],
        "at": [datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC), None],
        "booking_id": ["1001", None],
        "destination": ["Málaga", " "],
        "nights": [3, None],
    }
    first, second = events(connector, rows)
    assert first == {
        "userId": "u1",
        "event": "send_email",
        "assetId": "A-1",
        "timestamp": "2025-03-01T12:00:00.250Z",
        "bookingId": "1001",
        "destination": "Málaga",
        "nights": 3,
    }
    assert second == {"userId": "u2", "event": "start_journey", "properties": {"journeyIdToTrigger": "J-9"}}


def test_timestamps_are_sent_as_iso_8601_utc(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, vendor_params={"merge_data": []})

    def timestamp(value: Any) -> list[str]:
        frame = prepared(connector, {"customer_id": ["a"], "abandoned_at": value})
        result: list[str] = frame["timestamp"].to_list()
        return result

    assert timestamp([datetime(2025, 1, 2, 3, 4, 5)]) == ["2025-01-02T03:04:05.000Z"], "naive: read as UTC"
    paris = pl.Series([datetime(2025, 1, 2, 4, 4, 5)]).dt.replace_time_zone("Europe/Paris")
    assert timestamp(paris) == ["2025-01-02T03:04:05.000Z"]
    assert timestamp(["2025-01-02T03:04:05+00:00"]) == ["2025-01-02T03:04:05Z"]


async def test_every_request_carries_the_auth_token(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    async with httpx.AsyncClient() as client:
        assert await connector.authorize(client) == {AUTH: "intilery-demo-token"}


def test_batches_are_cut_to_fit_a_megabyte(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    audience = intilery_audience(300).with_columns(pl.lit("x" * 20_000).alias("destination"))
    audience.write_csv(source)
    spec = intilery_spec(source)
    campaign = Campaign.load(write_spec(tmp_path / "spec.yaml", spec))
    plan = campaign.planner("k").plan_slice(next(iter(campaign.source.iter_slices())))
    batches = plan.batches
    assert sum(len(b) for b in batches) == 300
    sizes = [len(campaign.connector.build_call(b, {}).content or b"") for b in batches]
    assert max(sizes) <= MAX_REQUEST_BYTES
    assert min(len(b) for b in batches[:-1]) >= 50, "packed, not one event a request"


# -- bad input ---------------------------------------------------------------------------------


def test_bad_rows_are_invalid_with_a_clear_code(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    audience = pl.DataFrame(
        {
            "customer_id": ["ok-1", "no-asset", "bad-event", "no-journey", "bad-time", "huge", "ok-2"],
            "command": [
                "send_push",
                "SEND_EMAIL",
                "send_fax",
                "start_journey",
                "send_sms",
                "send_sms",
                "Start_Journey",
            ],
            "asset": ["A", None, "A", "A", "A", "A", None],
            "journey": [None, None, None, None, None, None, "J"],
            "at": [None, None, None, None, "2019-02-30T10:00:00Z", None, "2019-11-18T13:30:11.444Z"],
            "note": ["n", "n", "n", "n", "n", "y" * (MAX_EVENT_BYTES + 1), "n"],
        }
    )
    audience.write_csv(source)
    params = {
        "event": None,
        "event_column": "command",
        "asset_id": None,
        "asset_id_column": "asset",
        "journey_id_to_trigger_column": "journey",
        "timestamp_column": "at",
        "merge_data": ["note"],
    }
    campaign = Campaign.load(write_spec(tmp_path / "spec.yaml", intilery_spec(source, vendor_params=params)))
    campaign.preflight()
    plan = campaign.planner("k").plan_slice(next(iter(campaign.source.iter_slices())))
    decided = {r["recipient_key"]: r for r in plan.decided.iter_rows(named=True)}
    assert {k: r["error_code"] for k, r in decided.items()} == {
        "no-asset": "assetId_required_for_send",
        "bad-event": "event.isin",
        "no-journey": "journeyIdToTrigger_required_for_start_journey",
        "bad-time": "timestamp.is_a_date",
        "huge": "payload.too_large",
    }
    assert all(r["status"] == "invalid" for r in decided.values())
    assert "takes at most 32768" in decided["huge"]["error_message"]
    assert [k for b in plan.batches for k in b.recipient_keys] == ["ok-1", "ok-2"]
    assert dry_run(campaign, "k").counts["invalid: payload.too_large"] == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"event": "send_fax"}, "unknown event 'send_fax'"),
        ({"asset_id": None}, "event send_sms needs 'asset_id' or 'asset_id_column'"),
        ({"event": "start_journey"}, "event start_journey needs 'journey_id_to_trigger'"),
        ({"merge_data": ["userId"]}, "'userId' is a field of the event itself"),
        ({"asset_id_column": "x"}, "give at most one of 'asset_id' or 'asset_id_column'"),
        ({"mode": "both"}, "mode"),
    ],
)
def test_spec_mistakes_are_one_line_errors(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match="vendor_params") as caught:
        make_connector(tmp_path, vendor_params=params)
    assert message in str(caught.value)


def test_the_track_base_is_the_url_or_the_three_ids(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"base_url must end in /track/\{clientId\}"):
        make_connector(tmp_path, connection={"client_id": None, "account_id": None, "brand_id": None})
    with pytest.raises(SpecError, match="give all of client_id, account_id and brand_id"):
        make_connector(tmp_path, connection={"brand_id": None})
    with pytest.raises(SpecError, match="batch_size: intilery takes at most 1 recipients a request"):
        make_connector(tmp_path, vendor_params={"mode": "single"}, batch_size=10)


# -- answers -----------------------------------------------------------------------------------


def response(status: int, body: Any = None, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text)
    return httpx.Response(status, json=body)


THREE = Batch.of("b", [0, 1, 2], ["a", "b", "c"], ["{}", "{}", "{}"])
ONE = Batch.of("b", [0], ["a"], ["{}"])


def test_the_single_answer_gives_the_event_id(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, vendor_params={"mode": "single"})
    results = connector.decode(ONE, response(200, {"success": True, "eventId": "evt-1"}))
    assert (results.status, results.vendor_ref) == (["accepted"], ["evt-1"])
    refused = response(400, {"success": False, "message": "userId must not be empty"})
    assert connector.classify(refused).action is Action.SUCCESS
    results = connector.decode(ONE, refused)
    assert (results.status, results.error_code, results.error_message) == (
        ["rejected"],
        ["BAD_REQUEST"],
        ["userId must not be empty"],
    )


def test_the_batch_answer_is_read_per_event_in_order(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    answer = {
        "success": True,
        "results": [
            {"success": True, "eventId": "e1"},
            {"success": False, "message": "customer 'b' has not been identified"},
            {"success": True, "eventId": "e3"},
        ],
    }
    results = connector.decode(THREE, response(200, answer))
    assert results.status == ["accepted", "rejected", "accepted"]
    assert results.vendor_ref == ["e1", None, "e3"]
    assert results.error_message[1] == "customer 'b' has not been identified"


def test_batch_answers_that_do_not_line_up_are_in_doubt(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    short = connector.decode(THREE, response(200, {"success": True, "results": [{"success": True}]}))
    assert short.status == ["in_doubt"] * 3
    assert connector.decode(THREE, response(200, text="<html>ok</html>")).status == ["in_doubt"] * 3
    bare = connector.decode(THREE, response(200, {"success": True}))
    assert bare.status == ["accepted"] * 3, "success without results: every event taken, no eventIds"
    refused = connector.decode(THREE, response(400, {"success": False, "message": "batch must not be empty"}))
    assert refused.status == ["rejected"] * 3


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (403, Action.ABORT),
        (401, Action.ABORT),
        (404, Action.ABORT),
        (413, Action.SPLIT),
        (429, Action.THROTTLE),
        (502, Action.RETRY),
        (503, Action.RETRY),
        (504, Action.IN_DOUBT),
    ],
)
def test_error_answers_are_classified(tmp_path: Path, status: int, action: Action) -> None:
    resolution = make_connector(tmp_path).classify(response(status, {"success": False, "message": "m"}))
    assert resolution.action is action
    if status == 403:
        assert resolution.error_code == "AUTH_REFUSED"
        assert "intilery-demo-token" not in str(resolution.message)
