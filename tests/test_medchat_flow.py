"""MedChat end to end: the campaign flow and the cancel flow against the simulator.

Checked against the simulator's own log: no recipient reached MedChat twice, every valid
recipient not reported `in_doubt` accepted exactly once, and the invariant holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from flows.campaign import campaign_flow
from flows.cancel import cancel_flow, default_cancel_run_key
from sim.config import DEMO_CHATBOT_ID
from sim.medchat import instance_id_for
from sim.testing import SimulatorProcess
from tests.journey_support import MEDCHAT_TOKEN, medchat_audience, medchat_spec
from tests.support import assert_sent_once_each, write_spec
from volley.cli import app
from volley.outcomes import check_invariant

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "medchat_token")]


@pytest.fixture
def medchat_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCHAT_TOKEN", MEDCHAT_TOKEN)


def with_bad_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """A missing key, a duplicate, an unreadable date, and a patient MedChat refuses."""
    bad = pl.DataFrame(
        {
            "patient_id": ["x1", "x2", "x3", "x4"],
            "patient_name": ["A", "B", "C", "D"],
            "appointment_id": [None, frame["appointment_id"][3], "AP-BAD-DATE", "REJECT-1"],
            "appointment_at": ["2025-03-14 08:30", "2025-03-14 08:30", "14/03/2025 8:30", "2025-03-14 08:30"],
        }
    )
    return pl.concat([frame.head(100), bad, frame.slice(100)])


async def run(spec_path: Path, base_url: str, results: Path, run_key: str = "k1") -> dict[str, Any]:
    summary = await campaign_flow(
        spec_path=str(spec_path), run_key=run_key, base_url=base_url, results_dir=str(results)
    )
    assert isinstance(summary, dict), summary
    return summary


async def test_a_fault_storm_with_throttling_sends_nobody_twice(tmp_path: Path) -> None:
    source = tmp_path / "audience.parquet"
    with_bad_rows(medchat_audience(1_500)).write_parquet(source)
    # Paced a little under the simulator's limit: its bucket still throttles bursts now and then.
    limits = {"timeout_seconds": 1.0, "concurrency": 6, "requests_per_second": 30, "burst": 3}
    spec = medchat_spec(source, batch_size=25, limits=limits)
    faults = {"5xx": 0.08, "timeout": 0.04, "reset": 0.04, "throttle": 0.05}
    with SimulatorProcess(latency_ms=2, rate_limit=40, burst=4, faults=faults, seed=7, hold_seconds=2) as sim:
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), f"{sim.base_url}/medchat", tmp_path / "r")
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{sim.base_url}/medchat/_sim/stats")).json()

    outcomes = pl.read_parquet(summary["outcome_path"])
    check_invariant(outcomes, 1_504)
    assert summary["complete"] is True
    counts = dict(outcomes.group_by("status").len().iter_rows())
    assert counts["invalid"] == 2
    assert counts["skipped"] == 1
    assert counts.get("failed", 0) == 0, outcomes.filter(pl.col("status") == "failed").head()
    refused = outcomes.filter(pl.col("recipient_key") == "REJECT-1").row(0, named=True)
    assert refused["status"] in {"rejected", "in_doubt"}
    if refused["status"] == "rejected":
        batch = outcomes.filter(pl.col("batch_id") == refused["batch_id"])
        assert set(batch["status"]) == {"rejected"}, "MedChat refuses the whole request"
        assert "no patient record matches appointmentId 'REJECT-1'" in refused["error_message"]
    sets = assert_sent_once_each(outcomes, sim.log_path, "medchat")
    assert sets["in_doubt"], "the storm withheld some answers"
    assert summary["throttled"] >= 1
    assert summary["retries"] >= 1
    assert stats["throttled"] >= 1
    assert stats["faults"]["5xx"] >= 1


async def test_the_sample_campaign_runs_as_documented(tmp_path: Path) -> None:
    spec = ROOT / "campaigns" / "medchat_appointment_reminder.yaml"
    with SimulatorProcess() as sim:
        summary = await run(spec, f"{sim.base_url}/medchat", tmp_path / "r")
    assert summary["counts"] == {
        "accepted": 36,
        "rejected": 20,  # the batch holding REJECT-...: MedChat refuses a request whole
        "invalid": 3,
        "skipped": 1,
        "failed": 0,
        "in_doubt": 0,
    }


# -- cancel ------------------------------------------------------------------------------------


def write_instances(path: Path, ids: Sequence[str | None]) -> Path:
    pl.DataFrame({"journey_instance_id": ids}, schema={"journey_instance_id": pl.String}).write_csv(path)
    return path


@pytest.fixture
def triggered(tmp_path: Path) -> Iterator[tuple[SimulatorProcess, Path, list[str]]]:
    """A simulator where a campaign has started 30 instances; the spec and their ids."""
    source = tmp_path / "audience.csv"
    medchat_audience(30).write_csv(source)
    spec = write_spec(tmp_path / "spec.yaml", medchat_spec(source, results_dir=str(tmp_path / "results")))
    with SimulatorProcess() as sim:
        runner = CliRunner()
        result = runner.invoke(app, ["run", str(spec), "--base-url", f"{sim.base_url}/medchat", "--run-key", "t"])
        assert result.exit_code == 0, result.output
        ids = [instance_id_for(DEMO_CHATBOT_ID, f"AP-{i:06d}") for i in range(30)]
        yield sim, spec, ids


async def test_the_cancel_flow_cancels_each_listed_instance_once(
    tmp_path: Path, triggered: tuple[SimulatorProcess, Path, list[str]]
) -> None:
    sim, spec, ids = triggered
    unknown = "00000000-0000-4000-8000-000000000000"
    instances = write_instances(tmp_path / "cancel.csv", [*ids[:10], unknown, "not-a-uuid", ids[0], None])
    base_url = f"{sim.base_url}/medchat"
    summary: dict[str, Any] = await cancel_flow(  # type: ignore[assignment]
        spec_path=str(spec), instances=str(instances), base_url=base_url
    )
    assert isinstance(summary, dict), summary
    assert summary["campaign"] == "reminder-cancel"
    assert summary["run_key"] == default_cancel_run_key()
    outcomes = pl.read_parquet(summary["outcome_path"])
    check_invariant(outcomes, 14)
    assert summary["counts"] == {
        "accepted": 10,
        "rejected": 1,
        "invalid": 2,
        "skipped": 1,
        "failed": 0,
        "in_doubt": 0,
    }
    rejected = outcomes.filter(pl.col("status") == "rejected").row(0, named=True)
    assert (rejected["recipient_key"], rejected["error_code"], rejected["http_status"]) == (
        unknown,
        "INSTANCE_NOT_FOUND",
        404,
    )
    assert "was not found" in rejected["error_message"]
    assert set(outcomes.filter(pl.col("status") == "invalid")["error_code"]) == {
        "journeyInstanceId.str_matches",
        "recipient_key.missing",
    }
    assert Path(summary["outcome_path"]).is_relative_to(tmp_path / "results" / "reminder-cancel")
    async with httpx.AsyncClient() as client:
        state = (await client.get(f"{base_url}/_sim/instances")).json()
    running = {i["journeyInstanceId"] for i in state if i["running"]}
    assert running == set(ids[10:])

    again: dict[str, Any] = await cancel_flow(  # type: ignore[assignment]
        spec_path=str(spec), instances=str(instances), base_url=base_url
    )
    assert isinstance(again, dict), again
    assert again["counts"]["accepted"] == 0
    assert again["requests"] == 0, "a re-run under the same run key sends nothing it sent before"


def test_volley_cancel_on_the_command_line(tmp_path: Path, triggered: tuple[SimulatorProcess, Path, list[str]]) -> None:
    sim, spec, ids = triggered
    instances = write_instances(tmp_path / "cancel.csv", ids[20:25])
    runner = CliRunner()
    dry = runner.invoke(app, ["cancel", str(spec), "--instances", str(instances), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing sent" in dry.output
    result = runner.invoke(
        app, ["cancel", str(spec), "--instances", str(instances), "--base-url", f"{sim.base_url}/medchat"]
    )
    assert result.exit_code == 0, result.output
    assert "reminder-cancel" in result.output
    outcomes = pl.read_parquet(next((tmp_path / "results" / "reminder-cancel").rglob("outcomes.parquet")))
    assert outcomes["status"].to_list() == ["accepted"] * 5
    running = {
        i["journeyInstanceId"] for i in httpx.get(f"{sim.base_url}/medchat/_sim/instances").json() if i["running"]
    }
    assert running.isdisjoint(ids[20:25])
    assert len(running) == 25
