"""The campaign flow: plan the audience slice by slice, send shards, record every outcome.

A shard (tens of batches) is the unit of Prefect work; batches stay inside the
dispatcher's asyncio loop, which every shard of the run shares.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
from collections.abc import Iterator
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.context import get_run_context
from prefect.states import Failed
from prefect.utilities.annotations import quote

from volley.batches import Batch, Shard
from volley.campaign import Campaign, CampaignRun, RunOptions
from volley.dispatcher import Dispatcher
from volley.errors import InputError
from volley.planning import SlicePlan
from volley.secrets import install_log_redaction
from volley.spec import merge
from volley.summary import RunSummary
from volley.warehouse import with_run_date

__all__ = ["INPUT_ERROR", "campaign_flow"]

INPUT_ERROR = "InvalidInput"

T = TypeVar("T")

# Batches planned but not yet handed to the dispatcher, at most: about a slice's worth (100k rows
# of Responsys), as when a shard was a slice; planning stays that far ahead of the sends.
_BACKLOG_BATCHES = 500


def _quoted(value: T) -> T:
    """Hand a task input over unexamined: Prefect would otherwise walk every batch, key and payload
    of a shard looking for futures (measured: 30% of a 1M-recipient run's CPU in visit_collection).
    The task receives `value` itself: Prefect unwraps `quote` before the task body runs."""
    return cast(T, quote(value))


def plan_next_slice(slices: Iterator[SlicePlan]) -> asyncio.Future[SlicePlan | None]:
    """Read, validate and batch the next slice of the audience in a thread, started now: the sends
    go on, and so does whatever the loop does before it awaits the plan.

    Not a Prefect task: a task run per slice cost the embedded server about 30 ms of CPU each
    (a 1M-row run's server CPU 0.84-1.15 s with them, 0.50-0.61 s without), CPU the sends and the
    vendor's simulator share on a small machine. Shards stay the unit of Prefect work.
    """
    in_context = functools.partial(contextvars.copy_context().run, next, slices, None)  # as asyncio.to_thread
    return asyncio.get_running_loop().run_in_executor(None, in_context)


@task(name="send-shard", cache_policy=NO_CACHE, task_run_name="send-{shard_id}")
async def send_shard(dispatcher: Dispatcher, shard_id: str, shard: Shard) -> int:
    await dispatcher.send_shard(shard)
    return shard.rows


@task(name="finish-run", cache_policy=NO_CACHE)
async def finish_run(run: CampaignRun) -> RunSummary:
    """Compact the outcome record, check the invariant, release the run key."""
    return await run.finish()


class _Shards:
    """Cuts the planned batches into shards of `size` batches across slices, one Prefect task
    each, with at most `in_flight` of them sending at once."""

    def __init__(self, size: int, in_flight: int) -> None:
        self._size = size
        self._limit = in_flight
        self._backlog = min(size, _BACKLOG_BATCHES)
        self._feed: Shard | None = None
        self._tasks: set[asyncio.Task[int]] = set()
        self._count = 0

    async def put(self, dispatcher: Dispatcher, batch: Batch) -> None:
        if self._feed is None or self._feed.full:
            await self.close()
            while len(self._tasks) >= self._limit:
                done, self._tasks = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
            self._feed = Shard(f"shard-{self._count:05d}", self._size, self._backlog)
            self._count += 1
            task = send_shard(_quoted(dispatcher), self._feed.shard_id, _quoted(self._feed))
            self._tasks.add(asyncio.create_task(task))
        await self._feed.put(batch)

    async def close(self) -> None:
        """The current shard takes no more batches."""
        if self._feed is not None:
            await self._feed.close()
            self._feed = None

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)


def _artifact_key(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:60] or "campaign"


async def _publish(summary: RunSummary) -> None:
    key = _artifact_key(f"volley-{summary.campaign}")
    await acreate_markdown_artifact(markdown=summary.markdown(), key=f"{key}-summary", description="Volley run summary")
    rows = [{"status": status, "rows": n} for status, n in sorted(summary.counts.items())]
    await acreate_table_artifact(table=rows, key=f"{key}-outcomes", description=f"Outcomes in {summary.outcome_path}")


def _flow_run_id() -> str | None:
    context = get_run_context()
    run = getattr(context, "flow_run", None)
    return str(run.id) if run is not None else None


@flow(name="volley-campaign")
async def campaign_flow(
    spec_path: str,
    run_key: str | None = None,
    base_url: str | None = None,
    results_dir: str | None = None,
    retry_failed: bool = False,
    resend_in_doubt: bool = False,
    ledger_url: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_date: str | None = None,
) -> dict[str, object] | State:
    """Run one campaign: one outcome row per audience row, summary.json and artifacts beside them.

    Under a run key already used, only what was not accepted is sent: rows refused or given
    up on need `retry_failed`, rows sent with no answer need `resend_in_doubt`. `overrides`
    are laid over the spec file (the cancel flow's source, key and operation).
    """
    logger = get_run_logger()
    install_log_redaction(logging.getLogger("prefect"), logging.getLogger("prefect.flow_runs"))
    if ledger_url:
        overrides = merge(overrides or {}, {"ledger": {"url": ledger_url}})
    overrides = with_run_date(overrides, run_date, run_key)  # a SQL source's :run_date (the run key's date)
    options = RunOptions(retry_failed=retry_failed, resend_in_doubt=resend_in_doubt)
    try:
        campaign = Campaign.load(spec_path, base_url=base_url, results_dir=results_dir, overrides=overrides)
        campaign.preflight()
        run = await CampaignRun.start(campaign, run_key, _flow_run_id(), options)
    except InputError as exc:
        logger.error("%s", exc)
        return Failed(name=INPUT_ERROR, message=str(exc))
    try:
        return await _run(run, logger)
    finally:
        await run.ledger.close()


async def _run(
    run: CampaignRun, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
) -> dict[str, object] | State:
    campaign = run.campaign
    try:
        quota = campaign.check_quota(run.identity.run_key, run.planner.history)
    except InputError as exc:
        await run.close(complete=False)
        logger.error("%s", exc)
        return Failed(name=INPUT_ERROR, message=str(exc))
    settled = await run.settle_in_doubt()
    slices = run.plan_slices()
    shards = _Shards(campaign.spec.shard_batches, campaign.spec.shards_in_flight)
    stopped: InputError | None = None
    upcoming = plan_next_slice(slices)  # the first, while these lines are logged and the HTTP client is made
    try:
        # (a run's first log line took 25 ms on the loop, which the first slice no longer waits for: measured)
        logger.info("run %s of %s: outcomes in %s", run.identity.run_id, campaign.spec.name, run.run_dir)
        if settled:
            logger.info("settled %d rows left in doubt by earlier runs with the vendor's status look-up", settled)
        if quota is not None:
            logger.info("hourly quota: %s", quota)
        async with run.dispatching() as dispatcher:
            try:
                while (plan := await upcoming) is not None:
                    # Plan the next slice while this one is sent: the workers wait only when planning is slower.
                    upcoming = plan_next_slice(slices)
                    for batch in plan.batches:
                        await shards.put(dispatcher, batch)
            except InputError as exc:  # the source failed mid-way: finish what was queued, keep it all
                stopped = exc
            await shards.close()
            await shards.wait()
    except BaseException:
        upcoming.cancel()
        raise
    if stopped is not None:
        summary = await run.abandon(str(stopped))
        logger.error("stopped: %s; %d outcomes kept in %s", stopped, sum(summary.counts.values()), summary.outcome_path)
        return Failed(name=INPUT_ERROR, message=str(stopped))
    summary = await finish_run(_quoted(run))
    await _publish(summary)
    logger.info(
        "done in %.1f s: %s", summary.elapsed_seconds, ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
    )
    return summary.to_dict()
