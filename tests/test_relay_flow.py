"""Relay end to end: the campaign flow against the simulator, bulk and single, with faults.

Checked against the simulator's own log: no customer reached Relay twice, every valid
customer not reported `in_doubt` accepted exactly once, and the invariant holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from flows.campaign import campaign_flow
from sim.log import withheld_requests
from sim.testing import SimulatorProcess
from tests.journey_support import RELAY_API_KEY, relay_audience, relay_spec
from tests.support import assert_sent_once_each, processed_entries, write_spec
from volley.outcomes import check_invariant

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "relay_api_key")]


@pytest.fixture
def relay_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_API_KEY", RELAY_API_KEY)


def with_bad_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """No ccid, a duplicate, a 101-character ccid, a customer Relay does not send to, one it errs on."""
    bad = pl.DataFrame(
        {
            "ccid": [None, frame["ccid"][3], "C" * 101, "NOSEND-1", "ERROR-1"],
            "first_name": ["a", "b", "c", "d", "e"],
            "order_id": ["1", "2", "3", "4", "5"],
        }
    )
    return pl.concat([frame.head(50), bad, frame.slice(50)])


async def run(spec_path: Path, base_url: str, results: Path, run_key: str = "k1") -> dict[str, Any]:
    summary = await campaign_flow(
        spec_path=str(spec_path), run_key=run_key, base_url=base_url, results_dir=str(results)
    )
    assert isinstance(summary, dict), summary
    return summary


FAULTS = {"5xx": 0.08, "timeout": 0.04, "reset": 0.04, "throttle": 0.05}


@pytest.mark.parametrize(("mode", "rows", "batch_size"), [("bulk", 3_000, 20), ("single", 120, None)])
async def test_a_fault_storm_with_throttling_sends_nobody_twice(
    tmp_path: Path, mode: str, rows: int, batch_size: int | None
) -> None:
    source = tmp_path / "audience.parquet"
    with_bad_rows(relay_audience(rows)).write_parquet(source)
    # Paced a little under the simulator's limit: its bucket still throttles bursts now and then.
    limits = {"timeout_seconds": 1.0, "concurrency": 6, "requests_per_second": 50, "burst": 3}
    spec = relay_spec(source, batch_size=batch_size, limits=limits)
    spec["vendor_params"]["mode"] = mode
    with SimulatorProcess(latency_ms=2, rate_limit=60, burst=6, faults=FAULTS, seed=5, hold_seconds=2) as sim:
        base_url = f"{sim.base_url}/relay/platform/v3/api"
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), base_url, tmp_path / "r")
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{sim.base_url}/relay/_sim/stats")).json()

    outcomes = pl.read_parquet(summary["outcome_path"])
    check_invariant(outcomes, rows + 5)
    assert summary["complete"] is True
    counts = dict(outcomes.group_by("status").len().iter_rows())
    assert counts["invalid"] == 2
    assert counts["skipped"] == 1
    by_key = {r["recipient_key"]: r for r in outcomes.iter_rows(named=True)}
    assert by_key["NOSEND-1"]["status"] in {"rejected", "in_doubt"}
    assert by_key["ERROR-1"]["status"] in {"failed", "in_doubt"}
    failed = outcomes.filter(pl.col("status") == "failed")
    assert failed["recipient_key"].to_list() in ([], ["ERROR-1"]), failed.head()
    sets = assert_sent_once_each(outcomes, sim.log_path, "relay")
    assert sets["in_doubt"], "the storm withheld some answers"
    assert summary["throttled"] >= 1
    assert summary["retries"] >= 1
    assert stats["duplicates"] == 0, "nothing was sent twice, so Relay dropped nothing as a duplicate"
    accepted = outcomes.filter(pl.col("status") == "accepted")
    assert accepted["details"].null_count() == 0
    statuses = {n["status"] for d in accepted["details"].to_list() for n in json.loads(d)["notifications"]}
    assert {"ok", "no-consent"} <= statuses


async def test_the_sample_campaign_runs_as_documented(tmp_path: Path) -> None:
    spec = ROOT / "campaigns" / "relay_delivery_reminder.yaml"
    with SimulatorProcess() as sim:
        summary = await run(spec, f"{sim.base_url}/relay/platform/v3/api", tmp_path / "r")
    assert summary["counts"] == {
        "accepted": 145,
        "rejected": 1,  # NOSEND-...
        "invalid": 3,  # no ccid, a 101-character ccid, an input key clash
        "skipped": 1,
        "failed": 0,
        "in_doubt": 0,
    }
    outcomes = pl.read_parquet(summary["outcome_path"])
    clash = outcomes.filter(pl.col("error_code") == "input_order_id.key_clash")
    assert clash["row_index"].to_list() == [9]


async def test_a_re_run_settles_lost_answers_with_the_status_look_up_and_sends_only_what_never_arrived(
    tmp_path: Path,
) -> None:
    rows = 400
    source = tmp_path / "audience.parquet"
    relay_audience(rows).write_parquet(source)
    spec = write_spec(
        tmp_path / "spec.yaml", relay_spec(source, batch_size=10, limits={"timeout_seconds": 0.5, "concurrency": 4})
    )
    results = tmp_path / "r"
    everyone = set(relay_audience(rows)["ccid"])
    # Answers lost: a timeout (held past the client's timeout) or a reset, half of them after Relay applied them.
    with SimulatorProcess(faults={"timeout": 0.15, "reset": 0.15}, seed=7, hold_seconds=1) as sim:
        base_url = f"{sim.base_url}/relay/platform/v3/api"
        first = pl.read_parquet((await run(spec, base_url, results, "lost"))["outcome_path"])
        withheld = withheld_requests(sim.read_log())
        reached = set(withheld.filter(pl.col("processed"))["key"])
        never_arrived = set(withheld.filter(~pl.col("processed"))["key"])
        assert reached, "some answers were lost after Relay applied the request"
        assert never_arrived, "some requests were lost before Relay applied them"
        assert set(first.filter(pl.col("status") == "in_doubt")["recipient_key"]) == reached | never_arrived

        second = pl.read_parquet((await run(spec, base_url, results, "lost"))["outcome_path"])
        check_invariant(second, rows)
        by_key = {r["recipient_key"]: r for r in second.iter_rows(named=True)}
        assert {(by_key[k]["status"], by_key[k]["error_code"]) for k in reached} == {("skipped", "already_accepted")}
        resent = [by_key[k] for k in never_arrived]
        assert {r["status"] for r in resent} <= {"accepted", "in_doubt"}, "sent again, without --resend-in-doubt"
        assert not any(str(r["error_code"]).endswith("_before") for r in resent)
        assert any(r["status"] == "accepted" for r in resent)

        # Each later re-run settles what the one before lost (the look-up meets no faults) until none is left.
        latest, runs = second, 2
        while latest.filter(pl.col("status") == "in_doubt").height and runs < 8:
            latest = pl.read_parquet((await run(spec, base_url, results, "lost"))["outcome_path"])
            runs += 1
            in_doubt = latest.filter(pl.col("status") == "in_doubt")
            assert not in_doubt["error_code"].is_in(["in_doubt_before", "unanswered_before"]).any()
        assert latest.filter(pl.col("status") == "in_doubt").height == 0, f"still in doubt after {runs} runs"
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{sim.base_url}/relay/_sim/stats")).json()

    applied = processed_entries(sim.log_path, "relay")
    assert applied["key"].is_duplicated().sum() == 0, "no customer reached Relay twice"
    assert set(applied.filter(pl.col("status") == "accepted")["key"]) == everyone, "everyone triggered, once"
    assert stats["duplicates"] == 0
    assert stats["status_lookups"] >= len(reached | never_arrived)
