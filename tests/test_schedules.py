"""Scheduled campaigns: deployments with the spec's schedule and parameters (served or on a work pool),
read back from the embedded Prefect server without waiting for a cron tick; a scheduled run's run key
is its scheduled date in the schedule's time zone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from flows.schedules import (
    campaign_deployments,
    deploy_campaigns,
    scheduled_campaign_flow,
    scheduled_campaigns,
    scheduled_date,
    serve_campaigns,
)
from tests.support import audience, responsys_spec, write_spec
from volley.cli import app
from volley.errors import SpecError
from volley.spec import ScheduleSpec, read_spec

FLOW_NAME = "volley-scheduled-campaign"


def campaign_dir(tmp_path: Path, suffix: str = "") -> Path:
    """Three specs: a schedule with a time zone, a plain cron line (UTC), and one with no schedule."""
    directory = tmp_path / "campaigns"
    directory.mkdir()
    source = tmp_path / "audience.csv"
    audience(30).write_csv(source)
    london = responsys_spec(source, name=f"london{suffix}")
    london["schedule"] = {"cron": "0 6 * * *", "timezone": "Europe/London"}
    write_spec(directory / "london.yaml", london)
    write_spec(directory / "utc.yaml", responsys_spec(source, name=f"utc{suffix}", schedule="30 5 * * 1-5"))
    write_spec(directory / "manual.yaml", responsys_spec(source, name=f"manual{suffix}"))
    return directory


def test_the_scheduled_date_is_read_in_the_schedules_time_zone() -> None:
    late_evening_utc = datetime(2026, 7, 1, 23, 30, tzinfo=UTC)
    assert scheduled_date("UTC", late_evening_utc) == "2026-07-01"
    assert scheduled_date("Europe/London", late_evening_utc) == "2026-07-02"  # BST: already 00:30 next day
    assert scheduled_date("America/New_York", late_evening_utc) == "2026-07-01"


def test_specs_with_a_schedule_are_found_and_checked(tmp_path: Path) -> None:
    found = {c.spec.name: c.schedule for c in scheduled_campaigns(campaign_dir(tmp_path))}
    assert found == {
        "london": ScheduleSpec(cron="0 6 * * *", timezone="Europe/London"),
        "utc": ScheduleSpec(cron="30 5 * * 1-5", timezone="UTC"),
    }
    bad = responsys_spec("a.csv", schedule={"cron": "0 6 * *", "timezone": "Europe/London"})
    with pytest.raises(SpecError, match=r"schedule.cron: Value error, '0 6 \* \*' is not a cron expression"):
        read_spec(write_spec(tmp_path / "bad.yaml", bad))
    bad["schedule"] = {"cron": "0 6 * * *", "timezone": "Mars/Olympus"}
    with pytest.raises(SpecError, match=r"schedule.timezone: Value error, unknown time zone 'Mars/Olympus'"):
        read_spec(write_spec(tmp_path / "bad.yaml", bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="no campaign spec with a schedule"):
        scheduled_campaigns(empty)


def test_serve_and_deploy_commands_exit_2_on_a_directory_without_schedules(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in (["serve", str(tmp_path)], ["deploy", str(tmp_path), "--work-pool", "p"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "no campaign spec with a schedule" in result.output


async def read_deployment(name: str) -> Any:
    from prefect import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(f"{FLOW_NAME}/{name}")


@pytest.mark.usefixtures("prefect_server")
async def test_served_deployments_carry_the_spec_schedule_and_parameters(tmp_path: Path) -> None:
    suffix = f"-{uuid.uuid4().hex[:6]}"
    campaigns = scheduled_campaigns(campaign_dir(tmp_path, suffix))
    deployments = await campaign_deployments(campaigns, results_dir=str(tmp_path / "results"))
    await serve_campaigns(deployments, run_once=True)  # registers them, polls once, stops

    london = await read_deployment(f"london{suffix}")
    assert [s.schedule.cron for s in london.schedules] == ["0 6 * * *"]
    assert london.schedules[0].schedule.timezone == "Europe/London"
    assert london.parameters == {
        "spec_path": str((tmp_path / "campaigns" / "london.yaml").resolve()),
        "timezone": "Europe/London",
        "results_dir": str(tmp_path / "results"),
    }
    assert london.entrypoint == "flows.schedules.scheduled_campaign_flow"
    assert london.work_pool_name is None
    assert "responsys" in london.tags
    utc = await read_deployment(f"utc{suffix}")
    assert (utc.schedules[0].schedule.cron, utc.schedules[0].schedule.timezone) == ("30 5 * * 1-5", "UTC")
    assert utc.parameters["timezone"] == "UTC"
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ObjectNotFound):
        await read_deployment(f"manual{suffix}")


@pytest.mark.usefixtures("prefect_server")
async def test_deploy_registers_the_campaigns_with_a_work_pool(tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    suffix = f"-{uuid.uuid4().hex[:6]}"
    pool = f"volley-pool{suffix}"
    campaigns = scheduled_campaigns(campaign_dir(tmp_path, suffix))
    deployments = await campaign_deployments(campaigns, working_dir=tmp_path)
    with pytest.raises(SpecError, match=f"--work-pool {pool}: no such work pool"):
        await deploy_campaigns(deployments, pool)
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    ids = await deploy_campaigns(deployments, pool)
    assert len(ids) == 2
    london = await read_deployment(f"london{suffix}")
    assert london.id in ids
    assert london.work_pool_name == pool
    assert london.job_variables == {"working_dir": str(tmp_path)}
    assert london.schedules[0].schedule.cron == "0 6 * * *"
    assert london.schedules[0].schedule.timezone == "Europe/London"
    assert london.parameters["spec_path"].endswith("london.yaml")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "responsys_credentials")
async def test_a_scheduled_run_uses_its_scheduled_date_as_run_key(tmp_path: Path) -> None:
    """A run scheduled for 00:30 London time on 2 July: run key 2026-07-02, even when it runs late."""
    from prefect import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from sim.testing import SimulatorProcess

    execute: Any = run_flow  # runs the deployment's flow run here, as a worker would
    suffix = f"-{uuid.uuid4().hex[:6]}"
    with SimulatorProcess() as sim:
        campaigns = scheduled_campaigns(campaign_dir(tmp_path, suffix))
        deployments = await campaign_deployments(
            campaigns, base_url=sim.responsys_url, results_dir=str(tmp_path / "results")
        )
        await serve_campaigns(deployments, run_once=True)
        london = await read_deployment(f"london{suffix}")
        scheduled = datetime(2026, 7, 2, 0, 30, tzinfo=ZoneInfo("Europe/London"))
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(
                london.id, state=Scheduled(scheduled_time=scheduled.astimezone(UTC))
            )
        state = await execute(
            scheduled_campaign_flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
        )
        assert state.is_completed(), state
        summary = await state.aresult()
        assert summary["run_key"] == "2026-07-02"
        assert summary["counts"]["accepted"] == 30
        # The schedule delivered again (a retry, a second worker): same run key, nothing sent twice.
        async with get_client() as client:
            again = await client.create_flow_run_from_deployment(
                london.id, state=Scheduled(scheduled_time=scheduled.astimezone(UTC))
            )
        state = await execute(scheduled_campaign_flow, flow_run=again, parameters=again.parameters, return_type="state")
        second = await state.aresult()
    assert second["run_key"] == "2026-07-02"
    assert second["counts"]["accepted"] == 0
    assert second["counts"]["skipped"] == 30
    assert (tmp_path / "results" / f"london{suffix}" / "2026-07-02").is_dir()


@pytest.mark.usefixtures("prefect_server")
async def test_a_scheduled_run_of_an_unusable_spec_fails_with_its_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "gone.yaml"
    state = await scheduled_campaign_flow(spec_path=str(missing), return_state=True)
    assert state.is_failed()
    assert state.message == f"{missing}: no such spec file"
