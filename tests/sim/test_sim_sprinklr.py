"""The Sprinklr simulator: documented requests, OAuth with single-use refresh tokens, the
gateway's throttle pages, its validation rules and its log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sim.config import SimConfig, apply_vendor_options
from sim.testing import SimulatorProcess

KEY = "sprinklr-demo-key"
ACCESS = "sprinklr-demo-access"
CLIENT = {
    "client_id": "sprinklr-demo-client",
    "client_secret": "sprinklr-demo-secret",
    "redirect_uri": "https://localhost/callback",
    "grant_type": "refresh_token",
}
TRIGGER_SAMPLE = {
    "snType": "EMAIL",
    "snId": "acme@sprinklr.com",
    "journeyId": "welcome-journey",
    "contextParams": {"key1": "string", "key2": "string"},
}
NEW_PROFILE_SAMPLE: dict[str, Any] = {
    "journeyId": "welcome-journey",
    "contextParams": {"key1": "string", "key2": "string"},
    "unifiedProfile": {
        "id": "id8",
        "contact": {"firstName": "Parth"},
        "profiles": [{"channelType": "EMAIL", "channelId": "acme@sprinklr.com", "name": "John Snow"}],
        "createdTime": 1599816142000,
    },
}


def options(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--vendor-option", pair)]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    # No rate limits here (their own tests below); the log is read after each test's requests.
    extra = options("sprinklr.requests_per_second=null", "sprinklr.requests_per_hour=null")
    with SimulatorProcess(extra_args=extra) as process:
        yield process


def post(
    sim: SimulatorProcess, endpoint: str, body: Any, token: str = ACCESS, key: str = KEY, path: str = "/api"
) -> httpx.Response:
    return httpx.post(
        f"{sim.base_url}/sprinklr{path}/marketing-journey/{endpoint}",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Key": key},
    )


def refresh(sim: SimulatorProcess, token: str, **form: str) -> httpx.Response:
    return httpx.post(f"{sim.base_url}/sprinklr/oauth/token", data={**CLIENT, "refresh_token": token, **form})


def logged(sim: SimulatorProcess) -> list[dict[str, Any]]:
    log = sim.read_log()
    return log.filter(log["vendor"] == "sprinklr").to_dicts()


def test_the_documented_trigger_is_204_and_logged_by_sn_id(sim: SimulatorProcess) -> None:
    answer = post(sim, "trigger", TRIGGER_SAMPLE)
    assert answer.status_code == 204
    assert answer.content == b""
    entries = [e for e in logged(sim) if e["recipients"] == [{"key": "acme@sprinklr.com", "status": "accepted"}]]
    assert entries
    assert entries[-1]["processed"] is True


def test_the_documented_new_profile_trigger_answers_a_tracking_id(sim: SimulatorProcess) -> None:
    for path, endpoint in (
        ("/api", "triggerWithNewProfile"),
        ("/api/v2", "triggerJourney"),
        ("/prod2/api/v2", "trigger"),
    ):
        body = NEW_PROFILE_SAMPLE if endpoint != "trigger" else TRIGGER_SAMPLE
        answer = post(sim, endpoint, body, path=path)
        assert answer.status_code in (200, 204), (path, endpoint, answer.text)
    answer = post(sim, "triggerWithNewProfile", NEW_PROFILE_SAMPLE)
    document = answer.json()
    assert answer.status_code == 200
    assert document["errors"] == []
    assert document["data"]["status"] == "SUCCESS"
    assert document["data"]["trackingId"].startswith("trk-")
    assert {"key": "id8", "status": "accepted"} in [r for e in logged(sim) for r in e["recipients"]]


@pytest.mark.parametrize(
    ("endpoint", "change", "code"),
    [
        ("trigger", {"snType": "CARRIER_PIGEON"}, "INVALID_SN_TYPE"),
        ("trigger", {"snId": "UNKNOWN-7"}, "PROFILE_NOT_FOUND"),
        ("trigger", {"snId": ""}, "INVALID_REQUEST"),
        ("trigger", {"journeyId": "no-such-journey"}, "JOURNEY_NOT_FOUND"),
        ("trigger", {"contextParams": {"n": 3}}, "INVALID_REQUEST"),
        ("triggerWithNewProfile", {"unifiedProfile": {"id": "p", "profiles": []}}, "INVALID_REQUEST"),
        (
            "triggerWithNewProfile",
            {"unifiedProfile": {"id": "p", "profiles": [{"channelType": "FAX", "channelId": "1"}]}},
            "INVALID_SN_TYPE",
        ),
    ],
)
def test_bad_requests_are_400_with_an_error_code(
    sim: SimulatorProcess, endpoint: str, change: dict[str, Any], code: str
) -> None:
    body = {**(TRIGGER_SAMPLE if endpoint == "trigger" else NEW_PROFILE_SAMPLE), **change}
    answer = post(sim, endpoint, body)
    assert answer.status_code == 400
    assert answer.json()["data"] is None
    assert answer.json()["errors"][0]["code"] == code


def test_an_opted_out_channel_is_a_failed_status(sim: SimulatorProcess) -> None:
    body = {
        **NEW_PROFILE_SAMPLE,
        "unifiedProfile": {"id": "p-opt", "profiles": [{"channelType": "SMS", "channelId": "optout-1"}]},
    }
    answer = post(sim, "triggerWithNewProfile", body)
    assert answer.status_code == 200
    assert answer.json()["data"]["status"] == "FAILED"
    assert answer.json()["errors"][0]["code"] == "CHANNEL_OPTED_OUT"


def test_the_key_and_the_token_are_checked(sim: SimulatorProcess) -> None:
    inactive = post(sim, "trigger", TRIGGER_SAMPLE, key="wrong")
    assert inactive.status_code == 403
    assert inactive.headers["content-type"].startswith("text/html")
    assert "Developer Inactive" in inactive.text
    unauthorized = post(sim, "trigger", TRIGGER_SAMPLE, token="not-a-token")
    assert unauthorized.status_code == 401
    assert unauthorized.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert post(sim, "no-such-endpoint", TRIGGER_SAMPLE).status_code == 404


def test_refresh_tokens_work_once_and_the_new_access_token_works(sim: SimulatorProcess) -> None:
    first = refresh(sim, "sprinklr-demo-refresh")
    assert first.status_code == 200
    tokens = first.json()
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
    reused = refresh(sim, "sprinklr-demo-refresh")
    assert reused.status_code == 401
    assert reused.json()["error"] == "invalid_grant"
    assert post(sim, "trigger", {**TRIGGER_SAMPLE, "snId": "r@x.io"}, token=tokens["access_token"]).status_code == 204
    second = refresh(sim, tokens["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != tokens["refresh_token"]
    assert refresh(sim, second.json()["refresh_token"], client_secret="wrong").json()["error"] == "invalid_client"
    assert refresh(sim, second.json()["refresh_token"], grant_type="password").status_code == 400
    stats = httpx.get(f"{sim.base_url}/sprinklr/_sim/stats").json()
    assert stats["refreshes"] == 2
    assert stats["refresh_reused"] == 1


def test_access_tokens_expire() -> None:
    with SimulatorProcess(extra_args=options("sprinklr.token_ttl_seconds=0.4")) as sim:
        assert post(sim, "trigger", TRIGGER_SAMPLE).status_code == 204
        time.sleep(0.5)
        assert post(sim, "trigger", TRIGGER_SAMPLE).status_code == 401
        fresh = refresh(sim, "sprinklr-demo-refresh").json()
        assert fresh["expires_in"] == 0.4
        assert post(sim, "trigger", TRIGGER_SAMPLE, token=fresh["access_token"]).status_code == 204


def test_over_the_rate_the_gateway_answers_an_html_page_and_sometimes_429() -> None:
    extra = options("sprinklr.burst=3", "sprinklr.requests_per_second=0.01")
    with SimulatorProcess(extra_args=extra) as sim, httpx.Client() as client:
        answers = [
            client.post(
                f"{sim.base_url}/sprinklr/api/marketing-journey/trigger",
                json={**TRIGGER_SAMPLE, "snId": f"u{i}@x.io"},
                headers={"Authorization": f"Bearer {ACCESS}", "Key": KEY},
            )
            for i in range(11)
        ]
    assert [a.status_code for a in answers] == [204] * 3 + [403, 403, 403, 429, 403, 403, 403, 429]
    page = answers[3]
    assert page.headers["content-type"].startswith("text/html")
    assert "Developer Over Rate" in page.text
    assert page.headers["X-Mashery-Error-Code"] == "ERR_403_DEVELOPER_OVER_RATE"


def test_the_hourly_quota_is_enforced_too() -> None:
    extra = options("sprinklr.requests_per_second=1000", "sprinklr.burst=1000", "sprinklr.requests_per_hour=5")
    with SimulatorProcess(extra_args=extra) as sim, httpx.Client() as client:
        codes = [
            client.post(
                f"{sim.base_url}/sprinklr/api/marketing-journey/trigger",
                json=TRIGGER_SAMPLE,
                headers={"Authorization": f"Bearer {ACCESS}", "Key": KEY},
            ).status_code
            for _ in range(7)
        ]
    assert codes == [204] * 5 + [403, 403]


def test_vendor_options_set_fields_and_check_them() -> None:
    config = apply_vendor_options(
        SimConfig(), ["sprinklr.token_ttl_seconds=2", 'sprinklr.refresh_tokens=["a","b"]', "intilery.burst=7"]
    )
    assert config.sprinklr.token_ttl_seconds == 2
    assert config.sprinklr.refresh_tokens == frozenset({"a", "b"})
    assert config.intilery.burst == 7
    with pytest.raises(ValueError, match="has no field"):
        apply_vendor_options(SimConfig(), ["sprinklr.nope=1"])
    with pytest.raises(ValueError, match="token_ttl_seconds must be > 0"):
        apply_vendor_options(SimConfig(), ["sprinklr.token_ttl_seconds=0"])
    with pytest.raises(ValueError, match="no vendor config"):
        apply_vendor_options(SimConfig(), ["faults.timeout=1"])
