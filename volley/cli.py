"""The command line: `volley run`, `volley sim`, `volley report`, `volley cancel` (a stable contract)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from volley import progress
from volley.errors import InputError
from volley.secrets import redact

T = TypeVar("T")

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

    from volley.campaign import Campaign, RunOptions

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Volley: bulk journey triggers, one outcome row per recipient.",
)
console = Console(stderr=False)
errors = Console(stderr=True)


def _prefect_defaults() -> None:
    """Settings the embedded Prefect server needs on a small machine with no network."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _orchestrate(work: Coroutine[Any, Any, T]) -> T:
    """Run a flow (or a Prefect call) to completion; an infrastructure failure is one line.

    Set VOLLEY_DEBUG=1 for the traceback.
    """
    try:
        # uvloop: the run waits on this loop (one core, busy throughout a large run); 1M-row
        # `volley run` measured 6-25% more recipients/s than on the default loop (alternating runs).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(work)
    except (KeyboardInterrupt, typer.Exit):
        raise
    except Exception as exc:
        if os.environ.get("VOLLEY_DEBUG"):
            raise
        words = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {words[0]}" if words else type(exc).__name__
        raise _fail(f"the run could not complete: {detail} (VOLLEY_DEBUG=1 shows the traceback)", code=1) from None


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {redact(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="campaign spec (YAML)")],
    run_key: Annotated[str | None, typer.Option(help="idempotency key; default: today's date (UTC)")] = None,
    base_url: Annotated[str | None, typer.Option(help="override the vendor base URL of the spec")] = None,
    results_dir: Annotated[str | None, typer.Option(help="where outcomes go; default: the spec's")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and plan; send nothing")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="send again rows refused or given up on under this run key")
    ] = False,
    resend_in_doubt: Annotated[
        bool, typer.Option("--resend-in-doubt", help="send again rows whose answer never came (may duplicate)")
    ] = False,
    ledger_url: Annotated[
        str | None, typer.Option(help="postgresql://... for a ledger shared between machines")
    ] = None,
    run_date: Annotated[
        str | None, typer.Option(help="a SQL source's :run_date (YYYY-MM-DD); default: the run key if a date")
    ] = None,
) -> None:
    """Run a campaign: validate, batch, send, and record one outcome per audience row."""
    from volley.campaign import RunOptions, default_run_key
    from volley.warehouse import with_run_date

    _, key = _prepare_campaign(
        spec,
        base_url=base_url,
        results_dir=results_dir,
        overrides=lambda: with_run_date({"ledger": {"url": ledger_url}} if ledger_url else None, run_date, run_key),
        run_key=run_key or default_run_key(),
        dry_run=dry_run,
        options=RunOptions(retry_failed=retry_failed, resend_in_doubt=resend_in_doubt),
        check_quota=True,
    )
    _prefect_defaults()
    from flows.campaign import campaign_flow

    _run_flow(
        campaign_flow(  # type: ignore[arg-type]
            spec_path=str(spec),
            run_key=key,
            base_url=base_url,
            results_dir=results_dir,
            retry_failed=retry_failed,
            resend_in_doubt=resend_in_doubt,
            ledger_url=ledger_url,
            run_date=run_date,
            return_state=True,
        ),
        "the run",
    )


def _prepare_campaign(
    spec: Path,
    *,
    base_url: str | None,
    results_dir: str | None,
    overrides: Callable[[], Mapping[str, Any] | None],
    run_key: str | None = None,
    dry_run: bool = False,
    options: RunOptions | None = None,
    check_quota: bool = False,
) -> tuple[Campaign, str | None]:
    """Load the spec (with `overrides()`), preflight its source and check `run_key`, before anything is sent.

    Unusable input exits 2 with one line. With `check_quota`, an hourly quota the run would break is
    refused here; a dry run prints its plan and exits 0. Returns the campaign and the checked run key
    (None when no run key is given: a backfill has one per date).
    """
    from volley.campaign import Campaign, check_run_key
    from volley.campaign import dry_run as plan_only

    try:
        campaign = Campaign.load(spec, base_url=base_url, results_dir=results_dir, overrides=overrides())
        campaign.preflight()
        if run_key is None:
            return campaign, None
        key = check_run_key(run_key)
        history = None
        if dry_run or (check_quota and campaign.requests_per_hour):
            history = asyncio.run(campaign.history(key))
            if check_quota:
                campaign.check_quota(key, history)
        if dry_run:
            _print_dry_run(plan_only(campaign, key, history, options))
            raise typer.Exit()
    except InputError as exc:
        raise _fail(str(exc)) from None
    return campaign, key


def _run_flow(work: Coroutine[Any, Any, Any], what: str) -> None:
    """Run a campaign or cancel flow under the progress bar and print its summary; `what` names it in errors."""
    from flows.campaign import INPUT_ERROR

    with _progress_bar():
        state: State[Any] = _orchestrate(work)
    if state.is_completed():
        _print_summary(state.result())
        return
    if state.name == INPUT_ERROR:
        raise _fail(state.message or f"{what} could not start")
    raise _fail(f"{what} failed: {state.message}", code=1)


class _progress_bar:  # noqa: N801 - used as a context manager, reads like a function
    def __enter__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("recipients"),
            TimeElapsedColumn(),
            console=errors,
            transient=False,
            disable=not errors.is_terminal,
        )
        self.task = self.bar.add_task("send", total=0)
        self.bar.start()

        def on_event(kind: str, rows: int) -> None:
            if kind == "planned":
                self.bar.update(self.task, total=(self.bar.tasks[0].total or 0) + rows)
            else:
                self.bar.advance(self.task, rows)

        self.stop_listening = progress.listen(on_event)

    def __exit__(self, *exc_info: object) -> None:
        self.stop_listening()
        self.bar.stop()


def _print_dry_run(report: object) -> None:
    from volley.campaign import DryRunReport

    assert isinstance(report, DryRunReport)
    table = Table(title="dry run: nothing sent", show_header=False)
    table.add_row("rows", f"{report.rows:,}")
    for reason, n in sorted(report.counts.items()):
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("to send", f"{report.to_send:,}")
    table.add_row("requests", f"{report.batches:,}")
    if report.implied_seconds is not None:
        table.add_row("time at the rate limit", f"{report.implied_seconds:,.1f} s at {report.requests_per_second}/s")
    else:
        table.add_row("time at the rate limit", "no rate limit set")
    console.print(table)


def _print_summary(summary: dict[str, object]) -> None:
    table = Table(title=f"{summary['campaign']} ({summary['vendor']}) run key {summary['run_key']}")
    table.add_column("status")
    table.add_column("rows", justify="right")
    counts = summary["counts"]
    assert isinstance(counts, dict)
    for status, n in sorted(counts.items()):
        table.add_row(status, f"{n:,}")
    console.print(table)
    console.print(
        f"elapsed {summary['elapsed_seconds']} s, {summary['requests']} requests, "
        f"{summary['recipients_per_second']} recipients/s"
    )
    if summary.get("aborted"):
        console.print(f"[bold yellow]stopped early:[/] {summary['aborted']}")
    console.print(f"outcomes: {summary['outcome_path']}")


@app.command()
def sim(
    port: Annotated[int, typer.Option(help="0 picks a free port")] = 8900,
    latency_ms: Annotated[float, typer.Option(help="added to every answer")] = 0.0,
    rate_limit: Annotated[float | None, typer.Option(help="requests per second per vendor")] = None,
    fault_rate: Annotated[float | None, typer.Option(help="spread over 5xx, timeouts and resets")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    log: Annotated[Path | None, typer.Option(help="NDJSON log of every request and recipient")] = None,
    fault: Annotated[list[str] | None, typer.Option(help="KIND=P, KIND in 5xx, timeout, reset, throttle")] = None,
    hold_seconds: Annotated[float, typer.Option(help="how long a timeout fault withholds the answer")] = 30.0,
    token_ttl: Annotated[float | None, typer.Option(help="Responsys token lifetime in seconds")] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
) -> None:
    """Serve every vendor simulator on one port, each under its own path prefix."""
    from sim.config import config_from_options
    from sim.server import serve

    try:
        config = config_from_options(
            host=host,
            port=port,
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            fault_rate=fault_rate,
            faults=fault or (),
            seed=seed,
            log_path=log,
            hold_seconds=hold_seconds,
            token_ttl=token_ttl,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    serve(config)


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="a run directory, a results directory or a Parquet file")],
) -> None:
    """Summarize outcomes: counts per status and the most frequent errors."""
    from volley.outcomes import read_outcomes
    from volley.summary import status_counts, top_errors

    if not path.exists():
        raise _fail(f"{path}: no such file or directory")
    outcomes = read_outcomes(path)
    if outcomes.height == 0:
        raise _fail(f"{path}: no outcomes found")
    runs = outcomes.group_by("campaign", "run_key", "run_id").len().sort("run_id")
    table = Table(title=f"{outcomes.height:,} outcome rows in {runs.height} run(s)")
    for column in ("campaign", "run_key", "run_id", "rows"):
        table.add_column(column)
    for campaign, run_key, run_id, n in runs.iter_rows():
        table.add_row(campaign, run_key, run_id, f"{n:,}")
    console.print(table)
    counts = Table(title="by status")
    counts.add_column("status")
    counts.add_column("rows", justify="right")
    for status, n in status_counts(outcomes).items():
        counts.add_row(status, f"{n:,}")
    console.print(counts)
    problems = top_errors(outcomes)
    if problems:
        table = Table(title="most frequent errors")
        for column in ("status", "error_code", "rows"):
            table.add_column(column)
        for problem in problems:
            table.add_row(problem["status"], str(problem["error_code"]), f"{problem['rows']:,}")
        console.print(table)


@app.command()
def cancel(
    spec: Annotated[Path, typer.Argument(help="the trigger campaign's spec (YAML): its connection and journey")],
    instances: Annotated[
        Path, typer.Option(help="instances to cancel: a journey_instance_id column (CSV, Parquet or NDJSON)")
    ],
    run_key: Annotated[str | None, typer.Option(help="idempotency key; default: cancel-<today's date (UTC)>")] = None,
    base_url: Annotated[str | None, typer.Option(help="override the vendor base URL of the spec")] = None,
    results_dir: Annotated[str | None, typer.Option(help="where outcomes go; default: the spec's")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and plan; send nothing")] = False,
) -> None:
    """Cancel journey instances (MedChat): one outcome row per listed instance, recorded as `run` does."""
    _prefect_defaults()
    from flows.cancel import cancel_flow, cancel_overrides, default_cancel_run_key

    _, key = _prepare_campaign(
        spec,
        base_url=base_url,
        results_dir=results_dir,
        overrides=lambda: cancel_overrides(spec, instances),
        run_key=run_key or default_cancel_run_key(),
        dry_run=dry_run,
    )
    _run_flow(
        cancel_flow(  # type: ignore[arg-type]
            spec_path=str(spec),
            instances=str(instances),
            run_key=key,
            base_url=base_url,
            results_dir=results_dir,
            return_state=True,
        ),
        "the cancel run",
    )


@app.command()
def backfill(
    spec: Annotated[Path, typer.Argument(help="campaign spec (YAML)")],
    start: Annotated[str, typer.Option(help="first date, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last date, YYYY-MM-DD (included)")],
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="dates run at once")] = 1,
    base_url: Annotated[str | None, typer.Option(help="override the vendor base URL of the spec")] = None,
    results_dir: Annotated[str | None, typer.Option(help="where outcomes go; default: the spec's")] = None,
) -> None:
    """Run a campaign once per date (run key and :run_date = the date); completed dates are skipped."""
    from flows.backfill import dates_between
    from volley.warehouse import with_run_date

    # an unusable spec, source or date range stops here, before any date runs
    campaign, _ = _prepare_campaign(
        spec,
        base_url=base_url,
        results_dir=results_dir,
        overrides=lambda: with_run_date(None, dates_between(start, end)[0], None),
    )
    _prefect_defaults()
    from flows.backfill import DATES_FAILED, backfill_flow
    from flows.campaign import INPUT_ERROR

    state: State[Any] = _orchestrate(
        backfill_flow(  # type: ignore[arg-type]
            spec_path=str(spec),
            start=start,
            end=end,
            concurrency=concurrency,
            base_url=base_url,
            results_dir=results_dir,
            return_state=True,
        )
    )
    if state.name == INPUT_ERROR:
        raise _fail(state.message or "the backfill could not start")
    if state.is_completed() or state.name == DATES_FAILED:
        _print_backfill(campaign.spec.name, state.result(raise_on_failure=False))
    if not state.is_completed():
        raise _fail(f"the backfill failed: {state.message}", code=1)


def _print_backfill(name: str, rows: object) -> None:
    from volley.outcomes import Status

    assert isinstance(rows, list)
    seen = {status for row in rows for status, n in (row.get("counts") or {}).items() if n}
    statuses = [s.value for s in Status if s.value in seen or s is Status.ACCEPTED]  # the columns that say something
    table = Table(title=f"backfill of {name}")
    for column in ("date", "action", "rows", *statuses):
        table.add_column(column, justify="left" if column in ("date", "action") else "right", no_wrap=True)
    for row in rows:
        counts = row.get("counts") or {}
        table.add_row(row["date"], row["action"], f"{row['rows']:,}", *(f"{counts.get(s, 0):,}" for s in statuses))
    console.print(table)
    for row in rows:
        if row["action"] == "failed":
            console.print(f"[bold red]{row['date']}:[/] {redact(row.get('message') or 'failed')}", highlight=False)


@app.command()
def serve(
    campaign_dir: Annotated[Path, typer.Argument(help="directory of campaign specs; those with a schedule are served")],
    base_url: Annotated[str | None, typer.Option(help="override the vendor base URL of every spec")] = None,
    results_dir: Annotated[str | None, typer.Option(help="where outcomes go; default: each spec's")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="runs at once; default: no limit")] = None,
) -> None:
    """Serve every scheduled campaign of a directory as a Prefect deployment (until stopped)."""
    _prefect_defaults()
    from flows.schedules import campaign_deployments, has_prefect_server, scheduled_campaigns, serve_campaigns

    try:
        campaigns = scheduled_campaigns(campaign_dir)
    except InputError as exc:
        raise _fail(str(exc)) from None
    server = has_prefect_server()
    if not server:
        errors.print(
            "note: no Prefect server configured (PREFECT_API_URL): the schedules live on a temporary "
            "server, as long as this process",
            highlight=False,
        )

    async def go() -> None:
        deployments = await campaign_deployments(campaigns, base_url=base_url, results_dir=results_dir)
        for campaign in campaigns:
            schedule = campaign.schedule
            console.print(f"serving {campaign.spec.name}: {schedule.cron} ({schedule.timezone})", highlight=False)
        await serve_campaigns(deployments, limit=limit, pause_on_shutdown=server)

    try:
        _orchestrate(go())
    except KeyboardInterrupt:
        console.print("stopped" + ("; the schedules are paused" if server else ""))


@app.command()
def deploy(
    campaign_dir: Annotated[Path, typer.Argument(help="directory of campaign specs; those with a schedule deploy")],
    work_pool: Annotated[str, typer.Option(help="the Prefect work pool whose workers run the campaigns")],
    base_url: Annotated[str | None, typer.Option(help="override the vendor base URL of every spec")] = None,
    results_dir: Annotated[str | None, typer.Option(help="where outcomes go; default: each spec's")] = None,
) -> None:
    """Register every scheduled campaign of a directory with a work pool of a Prefect server."""
    _prefect_defaults()
    from flows.schedules import campaign_deployments, deploy_campaigns, scheduled_campaigns

    try:
        campaigns = scheduled_campaigns(campaign_dir)
    except InputError as exc:
        raise _fail(str(exc)) from None

    async def go() -> list[str]:
        deployments = await campaign_deployments(
            campaigns, base_url=base_url, results_dir=results_dir, working_dir=Path.cwd()
        )
        return [str(i) for i in await deploy_campaigns(deployments, work_pool)]

    try:
        ids = _orchestrate(go())
    except InputError as exc:
        raise _fail(str(exc)) from None
    for campaign, deployment_id in zip(campaigns, ids, strict=True):
        console.print(
            f"deployed {campaign.spec.name} to {work_pool}: {campaign.schedule.cron} ({campaign.schedule.timezone}), "
            f"id {deployment_id}",
            highlight=False,
        )
    console.print(f"start a worker: prefect worker start --pool {work_pool}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
