"""Delivery guarantees end to end: crashes, re-runs, fault storms, two processes on one run key.

Each run is a real `volley run` process (so SIGKILL is real) against the simulator, on the
session's Prefect server; the simulator's log is the judge of what was triggered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sim.log import accepted_recipients, read_log, withheld_requests
from sim.testing import SimulatorProcess
from tests.support import RESPONSYS_PASSWORD, RESPONSYS_USER, audience, responsys_spec, write_spec
from volley.outcomes import check_invariant

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
VOLLEY = str(Path(sys.executable).with_name("volley"))


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLLEY_CRASH")}
    env.update(
        RESPONSYS_USER=RESPONSYS_USER,
        RESPONSYS_PASSWORD=RESPONSYS_PASSWORD,
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    return env


def volley_run(
    env: dict[str, str], spec: Path, sim: SimulatorProcess, results: Path, *extra: str, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [VOLLEY, "run", str(spec), "--base-url", sim.responsys_url, "--results-dir", str(results), *extra]
    run_env = {**env, "VOLLEY_CRASH_AT": crash_at} if crash_at else env
    return subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=300, check=False)


def latest_outcomes(results: Path, run_key: str) -> pl.DataFrame:
    finished = sorted((results / "test-campaign" / run_key).glob("*/outcomes.parquet"))
    return pl.read_parquet(finished[-1])


@pytest.fixture
def slow_sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(latency_ms=40) as sim:
        yield sim


def spec_for(tmp_path: Path, rows: int, **limits: Any) -> Path:
    source = tmp_path / "audience.parquet"
    audience(rows).write_parquet(source)
    spec = responsys_spec(source, limits={"concurrency": 4, **limits}, shard_batches=2)
    return write_spec(tmp_path / "spec.yaml", spec)


def test_crashes_at_three_points_resume_without_sending_anything_twice(
    tmp_path: Path, slow_sim: SimulatorProcess, cli_env: dict[str, str]
) -> None:
    spec = spec_for(tmp_path, 4_000)
    results = tmp_path / "results"
    key = ("--run-key", "crash-day")

    planning = volley_run(cli_env, spec, slow_sim, results, *key, crash_at="planning")
    assert planning.returncode == -signal.SIGKILL
    assert slow_sim.read_log().height == 0, "killed while planning: nothing sent"

    dispatch = volley_run(cli_env, spec, slow_sim, results, *key, crash_at="dispatch:8")
    assert dispatch.returncode == -signal.SIGKILL
    sent_before_crash = accepted_recipients(slow_sim.read_log()).height
    assert 0 < sent_before_crash < 4_000

    finalize = volley_run(cli_env, spec, slow_sim, results, *key, crash_at="finalize")
    assert finalize.returncode == -signal.SIGKILL

    resumed = volley_run(cli_env, spec, slow_sim, results, *key)
    assert resumed.returncode == 0, resumed.stderr
    outcomes = latest_outcomes(results, "crash-day")
    check_invariant(outcomes, 4_000)

    triggered = accepted_recipients(slow_sim.read_log())
    assert triggered["key"].is_duplicated().sum() == 0, "a recipient was triggered twice"
    in_doubt = set(outcomes.filter(pl.col("status") == "in_doubt")["recipient_key"])
    assert len(in_doubt) <= 4 * 200 + 200, "at most the batches in flight when the run died"
    assert outcomes.filter(pl.col("status") == "in_doubt")["error_code"].unique().to_list() == ["unanswered_before"]
    everyone = set(audience(4_000)["customer_id"])
    assert everyone - in_doubt <= set(triggered["key"]), "every recipient not in doubt was triggered"
    assert set(outcomes["status"].unique()) <= {"skipped", "in_doubt"}, "the last run had nothing left to send"

    again = volley_run(cli_env, spec, slow_sim, results, *key, "--resend-in-doubt")
    assert again.returncode == 0, again.stderr
    resent = latest_outcomes(results, "crash-day")
    assert set(resent.filter(pl.col("status") == "accepted")["recipient_key"]) == in_doubt


def test_a_rerun_after_success_sends_nothing_and_after_failure_only_the_rest(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    spec = spec_for(tmp_path, 2_000, max_attempts=1)
    results = tmp_path / "results"
    with SimulatorProcess(faults={"5xx": 0.3}, seed=5) as sim:
        partial = volley_run(cli_env, spec, sim, results, "--run-key", "day")
        assert partial.returncode == 0, partial.stderr
        first = latest_outcomes(results, "day")
        failed = set(first.filter(pl.col("status") == "failed")["recipient_key"])
        assert failed, "30% of requests answered 503 with one attempt allowed"

        plain = volley_run(cli_env, spec, sim, results, "--run-key", "day")
        assert latest_outcomes(results, "day")["status"].unique().to_list() == ["skipped"]
        assert plain.returncode == 0

    with SimulatorProcess() as healthy:
        retried = volley_run(cli_env, spec, healthy, results, "--run-key", "day", "--retry-failed")
        assert retried.returncode == 0, retried.stderr
        assert set(accepted_recipients(healthy.log_path)["key"]) == failed
        final = latest_outcomes(results, "day")
        assert set(final.filter(pl.col("status") == "accepted")["recipient_key"]) == failed

        nothing = volley_run(cli_env, spec, healthy, results, "--run-key", "day")
        assert nothing.returncode == 0
        assert accepted_recipients(healthy.log_path).height == len(failed), "a re-run after success sends nothing"


def test_a_fault_storm_reports_in_doubt_exactly_the_withheld_batches(tmp_path: Path, cli_env: dict[str, str]) -> None:
    spec = spec_for(
        tmp_path,
        50_000,
        concurrency=8,
        timeout_seconds=1.0,
        throttle_backoff_seconds=0.05,
        max_attempts=12,
    )
    faults = {"5xx": 0.10, "throttle": 0.05, "timeout": 0.02, "reset": 0.01}
    with SimulatorProcess(faults=faults, seed=3, hold_seconds=3) as sim:
        result = volley_run(cli_env, spec, sim, tmp_path / "results", "--run-key", "storm")
        assert result.returncode == 0, result.stderr
    outcomes = latest_outcomes(tmp_path / "results", "storm")
    check_invariant(outcomes, 50_000)
    counts = dict(outcomes.group_by("status").len().iter_rows())
    assert set(counts) <= {"accepted", "in_doubt"}, counts

    log = read_log(sim.log_path)
    triggered = accepted_recipients(log)
    assert triggered["key"].is_duplicated().sum() == 0
    withheld = withheld_requests(log)
    in_doubt = set(outcomes.filter(pl.col("status") == "in_doubt")["recipient_key"])
    assert in_doubt == set(withheld["key"]), "in doubt: exactly the rows whose answer the simulator withheld"
    accepted = set(outcomes.filter(pl.col("status") == "accepted")["recipient_key"])
    assert accepted == set(triggered["key"]) - in_doubt


@pytest.mark.postgres
def test_two_processes_on_one_run_key_with_a_postgres_ledger_never_both_send(
    tmp_path: Path, slow_sim: SimulatorProcess, cli_env: dict[str, str], postgres_uri: str
) -> None:
    # 15 requests at 1 a second: whichever claims the key first holds it ~15 s, longer than the two
    # embedded Prefect servers' start-up times differ by under load (5 s was not: a full suite saw both run).
    spec = spec_for(tmp_path, 3_000, requests_per_second=1)
    command = [
        VOLLEY,
        "run",
        str(spec),
        "--base-url",
        slow_sim.responsys_url,
        "--results-dir",
        str(tmp_path / "results"),
        "--run-key",
        f"shared-{os.getpid()}-{tmp_path.name[-8:]}",
        "--ledger-url",
        postgres_uri,
    ]
    first = subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [process.communicate(timeout=300) for process in (first, second)]
    codes = sorted([first.returncode, second.returncode])
    refused = [err for (_, err), p in zip(results, (first, second), strict=True) if p.returncode == 2]
    assert codes == [0, 2], results
    assert "held by another process on the shared ledger" in refused[0]
    triggered = accepted_recipients(slow_sim.read_log())
    assert triggered.height == 3_000
    assert triggered["key"].is_duplicated().sum() == 0
