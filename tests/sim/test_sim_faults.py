"""Throttling and injected faults, in process (units) and over HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from sim.config import FaultRates, config_from_options
from sim.faults import Fault, FaultDraw, FaultInjector
from sim.log import accepted_recipients, read_log, withheld_requests
from sim.testing import SimulatorError, SimulatorProcess
from sim.throttle import TokenBucket
from tests.sim.simtest_support import (
    SAMPLE_BODY,
    ascii_json,
    body_for,
    profile_recipient,
    token_for,
    trigger,
)

TRIGGER = "/rest/api/v1.3/events/rei/Purchase_Event"


# ---------------------------------------------------------------- units


def test_fault_injector_is_reproducible() -> None:
    rates = FaultRates(error_5xx=0.1, timeout=0.1, reset=0.1, throttle=0.1)
    first = [FaultInjector(rates, seed=7).draw() for _ in range(1)]
    a = FaultInjector(rates, seed=7)
    b = FaultInjector(rates, seed=7)
    c = FaultInjector(rates, seed=8)
    seq_a = [a.draw() for _ in range(500)]
    seq_b = [b.draw() for _ in range(500)]
    seq_c = [c.draw() for _ in range(500)]
    assert seq_a == seq_b
    assert seq_a[:1] == first
    assert seq_a != seq_c
    kinds = {d.fault for d in seq_a}
    assert kinds == set(Fault)
    assert 100 < sum(d.fault is not Fault.NONE for d in seq_a) < 300
    assert all(not d.processed for d in seq_a if not d.fault.withholds)
    processed = [d.processed for d in seq_a if d.fault.withholds]
    assert any(processed)
    assert not all(processed)


def test_fault_injector_without_rates_never_faults() -> None:
    injector = FaultInjector(FaultRates(), seed=1)
    assert all(injector.draw() == FaultDraw(Fault.NONE, False) for _ in range(100))


def test_token_bucket_is_deterministic() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, clock=lambda: 0.0)
    assert [bucket.try_acquire(10.0) for _ in range(3)] == [True, True, False]
    assert bucket.try_acquire(10.4) is False  # 0.8 token
    assert bucket.try_acquire(10.5) is True  # 1.0 token
    assert bucket.try_acquire(100.0)
    assert bucket.try_acquire(100.0)
    assert not bucket.try_acquire(100.0)  # capacity caps the refill


def test_config_from_options() -> None:
    config = config_from_options(port=0, fault_rate=0.3, faults=["5xx=0.2", "throttle=0.05"], rate_limit=5.0)
    assert config.faults.error_5xx == 0.2
    assert config.faults.throttle == 0.05
    assert config.faults.timeout == pytest.approx(0.1) == config.faults.reset
    assert config.bucket_capacity == 5.0
    assert config_from_options(rate_limit=0.5).bucket_capacity == 1.0
    assert config_from_options(rate_limit=5, burst=2).bucket_capacity == 2.0
    assert config_from_options(token_ttl=3).responsys.token_ttl_seconds == 3
    with pytest.raises(ValueError, match="unknown fault kind"):
        config_from_options(faults=["bogus=0.1"])
    with pytest.raises(ValueError, match="add up to"):
        config_from_options(faults={"5xx": 0.7, "reset": 0.7})


# ---------------------------------------------------------------- over HTTP


def test_throttle_answers_api_limit_exceeded_401() -> None:
    with SimulatorProcess(rate_limit=0.5, burst=2) as sim:
        token, endpoint = token_for(sim.responsys_url)
        answers = [trigger(endpoint, token, SAMPLE_BODY) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 401]
        assert answers[2].json() == {
            "type": "",
            "title": "API limit exceeded",
            "errorCode": "API_LIMIT_EXCEEDED",
            "detail": "Request rate limit exceeded for the API: triggerCustomEvent per minute",
            "errorDetails": [],
        }
        stats = httpx.get(sim.responsys_url + "/_sim/stats").json()
        assert stats["throttled"] == 1
        assert stats["accepted"] == 2
    log = read_log(sim.log_path)
    assert log["result"].to_list() == ["accepted", "accepted", "throttled"]


def test_throttle_status_is_configurable_and_faults_reproduce() -> None:
    """Same seed, same fault sequence, and it matches FaultInjector's own draws."""
    rates = {"5xx": 0.3, "throttle": 0.3}
    sequences = []
    for _ in range(2):
        with SimulatorProcess(faults=rates, seed=42, throttle_status=400) as sim:
            token, endpoint = token_for(sim.responsys_url)
            with httpx.Client() as client:
                for i in range(30):
                    answer = client.post(
                        endpoint + TRIGGER,
                        content=ascii_json(SAMPLE_BODY),
                        headers={"Authorization": token, "X-Request-Id": f"q{i}"},
                    )
                    assert answer.status_code in (200, 400, 503)
                    if answer.status_code == 400:
                        assert answer.json()["errorCode"] == "API_LIMIT_EXCEEDED"
        sequences.append(read_log(sim.log_path)["fault"].to_list())
    expected_injector = FaultInjector(FaultRates(error_5xx=0.3, throttle=0.3), seed=42)
    expected = [expected_injector.draw().fault.value for _ in range(30)]
    assert sequences[0] == sequences[1] == expected
    assert {"5xx", "throttle", None} <= set(expected)


def test_timeout_fault_withholds_and_logs_processed_flag() -> None:
    seed = 3
    predicted = FaultInjector(FaultRates(timeout=1.0), seed)
    flags = [predicted.draw().processed for _ in range(2)]
    with SimulatorProcess(faults={"timeout": 1.0}, seed=seed, hold_seconds=1.0) as sim:
        token, endpoint = token_for(sim.responsys_url)
        for i in range(2):
            body = body_for([profile_recipient(f"t{i}-a"), profile_recipient(f"UNKNOWN-t{i}")])
            with pytest.raises(httpx.ReadTimeout):
                trigger(endpoint, token, body, request_id=f"slow-{i}", timeout=0.3)
        stats = httpx.get(sim.responsys_url + "/_sim/stats").json()
        assert stats["faults"]["timeout"] == 2
        assert stats["withheld"] == 2
    assert "Traceback" not in sim.stderr_text()
    withheld = withheld_requests(sim.log_path)
    assert withheld.to_dicts() == [
        {
            "vendor": "responsys",
            "request_id": f"slow-{i}",
            "key": key,
            "processed": flags[i],
        }
        for i in range(2)
        for key in (f"t{i}-a", f"UNKNOWN-t{i}")
    ]
    triggered = accepted_recipients(sim.log_path)["key"].to_list()
    assert triggered == [f"t{i}-a" for i in range(2) if flags[i]]


def test_reset_fault_closes_the_connection() -> None:
    with SimulatorProcess(faults={"reset": 1.0}, seed=5) as sim:
        token, endpoint = token_for(sim.responsys_url)
        # plain httpx: a network/protocol error, never a response
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            trigger(endpoint, token, SAMPLE_BODY, request_id="rst-sync")

        # httpx + httpx_aiohttp maps aiohttp's ClientConnectionError (reset by peer,
        # server disconnected) to httpx.ConnectTimeout although the request was sent.
        async def via_aiohttp() -> BaseException:
            async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
                try:
                    await client.post(
                        endpoint + TRIGGER,
                        content=ascii_json(SAMPLE_BODY),
                        headers={"Authorization": token, "X-Request-Id": "rst-async"},
                    )
                except httpx.TransportError as exc:
                    return exc
            raise AssertionError("the reset request got an answer")

        error = asyncio.run(via_aiohttp())
        assert isinstance(error, httpx.ConnectTimeout)
        stats = httpx.get(sim.responsys_url + "/_sim/stats").json()
        assert stats["faults"]["reset"] == 2
    assert "Traceback" not in sim.stderr_text()
    log = read_log(sim.log_path)
    assert log["result"].to_list() == ["withheld", "withheld"]
    assert log["fault"].to_list() == ["reset", "reset"]
    assert log["request_id"].to_list() == ["rst-sync", "rst-async"]


def test_bad_options_fail_fast_with_stderr() -> None:
    with pytest.raises(SimulatorError, match="unknown fault kind 'bogus'"):
        SimulatorProcess(faults=["bogus=1"]).start()
