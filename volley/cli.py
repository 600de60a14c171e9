"""The command line: `volley run`, `volley sim`, `volley report` (a stable contract)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from volley import progress
from volley.errors import InputError
from volley.secrets import redact

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

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
) -> None:
    """Run a campaign: validate, batch, send, and record one outcome per audience row."""
    from volley.campaign import Campaign, check_run_key, default_run_key
    from volley.campaign import dry_run as plan_only

    try:
        campaign = Campaign.load(spec, base_url=base_url, results_dir=results_dir)
        campaign.preflight()
        key = check_run_key(run_key or default_run_key())
        campaign.check_quota(key)
        if dry_run:
            _print_dry_run(plan_only(campaign, key))
            return
    except InputError as exc:
        raise _fail(str(exc)) from None
    _prefect_defaults()
    from flows.campaign import INPUT_ERROR, campaign_flow

    with _progress_bar():
        state: State[Any] = asyncio.run(
            campaign_flow(  # type: ignore[arg-type]
                spec_path=str(spec), run_key=key, base_url=base_url, results_dir=results_dir, return_state=True
            )
        )
    if state.is_completed():
        _print_summary(state.result())
        return
    if state.name == INPUT_ERROR:
        raise _fail(state.message or "the run could not start")
    raise _fail(f"the run failed: {state.message}", code=1)


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


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
