"""The Relay simulator: single and bulk triggers, validation, auth, duplicates, throttle, log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sim.app import VENDORS_KEY, build_app
from sim.config import RelaySimConfig, SimConfig
from sim.faults import NO_FAULT, Fault, FaultDraw
from sim.log import accepted_recipients, read_log
from sim.relay import channels_for
from sim.testing import SimulatorProcess

KEY = {"xx-relay-api-key": "relay-demo-key"}
TRIGGER = "Delivery-Reminder-2"
JOURNEY = "27b88f6f-2261-4dfc-bf04-1bf8309857a9"
BULK = "/relay/platform/v3/api/messaging/client/volley-demo/journey_trigger"
STATUS = "/relay/platform/v3/api/experience-status/1.0/client/volley-demo/customer/{}/trigger_status"


def single_path(trigger: str, ccid: str) -> str:
    return f"{BULK}/{trigger}/customer/{ccid}"


def item(ccid: str, **fields: Any) -> dict[str, Any]:
    return {"trigger_id": TRIGGER, "ccid": ccid, **fields}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess() as process:
        yield process


def post(sim: SimulatorProcess, path: str, document: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(sim.base_url + path, json=document, headers=KEY if headers is None else headers)


def test_bulk_answers_one_result_per_item_in_request_order(sim: SimulatorProcess) -> None:
    document = {
        "batch": [
            item(
                "CRD-98027-004",
                journey_id=JOURNEY,
                asset_id="5da610e9e-896r-3ba4-7a13-321c87c7ff6a",
                client_message_tag="campaignA",
                input_parameters={"input_first_name": "Chloé"},
                lb_name="volley",
                lb_source="delivery",
            ),
            item("NOSEND-1"),
            item("ERROR-1"),
        ]
    }
    answer = post(sim, BULK, document)
    assert answer.status_code == 200
    assert answer.json() == {
        "results": [
            {
                "trigger_id": TRIGGER,
                "ccid": "CRD-98027-004",
                "message": {"status": "sent"},
                "notification": {"results": channels_for("CRD-98027-004")},
            },
            {
                "trigger_id": TRIGGER,
                "ccid": "NOSEND-1",
                "message": {"status": "not-sent"},
                "notification": {"results": []},
            },
            {"trigger_id": TRIGGER, "ccid": "ERROR-1", "message": {"status": "error"}, "notification": {"results": []}},
        ]
    }


def test_single_answers_the_customer_s_message_and_channels(sim: SimulatorProcess) -> None:
    answer = post(sim, single_path(TRIGGER, "CRD-single-1"), {"input_parameters": {"input_x": "1"}})
    assert answer.status_code == 200
    assert answer.json() == {"message": {"status": "sent"}, "notification": {"results": channels_for("CRD-single-1")}}


def test_channels_cover_every_documented_status() -> None:
    statuses = {c["status"] for n in range(3000) for c in channels_for(f"CRD-{n:06d}")}
    assert statuses == {"ok", "no-consent", "channel-deactivated", "error-sms"}
    assert all(c["channel_type"] == "sms" and c["channel_addr"].startswith("+1555") for c in channels_for("x"))


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        ({"batch": [item(f"c{i}") for i in range(101)]}, 400, "at most 100 triggers a request, got 101"),
        ({"batch": [item("c1", input_parameters={"first_name": "A"})]}, 400, "'first_name' must start with input_"),
        ({"batch": [item("C" * 101)]}, 400, "batch[0].ccid: a string of 1 to 100 characters"),
        ({"batch": [item("c1", client_message_tag="t" * 101)]}, 400, "client_message_tag: a string of 1 to 100"),
        ({"batch": [item("c1"), item("c1")]}, 400, "repeated"),
        ({"batch": []}, 400, "'batch' must be a non-empty array"),
        ({"batch": [{"trigger_id": "No-Such-Trigger", "ccid": "c1"}]}, 404, "trigger_id 'No-Such-Trigger' not found"),
        ({"batch": [item("c1", journey_id="other-journey")]}, 404, "is not in journey 'other-journey'"),
    ],
)
def test_bulk_validation(sim: SimulatorProcess, document: Any, status: int, message: str) -> None:
    answer = post(sim, BULK, document)
    assert answer.status_code == status
    assert message in answer.json()["message"]


def test_one_hundred_items_is_fine(sim: SimulatorProcess) -> None:
    answer = post(sim, BULK, {"batch": [item(f"hundred-{i}") for i in range(100)]})
    assert answer.status_code == 200
    assert len(answer.json()["results"]) == 100


def test_auth_by_api_key_of_the_client(sim: SimulatorProcess) -> None:
    for headers in ({}, {"xx-relay-api-key": "wrong"}):
        assert post(sim, BULK, {"batch": [item("a1")]}, headers).status_code == 401
    other_client = post(sim, BULK.replace("volley-demo", "someone-else"), {"batch": [item("a1")]})
    assert other_client.status_code == 403
    assert "relay-demo-key" not in other_client.text


def test_the_same_trigger_within_the_window_is_dropped_as_a_duplicate() -> None:
    with SimulatorProcess() as sim:
        document = {"batch": [item("dup-1", input_parameters={"input_a": "1"})]}
        first = post(sim, BULK, document).json()["results"][0]
        second = post(sim, BULK, document).json()["results"][0]
        other_inputs = post(sim, BULK, {"batch": [item("dup-1", input_parameters={"input_a": "2"})]})
        stats = httpx.get(sim.base_url + "/relay/_sim/stats").json()
    assert first["message"] == {"status": "sent"}
    assert second["message"] == {"status": "not-sent", "reason": "duplicate"}
    assert other_inputs.json()["results"][0]["message"] == {"status": "sent"}
    assert stats["duplicates"] == 1
    log = read_log(sim.log_path)
    assert [r[0]["status"] for r in log["recipients"].to_list()] == ["accepted", "duplicate", "accepted"]
    assert accepted_recipients(log)["key"].to_list() == ["dup-1", "dup-1"]


def test_over_the_rate_limit_is_429_with_retry_after() -> None:
    with SimulatorProcess(rate_limit=0.5, burst=1) as sim:
        assert post(sim, BULK, {"batch": [item("t1")]}).status_code == 200
        throttled = post(sim, BULK, {"batch": [item("t2")]})
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"


def test_injected_5xx_is_not_applied() -> None:
    with SimulatorProcess(faults={"5xx": 1.0}) as sim:
        assert post(sim, BULK, {"batch": [item("e1")]}).status_code == 503
    log = read_log(sim.log_path)
    assert log["result"].to_list() == ["error"]
    assert accepted_recipients(log).height == 0


async def test_outcome_patterns_are_configurable() -> None:
    config = SimConfig(relay=RelaySimConfig(not_sent_pattern=r"^VIP", duplicate_window_seconds=0))
    async with TestClient(TestServer(build_app(config))) as client:
        answer = await client.post(BULK, json={"batch": [item("VIP-1"), item("NOSEND-1")]}, headers=KEY)
        results = (await answer.json())["results"]
    assert [r["message"]["status"] for r in results] == ["not-sent", "sent"]


class ScriptedFaults:
    """Fault draws in a given order, then none."""

    def __init__(self, *draws: FaultDraw) -> None:
        self.draws = list(draws)

    def draw(self) -> FaultDraw:
        return self.draws.pop(0) if self.draws else NO_FAULT


async def test_the_status_look_up_lists_every_trigger_applied_and_only_those() -> None:
    app = build_app(SimConfig(hold_seconds=0))
    scripted = ScriptedFaults(
        NO_FAULT,
        FaultDraw(Fault.TIMEOUT, processed=True),  # applied, answer lost
        FaultDraw(Fault.TIMEOUT, processed=False),  # answer lost before it was applied
    )
    app[VENDORS_KEY]["relay"].faults = scripted  # type: ignore[assignment]
    async with TestClient(TestServer(app)) as client:
        answered = await client.post(
            BULK, json={"batch": [item("S-1"), item("NOSEND-1"), item("ERROR-1")]}, headers=KEY
        )
        applied = await client.post(BULK, json={"batch": [item("S-2")]}, headers=KEY)
        lost = await client.post(BULK, json={"batch": [item("S-3")]}, headers=KEY)
        duplicate = await client.post(BULK, json={"batch": [item("S-1")]}, headers=KEY)
        statuses = {}
        for ccid in ("S-1", "NOSEND-1", "ERROR-1", "S-2", "S-3", "never"):
            answer = await client.get(STATUS.format(ccid), headers=KEY)
            assert answer.status == 200
            statuses[ccid] = await answer.json()
        refused = [
            (await client.get(STATUS.format("S-1"), headers=headers)).status
            for headers in ({}, {"xx-relay-api-key": "wrong"})
        ]
        other_client = await client.get(STATUS.format("S-1").replace("volley-demo", "someone-else"), headers=KEY)
        stats = await (await client.get("/relay/_sim/stats")).json()
    assert [r.status for r in (answered, applied, lost, duplicate)] == [200, 504, 504, 200]

    def brief(ccid: str) -> list[tuple[str, str | None, str]]:
        assert statuses[ccid]["ccid"] == ccid
        return [(t["trigger_id"], t["journey_id"], t["status"]) for t in statuses[ccid]["triggers"]]

    assert brief("S-1") == [(TRIGGER, JOURNEY, "sent"), (TRIGGER, JOURNEY, "not-sent")]  # then a duplicate
    assert brief("NOSEND-1") == [(TRIGGER, JOURNEY, "not-sent")]
    assert brief("ERROR-1") == [(TRIGGER, JOURNEY, "error")]
    assert brief("S-2") == [(TRIGGER, JOURNEY, "sent")]
    assert brief("S-3") == brief("never") == []
    moment = datetime.fromisoformat(statuses["S-2"]["triggers"][0]["triggered_at"])
    assert statuses["S-2"]["triggers"][0]["triggered_at"].endswith("Z")
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)
    assert refused == [401, 401]
    assert other_client.status == 403
    assert stats["status_lookups"] == 9
    assert stats["requests"] == 4, "look-ups are not trigger requests"
