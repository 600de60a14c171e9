"""Backfill: run a campaign once per date, the date being both its run key and its query's run date.

A date whose run already completed is skipped; a date whose run stopped half way is run
again under the same run key, which sends only what was not accepted before. Every date is
summarized at the end (a table artifact, a markdown artifact, the log), failed ones too.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.client.schemas.objects import State
from prefect.states import Failed

from flows.campaign import INPUT_ERROR, campaign_flow
from volley.campaign import Campaign
from volley.errors import InputError, SpecError
from volley.history import run_key_history
from volley.outcomes import Status

__all__ = ["DATES_FAILED", "MAX_DATES", "DateResult", "backfill_flow", "backfill_markdown", "dates_between"]

DATES_FAILED = "DatesFailed"
MAX_DATES = 3660
Action = Literal["skipped", "ran", "resumed", "failed"]
STATUSES = [status.value for status in Status]


@dataclass
class DateResult:
    """What the backfill did for one date."""

    date: str
    action: Action  # skipped: completed before; ran; resumed: an earlier run stopped half way; failed
    run_id: str | None = None
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    message: str | None = None
    outcome_path: str | None = None

    def row(self) -> dict[str, Any]:
        """A flat row for tables: the counts as columns."""
        flat = {k: v for k, v in asdict(self).items() if k not in ("counts", "outcome_path")}
        flat.update({status: self.counts.get(status, 0) for status in STATUSES})
        flat["message"] = self.message or ""
        return flat


def dates_between(start: str, end: str) -> list[str]:
    """Every date from start to end, both included (YYYY-MM-DD); one-line errors."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise SpecError(f"--start/--end: {exc} (use YYYY-MM-DD)") from None
    if last < first:
        raise SpecError(f"--end {end} is before --start {start}")
    days = (last - first).days + 1
    if days > MAX_DATES:
        raise SpecError(f"--start {start} --end {end}: {days} dates, more than {MAX_DATES} in one backfill")
    return [(first + timedelta(days=n)).isoformat() for n in range(days)]


def _from_summary(day: str, action: Action, summary: dict[str, Any]) -> DateResult:
    counts = summary.get("counts")
    return DateResult(
        date=day,
        action=action,
        run_id=summary.get("run_id"),
        rows=int(summary.get("rows") or 0),
        counts=dict(counts) if isinstance(counts, dict) else {},
        message=summary.get("aborted"),
        outcome_path=summary.get("outcome_path"),
    )


async def _run_date(
    campaign: Campaign, day: str, spec_path: str, base_url: str | None, results_dir: str | None
) -> DateResult:
    history = run_key_history(campaign.run_key_dir(day))
    if history.state == "complete" and history.completed is not None:
        done = _from_summary(day, "skipped", history.completed)
        done.message = f"completed before (run {done.run_id})"
        return done
    action: Action = "resumed" if history.state == "partial" else "ran"
    run = campaign_flow.with_options(flow_run_name=f"{campaign.spec.name}-{day}")
    state: State[Any] = await run(
        spec_path=spec_path,
        run_key=day,
        run_date=day,
        base_url=base_url,
        results_dir=results_dir,
        return_state=True,
    )
    if state.is_completed():
        summary = await state.aresult()
        return _from_summary(day, action, summary)
    return DateResult(date=day, action="failed", message=state.message or state.name)


def backfill_markdown(name: str, results: list[DateResult]) -> str:
    lines = [
        f"# Backfill of `{name}`: {results[0].date} to {results[-1].date}" if results else f"# Backfill of `{name}`",
        "",
        "| date | action | rows | " + " | ".join(STATUSES) + " | note |",
        "|---|---|---:|" + "---:|" * len(STATUSES) + "---|",
    ]
    for result in results:
        counts = " | ".join(f"{result.counts.get(s, 0):,}" for s in STATUSES)
        note = (result.message or "").replace("|", "/")
        lines.append(f"| {result.date} | {result.action} | {result.rows:,} | {counts} | {note} |")
    return "\n".join(lines)


def _text_table(results: list[DateResult]) -> str:
    header = ["date", "action", "rows", *STATUSES]
    rows = [[r.date, r.action, str(r.rows), *(str(r.counts.get(s, 0)) for s in STATUSES)] for r in results]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in [header, *rows])


@flow(name="volley-backfill")
async def backfill_flow(
    spec_path: str,
    start: str,
    end: str,
    concurrency: int = 1,
    base_url: str | None = None,
    results_dir: str | None = None,
) -> list[dict[str, Any]] | State:
    """Run the campaign for every date from `start` to `end` (at most `concurrency` dates at once)."""
    logger = get_run_logger()
    try:
        if concurrency < 1:
            raise SpecError("--concurrency: at least 1")
        days = dates_between(start, end)
        campaign = Campaign.load(spec_path, base_url=base_url, results_dir=results_dir)
    except InputError as exc:
        logger.error("%s", exc)
        return Failed(name=INPUT_ERROR, message=str(exc))
    gate = asyncio.Semaphore(concurrency)

    async def one(day: str) -> DateResult:
        async with gate:
            result = await _run_date(campaign, day, spec_path, base_url, results_dir)
            logger.info("%s: %s%s", day, result.action, f" ({result.message})" if result.message else "")
            return result

    results = list(await asyncio.gather(*(one(day) for day in days)))
    name = campaign.spec.name
    await acreate_table_artifact(
        table=[r.row() for r in results],
        key=f"volley-backfill-{_slug(name)}",
        description=f"Backfill of {name}, {start} to {end}",
    )
    await acreate_markdown_artifact(
        markdown=backfill_markdown(name, results),
        key=f"volley-backfill-{_slug(name)}-summary",
        description=f"Backfill of {name}",
    )
    logger.info("backfill of %s, %s to %s:\n%s", name, start, end, _text_table(results))
    rows = [asdict(r) for r in results]
    failed = [r.date for r in results if r.action == "failed"]
    if failed:
        return Failed(
            name=DATES_FAILED,
            message=f"{len(failed)} of {len(results)} dates failed: {', '.join(failed)}",
            data=rows,
        )
    return rows


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40] or "campaign"
