"""Scheduled campaigns: every spec with a `schedule` becomes a Prefect deployment.

`volley serve DIR` serves them from this process (Prefect's runner: no work pool, no
worker); `volley deploy DIR --work-pool NAME` registers them with a work pool of a Prefect
server, for its workers to run. Either way the deployment runs `scheduled_campaign_flow`,
whose run key and run date are the run's *scheduled* date in the schedule's time zone: a
schedule delivered twice, or a late run, sends nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.deployments.runner import RunnerDeployment
from prefect.states import Failed
from prefect.types.entrypoint import EntrypointType

from flows.campaign import campaign_flow
from volley.errors import SpecError
from volley.spec import CampaignSpec, ScheduleSpec, read_spec

__all__ = [
    "ScheduledCampaign",
    "campaign_deployments",
    "deploy_campaigns",
    "has_prefect_server",
    "scheduled_campaign_flow",
    "scheduled_campaigns",
    "scheduled_date",
    "serve_campaigns",
]

DEPLOYMENT_TAG = "volley"


def scheduled_date(timezone: str, scheduled: datetime | None = None) -> str:
    """The date (YYYY-MM-DD, in `timezone`) this flow run was scheduled for; now when not scheduled."""
    if scheduled is None:
        from prefect.runtime import flow_run

        scheduled = flow_run.scheduled_start_time
    return scheduled.astimezone(ZoneInfo(timezone)).date().isoformat()


@flow(name="volley-scheduled-campaign")
async def scheduled_campaign_flow(
    spec_path: str,
    timezone: str = "UTC",
    base_url: str | None = None,
    results_dir: str | None = None,
) -> dict[str, Any] | State:
    """Run the campaign with its scheduled date as run key and run date."""
    day = scheduled_date(timezone)
    get_run_logger().info("scheduled for %s (%s): run key %s", day, timezone, day)
    run = campaign_flow.with_options(flow_run_name=f"{Path(spec_path).stem}-{day}")
    state: State = await run(
        spec_path=spec_path,
        run_key=day,
        run_date=day,
        base_url=base_url,
        results_dir=results_dir,
        return_state=True,
    )
    if state.is_completed():
        summary: dict[str, Any] = await state.aresult()
        return summary
    # Failed or crashed: so does this run, with the campaign's words (a state of its own: Prefect
    # would sum up a subflow's state as "1/1 states failed").
    return Failed(name=state.name or "Failed", message=state.message)


@dataclass(frozen=True)
class ScheduledCampaign:
    spec_path: Path
    spec: CampaignSpec
    schedule: ScheduleSpec


def scheduled_campaigns(campaign_dir: Path) -> list[ScheduledCampaign]:
    """Every spec with a schedule in the directory (*.yaml, *.yml); a spec that does not validate stops it all."""
    if not campaign_dir.is_dir():
        raise SpecError(f"{campaign_dir}: no such directory")
    found: list[ScheduledCampaign] = []
    names: dict[str, Path] = {}
    for path in sorted([*campaign_dir.glob("*.yaml"), *campaign_dir.glob("*.yml")]):
        spec = read_spec(path)
        if spec.schedule is None:
            continue
        schedule = spec.schedule
        if spec.name in names:
            raise SpecError(f"{path}: name {spec.name!r} is also the name of {names[spec.name]}")
        names[spec.name] = path
        found.append(ScheduledCampaign(path.resolve(), spec, schedule))
    if not found:
        raise SpecError(f"{campaign_dir}: no campaign spec with a schedule")
    return found


async def campaign_deployments(
    campaigns: list[ScheduledCampaign],
    base_url: str | None = None,
    results_dir: str | None = None,
    working_dir: Path | None = None,
) -> list[RunnerDeployment]:
    """One deployment per campaign, named after it, on its cron schedule and time zone.

    The entrypoint is a module path (`flows.schedules.scheduled_campaign_flow`): any process
    with Volley installed runs it, no code storage needed. `working_dir` (for work pools) is
    where relative paths of the specs resolve.
    """
    from prefect.schedules import Cron

    deployments = []
    for campaign in campaigns:
        parameters: dict[str, Any] = {"spec_path": str(campaign.spec_path), "timezone": campaign.schedule.timezone}
        if base_url is not None:
            parameters["base_url"] = base_url
        if results_dir is not None:
            parameters["results_dir"] = results_dir
        deployment = await scheduled_campaign_flow.ato_deployment(
            name=campaign.spec.name,
            schedules=[Cron(campaign.schedule.cron, timezone=campaign.schedule.timezone)],
            parameters=parameters,
            description=f"{campaign.spec.vendor} campaign {campaign.spec.name} from {campaign.spec_path}",
            tags=[DEPLOYMENT_TAG, campaign.spec.vendor],
            concurrency_limit=1,  # one run of a campaign at a time; a late run waits its turn
            entrypoint_type=EntrypointType.MODULE_PATH,
            job_variables={"working_dir": str(working_dir)} if working_dir is not None else None,
        )
        deployments.append(deployment)
    return deployments


def has_prefect_server() -> bool:
    """Whether a Prefect server is configured (PREFECT_API_URL); else Prefect starts a temporary one."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


async def serve_campaigns(
    deployments: list[RunnerDeployment],
    run_once: bool = False,
    limit: int | None = None,
    pause_on_shutdown: bool = True,
) -> None:
    """Serve the deployments from this process until stopped (`run_once`: register, poll once, return).

    Stopping pauses their schedules (Prefect's default): no runs pile up that nobody executes.
    A temporary server stops with this process anyway: pass `pause_on_shutdown=False` there.
    """
    from prefect.runner import Runner

    runner = Runner(name="volley-campaigns", pause_on_shutdown=pause_on_shutdown, limit=limit)
    for deployment in deployments:
        await runner.add_deployment(deployment)  # type: ignore[misc]
    await runner.start(run_once=run_once)


async def deploy_campaigns(deployments: list[RunnerDeployment], work_pool: str) -> list[UUID]:
    """Register the deployments with a work pool of the Prefect server (the pool must exist)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_work_pool(work_pool)
        except ObjectNotFound:
            raise SpecError(
                f"--work-pool {work_pool}: no such work pool; create it with "
                f"`prefect work-pool create {work_pool} --type process`"
            ) from None
    return [await deployment.aapply(work_pool_name=work_pool) for deployment in deployments]
