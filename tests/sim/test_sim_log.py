"""The simulator log writer and its polars readers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl

from sim.log import SimLog, accepted_recipients, read_log, withheld_requests
from sim.testing import SimulatorProcess
from tests.sim.simtest_support import SAMPLE_BODY, body_for, profile_recipient, token_for, trigger


def write_sample(path: Path) -> None:
    async def go() -> None:
        log = SimLog(path, clock=lambda: 1.5)
        await log.start()
        log.record(
            vendor="responsys",
            request_id="r1",
            result="accepted",
            processed=True,
            recipients=[
                {"key": "a", "status": "accepted"},
                {"key": "b", "status": "rejected"},
            ],
        )
        log.record(vendor="responsys", request_id="r2", result="throttled", fault="throttle")
        log.record(
            vendor="responsys",
            request_id="r3",
            result="withheld",
            fault="timeout",
            processed=True,
            recipients=[{"key": "c", "status": "accepted"}],
        )
        log.record(
            vendor="responsys",
            request_id="r4",
            result="withheld",
            fault="reset",
            processed=False,
            recipients=[
                {"key": "d", "status": "accepted"},
                {"key": "e", "status": "rejected"},
            ],
        )
        log.record(vendor="medchat", request_id="r5", result="error", fault="5xx")
        await log.close()

    asyncio.run(go())


def test_log_lines_and_readers(tmp_path: Path) -> None:
    path = tmp_path / "sim.ndjson"
    write_sample(path)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5
    assert lines[1] == (
        b'{"ts":1.5,"vendor":"responsys","request_id":"r2","result":"throttled",'
        b'"fault":"throttle","processed":false,"recipients":[]}'
    )

    log = read_log(path)
    assert log.height == 5
    assert log.columns == [
        "ts",
        "vendor",
        "request_id",
        "result",
        "fault",
        "processed",
        "recipients",
    ]
    assert log["result"].to_list() == [
        "accepted",
        "throttled",
        "withheld",
        "withheld",
        "error",
    ]

    assert accepted_recipients(path).to_dicts() == [
        {"vendor": "responsys", "key": "a", "request_id": "r1"},
        {"vendor": "responsys", "key": "c", "request_id": "r3"},
    ]
    assert withheld_requests(log).to_dicts() == [
        {"vendor": "responsys", "request_id": "r3", "key": "c", "processed": True},
        {"vendor": "responsys", "request_id": "r4", "key": "d", "processed": False},
        {"vendor": "responsys", "request_id": "r4", "key": "e", "processed": False},
    ]


def test_empty_or_missing_log(tmp_path: Path) -> None:
    missing = tmp_path / "none.ndjson"
    assert read_log(missing).height == 0
    empty = accepted_recipients(missing)
    assert empty.columns == ["vendor", "key", "request_id"]
    assert empty.schema["key"] == pl.String()
    assert withheld_requests(missing).columns == [
        "vendor",
        "request_id",
        "key",
        "processed",
    ]


def test_log_is_flushed_periodically(tmp_path: Path) -> None:
    path = tmp_path / "live.ndjson"

    async def go() -> int:
        log = SimLog(path, flush_interval=0.05)
        await log.start()
        log.record(vendor="responsys", request_id="x", result="rejected")
        await asyncio.sleep(0.2)
        size = len(path.read_bytes().splitlines())
        await log.close()
        return size

    assert asyncio.run(go()) == 1


def test_simulator_log_from_a_run(tmp_path: Path) -> None:
    path = tmp_path / "run.ndjson"
    with SimulatorProcess(log_path=path) as sim:
        token, endpoint = token_for(sim.responsys_url)
        trigger(endpoint, token, SAMPLE_BODY, request_id="one")
        body = body_for([profile_recipient("k1"), profile_recipient("UNKNOWN-k2")])
        trigger(endpoint, token, body, request_id="two")
        trigger(endpoint, "Bearer " + token, SAMPLE_BODY, request_id="three")
    assert sim.log_path == path
    log = read_log(path)
    assert log.select("request_id", "result", "processed").to_dicts() == [
        {"request_id": "one", "result": "accepted", "processed": True},
        {"request_id": "two", "result": "accepted", "processed": True},
        {"request_id": "three", "result": "rejected", "processed": False},
    ]
    assert log["recipients"].to_list()[1] == [
        {"key": "k1", "status": "accepted"},
        {"key": "UNKNOWN-k2", "status": "rejected"},
    ]
    assert accepted_recipients(path)["key"].to_list() == ["8", "k1"]


def test_a_running_simulator_writes_its_log_when_asked() -> None:
    with SimulatorProcess(extra_args=["--log-flush-seconds", "3600"]) as sim:
        token, endpoint = token_for(sim.responsys_url)
        trigger(endpoint, token, SAMPLE_BODY, request_id="now")
        assert sim.read_log()["request_id"].to_list() == ["now"]
