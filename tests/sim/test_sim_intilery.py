"""The Intilery simulator: documented track commands, the batch endpoint, size limits,
identification, auth, the rate limit and its log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sim.testing import SimulatorProcess

TOKEN = "intilery-demo-token"
TRACK = "/intilery/track/acme/42/BRAND"
SEND_SAMPLE = {
    "userId": "ABC/123",
    "event": "SEND_SMS",
    "assetId": "202007-B-AbandonedBooking",
    "timestamp": "2019-11-18T13:30:12.984Z",
    "bookingId": "1234",
}
JOURNEY_SAMPLE = {
    "userId": "ABC/123",
    "event": "start_journey",
    "properties": {
        "journeyIdToTrigger": "6046429d73096e3b2dca973d",
        "stepIdToTrigger": "01c318b8-1f16-40b3-9808-709c5c1b44f6",
    },
}


def options(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--vendor-option", pair)]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(extra_args=options("intilery.max_request_bytes=100000")) as process:
        yield process


def post(sim: SimulatorProcess, command: str, body: Any, token: str = TOKEN) -> httpx.Response:
    return httpx.post(f"{sim.base_url}{TRACK}/v1/{command}", json=body, headers={"auth-token": token})


def logged_keys(sim: SimulatorProcess) -> list[dict[str, str]]:
    log = sim.read_log()
    rows = log.filter((log["vendor"] == "intilery") & log["processed"]).to_dicts()
    return [r for row in rows for r in row["recipients"]]


def test_the_documented_commands_are_accepted(sim: SimulatorProcess) -> None:
    for sample in (SEND_SAMPLE, JOURNEY_SAMPLE):
        answer = post(sim, "track", sample)
        assert answer.status_code == 200, answer.text
        assert answer.json()["success"] is True
        assert answer.json()["eventId"].startswith("evt-")
    assert {"key": "ABC/123", "status": "accepted"} in logged_keys(sim)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"userId": ""}, "userId must not be empty"),
        ({"event": "send_fax"}, "unknown event 'send_fax'"),
        ({"assetId": None}, "assetId is required for send_sms"),
        ({"timestamp": "2019-11-18 13:30:12"}, "timestamp must be an ISO-8601 UTC timestamp"),
        ({"timestamp": "2019-02-30T13:30:12Z"}, "timestamp must be an ISO-8601 UTC timestamp"),
        ({"userId": "UNKNOWN-9"}, "customer 'UNKNOWN-9' has not been identified"),
    ],
)
def test_bad_events_are_400_with_a_message(sim: SimulatorProcess, change: dict[str, Any], message: str) -> None:
    body = {k: v for k, v in {**SEND_SAMPLE, **change}.items() if v is not None}
    answer = post(sim, "track", body)
    assert answer.status_code == 400
    assert answer.json() == {"success": False, "message": message}


def test_start_journey_needs_the_journey_id(sim: SimulatorProcess) -> None:
    answer = post(sim, "track", {**JOURNEY_SAMPLE, "properties": {"stepIdToTrigger": "s"}})
    assert answer.status_code == 400
    assert answer.json()["message"] == "properties.journeyIdToTrigger is required for start_journey"


def test_identified_customers_are_no_longer_unknown(sim: SimulatorProcess) -> None:
    body = {**SEND_SAMPLE, "userId": "UNKNOWN-identified"}
    assert post(sim, "track", body).status_code == 400
    assert post(sim, "identify", {"userId": "UNKNOWN-identified"}).json() == {"success": True}
    assert post(sim, "track", body).status_code == 200


def test_a_batch_answers_one_result_per_event_in_order(sim: SimulatorProcess) -> None:
    batch = [
        {**SEND_SAMPLE, "userId": "b-1"},
        {**SEND_SAMPLE, "userId": "UNKNOWN-b"},
        {**JOURNEY_SAMPLE, "userId": "b-3", "event": "Start_Journey"},
        {**SEND_SAMPLE, "userId": "b-4", "note": "x" * 33_000},
    ]
    answer = post(sim, "batch", {"batch": batch})
    assert answer.status_code == 200
    document = answer.json()
    assert document["success"] is True
    results = document["results"]
    assert [r["success"] for r in results] == [True, False, True, False]
    assert results[1]["message"] == "customer 'UNKNOWN-b' has not been identified"
    assert results[3]["message"].endswith("at most 32768")
    assert {"key": "b-1", "status": "accepted"} in logged_keys(sim)
    assert post(sim, "batch", {"batch": []}).status_code == 400


def test_too_large_is_413(sim: SimulatorProcess) -> None:
    single = post(sim, "track", {**SEND_SAMPLE, "note": "x" * 33_000})
    assert single.status_code == 413
    batch = [{**SEND_SAMPLE, "userId": f"big-{i}", "note": "x" * 30_000} for i in range(4)]
    whole = post(sim, "batch", {"batch": batch})
    assert whole.status_code == 413
    assert not [e for e in logged_keys(sim) if e["key"].startswith("big-")], "nothing of a 413 is applied"


def test_the_auth_token_is_required(sim: SimulatorProcess) -> None:
    assert post(sim, "track", SEND_SAMPLE, token="wrong").status_code == 403
    missing = httpx.post(f"{sim.base_url}{TRACK}/v1/track", json=SEND_SAMPLE)
    assert missing.status_code == 403
    assert missing.json() == {"success": False, "message": "invalid or missing auth-token"}


def test_over_the_rate_is_429() -> None:
    extra = options("intilery.requests_per_second=0.01", "intilery.burst=2")
    with SimulatorProcess(extra_args=extra) as sim, httpx.Client() as client:
        codes = [
            client.post(f"{sim.base_url}{TRACK}/v1/track", json=SEND_SAMPLE, headers={"auth-token": TOKEN}).status_code
            for _ in range(4)
        ]
    assert codes == [200, 200, 429, 429]
