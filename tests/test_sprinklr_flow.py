"""Sprinklr end to end: the campaign flow against the simulator with faults, the gateway's
throttling and access tokens that expire mid-run.

Checked against the simulator's own log: no profile triggered twice, every valid profile
not reported `in_doubt` accepted exactly once, and the invariant holds. The refresh token
left in the token store is the live one (the simulator takes it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from flows.campaign import campaign_flow
from sim.log import read_log, withheld_requests
from sim.testing import SimulatorProcess
from tests.marketing_support import (
    NEW_PROFILE_PARAMS,
    SPRINKLR_CLIENT_ID,
    SPRINKLR_ENV,
    set_env,
    sprinklr_audience,
    sprinklr_spec,
)
from tests.support import assert_sent_once_each, write_spec
from volley.outcomes import check_invariant

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "credentials")]

FAULTS = {"5xx": 0.06, "timeout": 0.03, "reset": 0.03, "throttle": 0.04}


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SPRINKLR_ENV)


def options(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--vendor-option", pair)]


def with_bad_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """No key, a duplicate, an id that is no address, a profile Sprinklr does not know."""
    bad = pl.DataFrame(
        {
            "email": [None, frame["email"][3], "not-an-address", "UNKNOWN-1@example.com"],
            "first_name": ["a", "b", "c", "d"],
            "offer": ["o", "o", "o", "o"],
        }
    )
    return pl.concat([frame.head(40), bad, frame.slice(40)])


async def run(spec_path: Path, base_url: str, results: Path, run_key: str = "k1") -> dict[str, Any]:
    summary = await campaign_flow(
        spec_path=str(spec_path), run_key=run_key, base_url=base_url, results_dir=str(results)
    )
    assert isinstance(summary, dict), summary
    return summary


async def test_a_fault_storm_with_throttling_and_expiring_tokens_triggers_nobody_twice(tmp_path: Path) -> None:
    rows = 300
    source = tmp_path / "audience.parquet"
    with_bad_rows(sprinklr_audience(rows)).write_parquet(source)
    # Volley paces a little under the gateway's per-second bucket, which still throttles bursts now and then.
    limits = {"timeout_seconds": 1.0, "concurrency": 6, "requests_per_second": 100, "burst": 3}
    spec = sprinklr_spec(source, token_dir=tmp_path / "tokens", limits=limits)
    sim_options = options(
        "sprinklr.requests_per_second=120",
        "sprinklr.burst=4",
        "sprinklr.requests_per_hour=100000",
        "sprinklr.token_ttl_seconds=1.0",  # the configured access token dies early: a 401, then refreshes
    )
    with SimulatorProcess(latency_ms=2, faults=FAULTS, seed=7, hold_seconds=2, extra_args=sim_options) as sim:
        base_url = f"{sim.base_url}/sprinklr"
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), base_url, tmp_path / "r")
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{base_url}/_sim/stats")).json()
            stored = next((tmp_path / "tokens").glob("sprinklr-*.json"))
            live = json.loads(stored.read_text())["refresh_token"]
            form = {
                "grant_type": "refresh_token",
                "refresh_token": live,
                "client_id": SPRINKLR_CLIENT_ID,
                "client_secret": SPRINKLR_ENV["SPRINKLR_CLIENT_SECRET"],
                "redirect_uri": "https://localhost/volley/callback",
            }
            still_good = await client.post(f"{base_url}/oauth/token", data=form)

    outcomes = pl.read_parquet(summary["outcome_path"])
    check_invariant(outcomes, rows + 4)
    assert summary["complete"] is True
    counts = dict(outcomes.group_by("status").len().iter_rows())
    assert counts["invalid"] == 2
    assert counts["skipped"] == 1
    assert counts.get("failed", 0) == 0, outcomes.filter(pl.col("status") == "failed").head()
    by_key = {r["recipient_key"]: r for r in outcomes.iter_rows(named=True)}
    assert by_key["not-an-address"]["error_code"] == "snId_matches_snType"
    assert by_key["UNKNOWN-1@example.com"]["status"] in {"rejected", "in_doubt"}

    keys = assert_sent_once_each(outcomes, sim.log_path, "sprinklr")
    withheld = withheld_requests(read_log(sim.log_path)).filter(pl.col("vendor") == "sprinklr")
    assert keys["in_doubt"] <= set(withheld["key"]), "in_doubt only where the simulator withheld the answer"
    assert keys["in_doubt"], "the storm withheld some answers"
    assert len(keys["accepted"]) >= rows - len(keys["in_doubt"]) - 2

    assert summary["throttled"] >= 1
    assert stats["throttled"] >= 1
    assert stats["unauthorized"] >= 1, "the configured access token expired mid-run"
    assert stats["refreshes"] >= 1
    assert stats["refresh_reused"] == 0, "a spent refresh token was never sent again"
    assert still_good.status_code == 200, "the store holds the live refresh token"
    written = outcomes.write_ndjson() + Path(summary["outcome_path"]).with_name("summary.json").read_text()
    for secret in (*SPRINKLR_ENV.values(), live):
        assert secret not in written, "no token in the outcomes or the summary"


async def test_new_profiles_get_their_tracking_ids_and_opted_out_channels_are_rejected(tmp_path: Path) -> None:
    audience = pl.DataFrame(
        {
            "email": [f"new{i}@example.com" for i in range(30)] + ["optout-me@example.com"],
            "phone": [f"+44 20 7946 {i:04d}" for i in range(31)],
            "first_name": ["Zoë"] * 31,
            "offer": ["WELCOME10"] * 31,
        }
    )
    source = tmp_path / "new.csv"
    audience.write_csv(source)
    spec = sprinklr_spec(source, token_dir=tmp_path / "tokens", vendor_params=NEW_PROFILE_PARAMS)
    with SimulatorProcess(extra_args=options("sprinklr.requests_per_second=null")) as sim:
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), f"{sim.base_url}/sprinklr", tmp_path / "r")
    outcomes = pl.read_parquet(summary["outcome_path"])
    check_invariant(outcomes, 31)
    accepted = outcomes.filter(pl.col("status") == "accepted")
    assert accepted.height == 30
    assert accepted["vendor_ref"].str.starts_with("trk-").all()
    refused = outcomes.filter(pl.col("status") == "rejected").row(0, named=True)
    assert (refused["recipient_key"], refused["error_code"]) == ("optout-me@example.com", "CHANNEL_OPTED_OUT")
    assert_sent_once_each(outcomes, sim.log_path, "sprinklr")


async def test_an_unknown_journey_stops_the_run(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    sprinklr_audience(200).write_csv(source)
    spec = sprinklr_spec(source, token_dir=tmp_path / "tokens", vendor_params={"journey_id": "no-such-journey"})
    with SimulatorProcess(extra_args=options("sprinklr.requests_per_second=null")) as sim:
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), f"{sim.base_url}/sprinklr", tmp_path / "r")
    outcomes = pl.read_parquet(summary["outcome_path"])
    assert outcomes["status"].unique().to_list() == ["failed"]
    assert outcomes["error_code"].unique().to_list() == ["JOURNEY_NOT_FOUND"]
    assert summary["requests"] <= 8, "stops after the first answers"


async def test_a_run_over_the_hourly_quota_is_refused_before_sending(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    sprinklr_audience(1_200).write_csv(source)
    spec = sprinklr_spec(
        source, token_dir=tmp_path / "tokens", limits={"requests_per_hour": None, "quota_policy": "refuse"}
    )
    with SimulatorProcess() as sim:
        state = await campaign_flow(
            spec_path=str(write_spec(tmp_path / "spec.yaml", spec)),
            run_key="k",
            base_url=f"{sim.base_url}/sprinklr",
            results_dir=str(tmp_path / "r"),
            return_state=True,
        )
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{sim.base_url}/sprinklr/_sim/stats")).json()
    assert state.is_failed()
    assert state.name == "InvalidInput"
    assert "1,200 requests at 1,000 an hour take 1.20 h" in str(state.message)
    assert stats["requests"] == 0


async def test_a_refresh_token_in_a_prefect_secret_block_is_rotated_in_place(tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    block = "volley-test-sprinklr-refresh"
    await Secret(value=SPRINKLR_ENV["SPRINKLR_REFRESH_TOKEN"]).asave(block, overwrite=True)
    source = tmp_path / "a.csv"
    sprinklr_audience(20).write_csv(source)
    connection = {"access_token": None, "refresh_token": {"prefect_secret": block}}
    spec = sprinklr_spec(source, token_dir=tmp_path / "tokens", connection=connection)
    with SimulatorProcess(extra_args=options("sprinklr.requests_per_second=null")) as sim:
        base_url = f"{sim.base_url}/sprinklr"
        summary = await run(write_spec(tmp_path / "spec.yaml", spec), base_url, tmp_path / "r")
        loaded: Any = await Secret.aload(block)
        rotated = loaded.get()
        async with httpx.AsyncClient() as client:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": rotated,
                "client_id": SPRINKLR_CLIENT_ID,
                "client_secret": SPRINKLR_ENV["SPRINKLR_CLIENT_SECRET"],
                "redirect_uri": "https://localhost/volley/callback",
            }
            still_good = await client.post(f"{base_url}/oauth/token", data=form)
    assert summary["counts"]["accepted"] == 20
    assert rotated != SPRINKLR_ENV["SPRINKLR_REFRESH_TOKEN"], "the block holds the new refresh token"
    assert still_good.status_code == 200, "... and it is the live one"
