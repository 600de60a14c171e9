"""Token lifetime, refresh and the login throttle."""

from __future__ import annotations

import time

import httpx

from sim.testing import SimulatorProcess
from tests.sim.simtest_support import AUTH_PATH, SAMPLE_BODY, login, token_for, trigger


def refresh(base: str, token: str) -> httpx.Response:
    return httpx.post(base + AUTH_PATH, data={"auth_type": "token"}, headers={"Authorization": token})


def test_token_expiry_and_refresh() -> None:
    with SimulatorProcess(token_ttl=1.0) as sim:
        base = sim.responsys_url
        first, endpoint = token_for(base)
        started = time.monotonic()
        assert trigger(endpoint, first, SAMPLE_BODY).status_code == 200

        time.sleep(0.5)
        renewed = refresh(base, first)
        assert renewed.status_code == 200
        second = renewed.json()["authToken"]
        assert second != first
        assert renewed.json()["endPoint"] == endpoint
        if time.monotonic() - started < 0.9:  # the old token stays valid until its expiry
            assert trigger(endpoint, first, SAMPLE_BODY).status_code == 200

        time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
        expired = trigger(endpoint, first, SAMPLE_BODY)
        assert expired.status_code == 401
        assert expired.json()["errorCode"] == "TOKEN_EXPIRED"
        assert refresh(base, first).json()["errorCode"] == "TOKEN_EXPIRED"
        assert trigger(endpoint, second, SAMPLE_BODY).status_code == 200

        stats = httpx.get(base + "/_sim/stats").json()
        assert (stats["logins"], stats["refreshes"]) == (1, 1)


def test_refresh_needs_a_valid_token(default_sim: SimulatorProcess) -> None:
    answer = refresh(default_sim.responsys_url, "Bearer nothing")
    assert answer.status_code == 401
    assert answer.json()["errorCode"] == "INVALID_TOKEN"


def test_login_is_throttled_per_minute() -> None:
    with SimulatorProcess(login_per_minute=3) as sim:
        codes = [login(sim.responsys_url) for _ in range(4)]
        assert [c.status_code for c in codes] == [200, 200, 200, 401]
        assert codes[3].json()["errorCode"] == "API_LIMIT_EXCEEDED"
        assert httpx.get(sim.responsys_url + "/_sim/stats").json()["login_throttled"] == 1
