"""The MedChat journeys simulator: bulk trigger, subflows, cancel, auth, throttle, faults, log."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sim.app import build_app
from sim.config import DEMO_CHATBOT_ID, MedChatSimConfig, SimConfig
from sim.log import accepted_recipients, read_log
from sim.medchat import instance_id_for
from sim.testing import SimulatorProcess
from tests.journey_support import MEDCHAT_DOCUMENTED

TOKEN = "medchat-demo-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOURNEY = f"/chatbotapi/external/orgs/volley-org/journeys/{DEMO_CHATBOT_ID}/instances/bulk"
CANCEL = f"/chatbotapi/orgs/volley-org/journeys/{DEMO_CHATBOT_ID}/instances/{{}}/execution"


def instance(appointment: str, **parameters: Any) -> dict[str, Any]:
    values = {
        "patientId": "1",
        "patientName": "Zoë",
        "appointmentId": appointment,
        "appointmentDateTime": "2025-03-14 08:30:00",
    }
    return {"parameters": {**values, **parameters}}


def body(*instances: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"flowId": None, "timeZone": "UTC", "instances": list(instances), **fields}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess() as process:
        yield process


def medchat(sim: SimulatorProcess) -> str:
    return f"{sim.base_url}/medchat"


def post(sim: SimulatorProcess, document: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(medchat(sim) + JOURNEY, json=document, headers=AUTH if headers is None else headers)


def test_the_documented_request_is_accepted_with_204_and_no_body(sim: SimulatorProcess) -> None:
    answer = post(sim, MEDCHAT_DOCUMENTED)
    assert answer.status_code == 204
    assert answer.content == b""
    instances = {i["journeyInstanceId"]: i for i in httpx.get(medchat(sim) + "/_sim/instances").json()}
    known = instances[instance_id_for(DEMO_CHATBOT_ID, "40-XYZ-11123")]
    assert (known["identifier"], known["running"]) == ("40-XYZ-11123", True)


def test_a_bad_request_is_refused_whole_with_an_array_of_messages(sim: SimulatorProcess) -> None:
    document = body(
        instance("ok-1"),
        instance("bad-1", patientId=100001),
        instance("bad-2", appointmentDateTime="12/01/2023 8:00"),
        {"parameters": {"appointmentId": "bad-3", "patientId": "3", "appointmentDateTime": "2025-03-14 08:30:00"}},
        instance("bad-4", favouriteColour="blue"),
        timeZone="Mars/Olympus_Mons",
    )
    answer = post(sim, document)
    assert answer.status_code == 400
    assert answer.json() == [
        "'Mars/Olympus_Mons' is not a valid IANA time zone.",
        "Instance 1: parameter 'patientId' must be a string.",
        "Instance 2: parameter 'appointmentDateTime' value '12/01/2023 8:00' is not a date and time like "
        "2023-12-01 08:00:00.",
        "Instance 3: parameter 'patientName' is required.",
        "Instance 4: 'favouriteColour' is not a parameter of this journey.",
    ]
    ids = {i["identifier"] for i in httpx.get(medchat(sim) + "/_sim/instances").json()}
    assert "ok-1" not in ids, "nothing of a refused request is applied"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timeZone": None}, "'timeZone' is required because the journey has datetime parameters."),
        ({"flowId": "no-such-flow"}, "Flow 'no-such-flow' does not exist on this journey."),
        ({"instances": "nope"}, "'instances' is required and must be an array."),
    ],
)
def test_request_level_rules(sim: SimulatorProcess, fields: dict[str, Any], message: str) -> None:
    answer = post(sim, body(instance("r-1"), **fields))
    assert answer.status_code == 400
    assert message in answer.json()


def test_a_rejected_patient_refuses_the_whole_request(sim: SimulatorProcess) -> None:
    answer = post(sim, body(instance("fine-1"), instance("REJECT-7")))
    assert answer.status_code == 400
    assert answer.json() == ["Instance 1: no patient record matches appointmentId 'REJECT-7'."]


def test_auth_is_a_static_bearer_token_with_the_create_scope(sim: SimulatorProcess) -> None:
    for headers in ({}, {"Authorization": TOKEN}, {"Authorization": "Bearer wrong-token"}):
        answer = post(sim, MEDCHAT_DOCUMENTED, headers)
        assert answer.status_code == 401
        assert TOKEN not in answer.text
    elsewhere = medchat(sim) + JOURNEY.replace("volley-org", "other-org")
    unknown = httpx.post(elsewhere, json=MEDCHAT_DOCUMENTED, headers=AUTH)
    assert unknown.status_code == 404


def test_a_subflow_runs_on_existing_instances_only(sim: SimulatorProcess) -> None:
    assert post(sim, body(instance("sub-1"))).status_code == 204
    assert post(sim, body(instance("sub-1"), flowId="reschedule")).status_code == 204
    missing = post(sim, body(instance("sub-never"), flowId="reschedule"))
    assert missing.status_code == 400
    assert missing.json() == ["Instance 0: no running instance matches appointmentId 'sub-never'."]
    known = {i["identifier"]: i for i in httpx.get(medchat(sim) + "/_sim/instances").json()}
    assert known["sub-1"]["subflows"] == 1


def test_cancel_deletes_a_running_execution_once(sim: SimulatorProcess) -> None:
    assert post(sim, body(instance("cancel-1"))).status_code == 204
    url = medchat(sim) + CANCEL.format(instance_id_for(DEMO_CHATBOT_ID, "cancel-1"))
    assert httpx.delete(url, headers=AUTH).status_code == 204
    again = httpx.delete(url, headers=AUTH)
    assert again.status_code == 404
    assert "was not found or has no running execution" in again.json()[0]
    unknown = httpx.delete(medchat(sim) + CANCEL.format("00000000-0000-0000-0000-000000000000"), headers=AUTH)
    assert unknown.status_code == 404
    assert httpx.delete(url, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_log_keys_triggers_by_identifier_and_cancels_by_instance_id() -> None:
    with SimulatorProcess() as sim:
        post(sim, body(instance("log-1"), instance("log-2")))
        post(sim, body(instance("log-3"), instance("REJECT-log")))
        instance_id = instance_id_for(DEMO_CHATBOT_ID, "log-1")
        httpx.delete(medchat(sim) + CANCEL.format(instance_id), headers=AUTH)
        httpx.delete(medchat(sim) + CANCEL.format(instance_id), headers=AUTH)
        stats = httpx.get(medchat(sim) + "/_sim/stats").json()
    log = read_log(sim.log_path)
    assert sorted(accepted_recipients(log)["key"]) == sorted(["log-1", "log-2", instance_id])
    assert log["result"].to_list() == ["accepted", "rejected", "accepted", "rejected"]
    assert (stats["instances_started"], stats["instances_cancelled"], stats["cancel_not_found"]) == (2, 1, 1)
    assert stats["vendor"] == "medchat"


def test_over_the_rate_limit_is_429_with_retry_after() -> None:
    with SimulatorProcess(rate_limit=0.5, burst=1) as sim:
        assert post(sim, body(instance("t-1"))).status_code == 204
        throttled = post(sim, body(instance("t-2")))
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"


def test_injected_faults_answer_5xx_and_withhold() -> None:
    with SimulatorProcess(faults={"5xx": 1.0}) as sim:
        assert post(sim, body(instance("f-1"))).status_code == 503
    with SimulatorProcess(faults={"reset": 1.0}, seed=3) as sim:
        with pytest.raises(httpx.TransportError):
            post(sim, body(instance("f-2")))
        time.sleep(0.3)
    withheld = read_log(sim.log_path)
    assert withheld["result"].to_list() == ["withheld"]
    assert withheld["recipients"].to_list()[0] == [{"key": "f-2", "status": "accepted"}]


async def test_a_maximum_per_request_can_be_simulated() -> None:
    config = SimConfig(medchat=MedChatSimConfig(max_instances=2))
    async with TestClient(TestServer(build_app(config))) as client:
        document = copy.deepcopy(body(instance("m-1"), instance("m-2"), instance("m-3")))
        answer = await client.post("/medchat" + JOURNEY, json=document, headers=AUTH)
        assert answer.status == 400
        assert "At most 2 instances can be triggered in one request." in await answer.json()
