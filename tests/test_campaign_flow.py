"""The campaign flow end to end against the simulator, with faults injected.

Checked against the simulator's own log: no recipient triggered twice, every valid
recipient not reported `in_doubt` triggered exactly once, and the invariant holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import polars as pl
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

from flows.campaign import campaign_flow
from sim.log import accepted_recipients, withheld_requests
from sim.testing import SimulatorProcess
from tests.support import audience, responsys_spec, write_spec
from volley.outcomes import Status, check_invariant

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "responsys_credentials")]


def with_bad_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """A null key, a duplicate, an unknown recipient: what every real extract has."""
    bad = pl.DataFrame(
        {
            "customer_id": [None, frame["customer_id"][3], "UNKNOWN-1"],
            "product_sku": ["x", "y", "z"],
            "product_name": ["a", "b", "c"],
        }
    )
    return pl.concat([frame.head(50), bad, frame.slice(50)])


@pytest.fixture(scope="module")
def stormy_sim() -> Iterator[SimulatorProcess]:
    faults = {"5xx": 0.08, "timeout": 0.03, "reset": 0.03, "throttle": 0.05}
    with SimulatorProcess(latency_ms=2, faults=faults, seed=11, hold_seconds=3, token_ttl=1.5) as sim:
        yield sim


async def run(spec_path: Path, sim: SimulatorProcess, results: Path, run_key: str = "k1") -> dict[str, Any]:
    summary = await campaign_flow(
        spec_path=str(spec_path), run_key=run_key, base_url=sim.responsys_url, results_dir=str(results)
    )
    assert isinstance(summary, dict), summary
    return summary


async def test_a_fault_storm_ends_with_every_row_final_and_nothing_sent_twice(
    tmp_path: Path, stormy_sim: SimulatorProcess
) -> None:
    source = tmp_path / "audience.parquet"
    with_bad_rows(audience(8_000)).write_parquet(source)
    spec = responsys_spec(source, limits={"timeout_seconds": 1.0, "concurrency": 6})
    spec["connection"]["token_ttl_seconds"] = 3600  # the sim expires tokens after 1.5 s: 401s mid-run
    summary = await run(write_spec(tmp_path / "spec.yaml", spec), stormy_sim, tmp_path / "results")

    outcomes = pl.read_parquet(summary["outcome_path"])
    check_invariant(outcomes, 8_003)
    assert summary["complete"] is True
    assert set(outcomes["status"].unique()) <= {s.value for s in Status}
    counts = dict(outcomes.group_by("status").len().iter_rows())
    assert counts["invalid"] == 1
    assert counts["skipped"] == 1
    assert counts["rejected"] >= 1
    assert counts.get("failed", 0) == 0, outcomes.filter(pl.col("status") == "failed").head()

    log = stormy_sim.read_log()
    triggered = accepted_recipients(log)
    assert triggered["key"].is_duplicated().sum() == 0, "a recipient was triggered twice"

    in_doubt = set(outcomes.filter(pl.col("status") == "in_doubt")["recipient_key"])
    withheld = withheld_requests(log)
    assert in_doubt <= set(withheld["key"]), "in_doubt only where the simulator withheld the answer"
    assert in_doubt, "the storm withheld some answers"
    accepted = set(outcomes.filter(pl.col("status") == "accepted")["recipient_key"])
    triggered_keys = set(triggered["key"])
    assert accepted <= triggered_keys
    assert triggered_keys - accepted <= in_doubt, "triggered but not reported accepted: must be in doubt"
    valid_keys = set(outcomes.filter(pl.col("status").is_in(["accepted", "rejected", "in_doubt"]))["recipient_key"])
    assert valid_keys - in_doubt - set(outcomes.filter(pl.col("status") == "rejected")["recipient_key"]) == accepted

    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{stormy_sim.responsys_url}/_sim/stats")).json()
    assert summary["throttled"] >= 1
    assert summary["retries"] >= 1
    assert stats["logins"] < 20, "logins only when the token expires, never per request"
    assert (tmp_path / "results" / "test-campaign" / "k1").exists()
    written = json.loads((Path(summary["outcome_path"]).parent / "summary.json").read_text())
    assert written["counts"] == summary["counts"]


async def test_a_rerun_with_the_same_run_key_sends_only_what_was_not_accepted(tmp_path: Path) -> None:
    source = tmp_path / "audience.csv"
    with_bad_rows(audience(900)).write_csv(source)
    spec_path = write_spec(tmp_path / "spec.yaml", responsys_spec(source))
    with SimulatorProcess() as sim:
        first = await run(spec_path, sim, tmp_path / "results", run_key="day-1")
        second = await run(spec_path, sim, tmp_path / "results", run_key="day-1")
        other_day = await run(spec_path, sim, tmp_path / "results", run_key="day-2")
        log = sim.read_log()
    assert first["counts"]["accepted"] == 900
    assert second["counts"]["accepted"] == 0
    assert second["counts"]["skipped"] == 902  # accepted before, the duplicate, the one rejected before
    assert other_day["counts"]["accepted"] == 900
    assert accepted_recipients(log)["key"].value_counts()["count"].max() == 2  # once per run key


async def test_shards_span_slices_one_prefect_task_each(tmp_path: Path) -> None:
    source = tmp_path / "audience.parquet"
    audience(5_000).write_parquet(source)
    spec = responsys_spec(source, batch_size=100, shard_batches=15)
    spec["source"]["slice_rows"] = 1_000
    with SimulatorProcess() as sim:
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), sim, tmp_path / "results")
        log = sim.read_log()
    assert summary["counts"]["accepted"] == 5_000
    assert accepted_recipients(log)["key"].is_duplicated().sum() == 0
    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(summary["flow_run_id"])])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,  # this server refuses the client's default of None
            limit=100,
        )
    shards = sorted(t.name for t in task_runs if t.name.startswith("send-"))
    # 50 batches in shards of 15, across slices of 1,000 rows (10 batches) and the quick-start pieces
    assert shards == ["send-shard-00000", "send-shard-00001", "send-shard-00002", "send-shard-00003"]


async def test_an_unknown_event_stops_the_run_with_every_row_failed(tmp_path: Path) -> None:
    source = tmp_path / "audience.csv"
    audience(2_000).write_csv(source)
    spec = responsys_spec(source)
    spec["vendor_params"]["event"] = "No_Such_Event"
    with SimulatorProcess() as sim:
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), sim, tmp_path / "results")
    outcomes = pl.read_parquet(summary["outcome_path"])
    assert outcomes["status"].unique().to_list() == ["failed"]
    assert outcomes["error_code"].unique().to_list() == ["REI_EVENT_NOT_FOUND"]
    assert summary["requests"] <= 4, "stops after the first answers, does not send every batch"
    assert "REI_EVENT_NOT_FOUND" in summary["aborted"]


async def test_bad_input_fails_the_flow_with_one_line_and_sends_nothing(tmp_path: Path) -> None:
    source = tmp_path / "audience.csv"
    source.write_bytes(b"id,name\n1,a\n")
    spec_path = write_spec(tmp_path / "spec.yaml", responsys_spec(source))
    state = await campaign_flow(spec_path=str(spec_path), run_key="k", return_state=True)
    assert state.is_failed()
    assert state.name == "InvalidInput"
    assert state.message == f"{source}: key column 'customer_id' not found (columns: id, name)"
