"""Responsys REI trigger API against a default simulator process."""

from __future__ import annotations

import json
from typing import Any

import httpx

from sim.responsys import recipient_id_for
from sim.testing import SimulatorProcess
from tests.sim.simtest_support import (
    AUTH_PATH,
    PASSWORD,
    SAMPLE_BODY,
    body_for,
    login,
    profile_recipient,
    token_for,
    trigger,
)


def test_health(default_sim: SimulatorProcess) -> None:
    answer = httpx.get(default_sim.base_url + "/health")
    assert answer.status_code == 200
    assert "responsys" in answer.json()["vendors"]


def test_login_and_trigger_documented_sample(default_sim: SimulatorProcess) -> None:
    answer = login(default_sim.responsys_url)
    assert answer.status_code == 200
    document = answer.json()
    assert set(document) == {"authToken", "issuedAt", "endPoint"}
    assert isinstance(document["issuedAt"], int)
    assert document["issuedAt"] > 1_600_000_000_000
    assert document["endPoint"] == default_sim.responsys_url

    result = trigger(document["endPoint"], document["authToken"], SAMPLE_BODY)
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json() == [{"errorMessage": None, "success": True, "recipientId": recipient_id_for("8")}]
    assert recipient_id_for("8") > 0


def test_wrong_password_is_401_without_echo(default_sim: SimulatorProcess) -> None:
    answer = login(default_sim.responsys_url, password="hunter2-wrong")
    assert answer.status_code == 401
    document = answer.json()
    assert document["errorCode"] == "INVALID_USER_NAME_PASSWORD"
    assert set(document) == {"type", "title", "errorCode", "detail", "errorDetails"}
    assert "hunter2" not in answer.text
    assert PASSWORD not in answer.text


def test_bare_token_required(default_sim: SimulatorProcess) -> None:
    token, endpoint = token_for(default_sim.responsys_url)
    for header in (f"Bearer {token}", "not-a-token", ""):
        answer = trigger(endpoint, header, SAMPLE_BODY)
        assert answer.status_code == 401
        assert answer.json()["errorCode"] == "INVALID_TOKEN"
    assert trigger(endpoint, token, SAMPLE_BODY).status_code == 200


def test_recipient_limit(default_sim: SimulatorProcess) -> None:
    token, endpoint = token_for(default_sim.responsys_url)
    ok = trigger(endpoint, token, body_for([profile_recipient(f"c{i}") for i in range(200)]))
    assert ok.status_code == 200
    assert len(ok.json()) == 200
    over = trigger(endpoint, token, body_for([profile_recipient(f"c{i}") for i in range(201)]))
    assert over.status_code == 400
    assert over.json() == {
        "type": "",
        "title": "Recipient limit exceeded",
        "errorCode": "RECIPIENT_LIMIT_EXCEEDED",
        "detail": "Recipient limit exceeded, maximum of 200 recipients are allowed per each api call",
        "errorDetails": [],
    }


def test_non_ascii_must_be_escaped(default_sim: SimulatorProcess) -> None:
    token, endpoint = token_for(default_sim.responsys_url)
    document = body_for([profile_recipient("c1")])
    document["recipientData"][0]["optionalData"] = [{"name": "CITY", "value": "Orl\u00e9ans"}]
    raw = json.dumps(document, ensure_ascii=False).encode()
    assert not raw.isascii()
    rejected = trigger(endpoint, token, raw)
    assert rejected.status_code == 400
    assert rejected.json()["errorCode"] == "INVALID_REQUEST_CONTENT"

    escaped = json.dumps(document, ensure_ascii=True).encode()
    assert b"\\u00e9" in escaped
    accepted = trigger(endpoint, token, escaped)
    assert accepted.status_code == 200
    assert accepted.json()[0]["success"] is True


def test_malformed_json_is_invalid_parameter(default_sim: SimulatorProcess) -> None:
    token, endpoint = token_for(default_sim.responsys_url)
    answer = trigger(endpoint, token, b'{"recipientData": [')
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "INVALID_PARAMETER"


def test_unknown_event(default_sim: SimulatorProcess) -> None:
    token, endpoint = token_for(default_sim.responsys_url)
    answer = trigger(endpoint, token, SAMPLE_BODY, event="No_Such_Event")
    assert answer.status_code == 404
    document = answer.json()
    assert document["errorCode"] == "REI_EVENT_NOT_FOUND"
    assert document["title"] == "Rei event not found"
    assert document["detail"].startswith("Unable to retrieve EventDefinition for eventName:No_Such_Event for account:")


def test_per_recipient_results_in_request_order(default_sim: SimulatorProcess) -> None:
    token, endpoint = token_for(default_sim.responsys_url)
    app_list = {"folderName": "F", "objectName": "My_App_Channel_List"}
    recipients: list[dict[str, Any]] = [
        profile_recipient("c-ok-1"),
        profile_recipient("UNKNOWN-1"),
        # first non-null, non-empty identifier wins: recipientId "" is skipped
        {
            "recipient": {
                "recipientId": "",
                "emailAddress": "a@example.com",
                "listName": app_list,
            }
        },
        {"recipient": {"customerId": None, "listName": app_list}},  # no identifier
        {"recipient": {"customerId": "c2"}},  # no list and no app channel
        {
            "recipient": {
                "listName": app_list,
                "mobileAppRecipient": {"deviceId": "d1", "apiKey": "k"},
                "webPushAppRecipient": {"visitorId": "v1", "apiKey": "k"},
            }
        },
        {"recipient": {"listName": app_list, "mobileAppRecipient": {"deviceId": "d2"}}},
        {
            "recipient": {
                "listName": app_list,
                "webPushAppRecipient": {"visitorId": None, "apiKey": "888"},
            }
        },
        {
            "recipient": {
                "customerId": "",
                "listName": app_list,
                "mobileAppRecipient": {
                    "deviceId": "00008020-008D4548007B4F26",
                    "apiKey": "k",
                },
            }
        },
        {
            "recipient": {
                "listName": app_list,
                "webPushAppRecipient": {"visitorId": "dc764f0a", "apiKey": "888"},
            }
        },
        profile_recipient("UNKNOWN-2"),
        profile_recipient("c-ok-2"),
    ]
    answer = trigger(endpoint, token, body_for(recipients), request_id="order-1")
    assert answer.status_code == 200
    results = answer.json()
    one_channel = "Request should contain data for only one channel."

    def ok(key: str) -> dict[str, Any]:
        return {
            "errorMessage": None,
            "success": True,
            "recipientId": recipient_id_for(key),
        }

    def bad(message: str) -> dict[str, Any]:
        return {"errorMessage": message, "success": False, "recipientId": -1}

    assert results == [
        ok("c-ok-1"),
        bad("NO_RECIPIENT_FOUND"),
        ok("a@example.com"),
        bad("NO_RECIPIENT_FOUND"),
        bad(one_channel),
        bad(one_channel),
        bad("deviceId and apiKey can not be null or empty for push recipient."),
        bad("visitorId and apiKey can not be null or empty for web push recipient."),
        ok("00008020-008D4548007B4F26"),
        ok("dc764f0a"),
        bad("NO_RECIPIENT_FOUND"),
        ok("c-ok-2"),
    ]


def test_ratelimit_lists_limits(default_sim: SimulatorProcess) -> None:
    token, endpoint = token_for(default_sim.responsys_url)
    answer = httpx.get(endpoint + "/rest/api/ratelimit", headers={"Authorization": token})
    assert answer.status_code == 200
    limits = {entry["api"]: entry for entry in answer.json()}
    assert limits["login"]["limit"] == 10
    assert limits["triggerCustomEvent"]["verb"] == "POST"
    assert {"limit", "api", "resource_path", "verb", "description"} <= set(limits["triggerCustomEvent"])


def test_stats_count_logins_not_requests() -> None:
    with SimulatorProcess() as sim:
        token, endpoint = token_for(sim.responsys_url)
        with httpx.Client() as client:
            for _ in range(5):
                answer = client.post(
                    endpoint + "/rest/api/v1.3/events/rei/Purchase_Event",
                    json=SAMPLE_BODY,
                    headers={"Authorization": token},
                )
                assert answer.status_code == 200
            refreshed = client.post(
                sim.responsys_url + AUTH_PATH,
                data={"auth_type": "token"},
                headers={"Authorization": token},
            )
            assert refreshed.status_code == 200
            stats = client.get(sim.responsys_url + "/_sim/stats").json()
    assert stats["logins"] == 1
    assert stats["refreshes"] == 1
    assert stats["requests"] == 5
    assert stats["accepted"] == 5
    assert stats["recipients_accepted"] == 5
    assert stats["throttled"] == 0
    assert stats["faults"] == {"5xx": 0, "timeout": 0, "reset": 0, "throttle": 0}
