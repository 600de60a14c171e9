"""Intilery end to end: the campaign flow against the simulator, batch and single, with
faults, throttling and requests the simulator finds too large (413: split in two).

Checked against the simulator's own log: no customer's event applied twice, every valid
customer not reported `in_doubt` accepted exactly once, and the invariant holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from flows.campaign import campaign_flow
from sim.log import read_log, withheld_requests
from sim.testing import SimulatorProcess
from tests.marketing_support import INTILERY_ENV, intilery_audience, intilery_spec, set_env
from tests.support import assert_sent_once_each, write_spec
from volley.outcomes import check_invariant

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "credentials")]

FAULTS = {"5xx": 0.06, "timeout": 0.03, "reset": 0.03, "throttle": 0.04}


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, INTILERY_ENV)


def options(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--vendor-option", pair)]


def with_commands_and_bad_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Commands per row (mostly send_sms, some start_journey); then no key, a duplicate, a send
    without an asset, an unknown command, a 33 KB event and a customer never identified."""
    n = frame.height
    frame = frame.with_columns(
        pl.when(pl.int_range(n) % 5 == 0).then(pl.lit("Start_Journey")).otherwise(pl.lit("SEND_SMS")).alias("command"),
        pl.lit("202007-B-AbandonedBooking").alias("asset"),
        pl.lit("6046429d73096e3b2dca973d").alias("journey"),
        pl.lit("").alias("note"),
    )
    bad = pl.DataFrame(
        {
            "customer_id": [None, frame["customer_id"][3], "no-asset", "bad-command", "huge", "UNKNOWN-1"],
            "command": ["send_sms", "send_sms", "send_email", "send_fax", "send_sms", "send_sms"],
            "asset": ["A", "A", None, "A", "A", "A"],
            "note": ["", "", "", "", "x" * 33_000, ""],
        }
    )
    bad = bad.with_columns(
        pl.lit("1").alias("booking_id"),
        pl.lit("Oslo").alias("destination"),
        pl.lit(1, dtype=pl.Int64).alias("nights"),
        pl.lit("2025-03-01T10:00:00Z").alias("abandoned_at"),
        pl.lit(None, dtype=pl.String).alias("journey"),
    ).select(frame.columns)
    return pl.concat([frame.head(40), bad, frame.slice(40)])


PARAMS = {
    "event": None,
    "event_column": "command",
    "asset_id": None,
    "asset_id_column": "asset",
    "journey_id_to_trigger_column": "journey",
    "merge_data": [{"name": "bookingId", "column": "booking_id"}, "destination", "nights", "note"],
}


async def run(spec_path: Path, base_url: str, results: Path, run_key: str = "k1") -> dict[str, Any]:
    summary = await campaign_flow(
        spec_path=str(spec_path), run_key=run_key, base_url=base_url, results_dir=str(results)
    )
    assert isinstance(summary, dict), summary
    return summary


@pytest.mark.parametrize(("mode", "rows", "batch_size"), [("batch", 3_000, 40), ("single", 200, None)])
async def test_a_fault_storm_with_throttling_and_splits_sends_nobody_twice(
    tmp_path: Path, mode: str, rows: int, batch_size: int | None
) -> None:
    source = tmp_path / "audience.parquet"
    with_commands_and_bad_rows(intilery_audience(rows)).write_parquet(source)
    limits = {"timeout_seconds": 1.0, "concurrency": 6, "requests_per_second": 100, "burst": 3}
    spec = intilery_spec(source, vendor_params={**PARAMS, "mode": mode}, limits=limits, batch_size=batch_size)
    # Requests over 6 KB are refused whole (413): a batch of 40 events is split before it goes in.
    sim_options = options("intilery.requests_per_second=120", "intilery.burst=4", "intilery.max_request_bytes=6000")
    with SimulatorProcess(latency_ms=2, faults=FAULTS, seed=3, hold_seconds=2, extra_args=sim_options) as sim:
        base_url = f"{sim.base_url}/intilery"
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), base_url, tmp_path / "r")
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{base_url}/_sim/stats")).json()

    outcomes = pl.read_parquet(summary["outcome_path"])
    check_invariant(outcomes, rows + 6)
    assert summary["complete"] is True
    counts = dict(outcomes.group_by("status").len().iter_rows())
    assert counts["invalid"] == 4  # with the row without a key
    assert counts["skipped"] == 1
    assert counts.get("failed", 0) == 0, outcomes.filter(pl.col("status") == "failed").head()
    by_key = {r["recipient_key"]: r for r in outcomes.iter_rows(named=True)}
    assert by_key["no-asset"]["error_code"] == "assetId_required_for_send"
    assert by_key["bad-command"]["error_code"] == "event.isin"
    assert by_key["huge"]["error_code"] == "payload.too_large"
    assert by_key["UNKNOWN-1"]["status"] in {"rejected", "in_doubt"}
    if by_key["UNKNOWN-1"]["status"] == "rejected":
        assert by_key["UNKNOWN-1"]["error_message"] == "customer 'UNKNOWN-1' has not been identified"
    accepted = outcomes.filter(pl.col("status") == "accepted")
    assert accepted["vendor_ref"].str.starts_with("evt-").all(), "eventId kept as vendor_ref"

    keys = assert_sent_once_each(outcomes, sim.log_path, "intilery")
    withheld = withheld_requests(read_log(sim.log_path)).filter(pl.col("vendor") == "intilery")
    assert keys["in_doubt"] <= set(withheld["key"]), "in_doubt only where the simulator withheld the answer"
    assert keys["in_doubt"], "the storm withheld some answers"
    assert summary["throttled"] >= 1
    assert stats["throttled"] >= 1
    if mode == "batch":
        assert stats["too_large"] >= 1, "batches were refused whole and split"
        assert summary["requests"] < rows / 5, "events travel in batches"
    else:
        assert summary["requests"] >= rows


async def test_a_bad_auth_token_stops_the_run_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTILERY_AUTH_TOKEN", "wrong-token-value")
    source = tmp_path / "a.csv"
    intilery_audience(2_000).write_csv(source)
    spec = intilery_spec(source, batch_size=20)
    with SimulatorProcess() as sim:
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), f"{sim.base_url}/intilery", tmp_path / "r")
    outcomes = pl.read_parquet(summary["outcome_path"])
    assert outcomes["status"].unique().to_list() == ["failed"]
    assert outcomes["error_code"].unique().to_list() == ["AUTH_REFUSED"]
    assert summary["requests"] <= 8, "stops after the first answers"
    assert "wrong-token-value" not in outcomes.write_ndjson()
