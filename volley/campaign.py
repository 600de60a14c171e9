"""A campaign and one run of it: the engine the Prefect flow and the CLI drive.

`Campaign.load` turns a spec file into a connector and a source (all one-line errors);
`CampaignRun` plans, dispatches and records outcomes for one execution.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from pydantic import ValidationError

from connectors import connector_class
from volley import progress
from volley.batches import Batch
from volley.connector import NOT_RECEIVED, RECIPIENT_KEY, Connector, LookUpAnswer
from volley.crashpoints import crash_point
from volley.dispatcher import Dispatcher, DispatchPolicy
from volley.errors import SourceError, SpecError
from volley.ledger import UNANSWERED, Ledger, keys_json, open_ledger
from volley.outcomes import BatchOutcome, OutcomeWriter, RunIdentity, Status, read_outcomes
from volley.planning import Planner, SlicePlan
from volley.sources import AudienceSource, open_source
from volley.spec import CampaignSpec, format_validation_error, read_spec
from volley.summary import RunSummary, status_counts, top_errors
from volley.transport import make_client

__all__ = ["Campaign", "CampaignRun", "DryRunReport", "RunOptions", "check_run_key", "default_run_key", "dry_run"]

_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")
_SETTLED_BY_LOOK_UP = frozenset({Status.ACCEPTED, Status.REJECTED, Status.FAILED})


def default_run_key() -> str:
    """Today's date (UTC): a daily campaign re-run the same day sends nothing twice."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class Campaign:
    spec: CampaignSpec
    spec_path: Path
    connector: Connector
    source: AudienceSource
    results_dir: Path

    @classmethod
    def load(
        cls,
        spec_path: str | Path,
        base_url: str | None = None,
        results_dir: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Campaign:
        """`overrides` are laid over the spec file before validation (e.g. another source for a cancel run)."""
        path = Path(spec_path)
        spec = read_spec(path, overrides)
        cls_ = connector_class(spec.vendor)
        connection = dict(spec.connection)
        if base_url is not None:
            connection["base_url"] = base_url
        try:
            params = cls_.params_model.model_validate(spec.vendor_params)
        except ValidationError as exc:
            raise SpecError(format_validation_error(str(path), exc, "vendor_params")) from None
        try:
            conn = cls_.connection_model.model_validate(connection)
        except ValidationError as exc:
            raise SpecError(format_validation_error(str(path), exc, "connection")) from None
        connector = cls_(params, conn, spec.key)
        connector.campaign_name = spec.name
        max_rows = connector.batch_limits()[1]
        if spec.batch_size is not None and spec.batch_size > max_rows:
            raise SpecError(f"{path}: batch_size: {spec.vendor} takes at most {max_rows} recipients a request")
        source = open_source(spec.source)
        return cls(spec, path, connector, source, Path(results_dir or spec.results_dir))

    @property
    def batch_rows(self) -> int:
        return self.spec.batch_size or self.connector.batch_limits()[0]

    @property
    def requests_per_second(self) -> float | None:
        """The spec's pace, else the vendor's published default."""
        return self.spec.limits.requests_per_second or self.connector.default_requests_per_second

    @property
    def requests_per_hour(self) -> int | None:
        return self.spec.limits.requests_per_hour or self.connector.default_requests_per_hour

    def policy(self) -> DispatchPolicy:
        limits = self.spec.limits
        return DispatchPolicy(
            requests_per_second=self.requests_per_second,
            requests_per_hour=self.requests_per_hour,
            burst=limits.burst or max(1, round((self.requests_per_second or 0) / 10)),
            concurrency=limits.concurrency,
            max_attempts=limits.max_attempts,
            backoff_initial_seconds=limits.backoff_initial_seconds,
            backoff_max_seconds=limits.backoff_max_seconds,
            backoff_jitter_seconds=limits.backoff_jitter_seconds,
            throttle_backoff_seconds=limits.throttle_backoff_seconds,
            max_elapsed_seconds=limits.max_elapsed_seconds,
        )

    def preflight(self) -> None:
        """Everything that can be checked before sending: the source, the columns the spec names."""
        self.source.preflight(self.spec.key)
        schema = self.source.schema()
        missing = [c for c in self.connector.required_columns() if c not in schema]
        if missing:
            raise SourceError(
                f"{self.source.description}: column {missing[0]!r} named in vendor_params is not in the audience"
            )
        empty = pl.DataFrame(schema=schema).with_columns(pl.lit(None, dtype=pl.String).alias(RECIPIENT_KEY))
        try:
            self.connector.prepare(empty)
        except TypeError as exc:
            raise SourceError(f"{self.source.description}: {exc}") from None

    def check_quota(self, run_key: str, history: pl.DataFrame | None = None) -> str | None:
        """With an hourly quota: how long the run takes at it; refuses up front when the spec says so."""
        hourly = self.requests_per_hour
        if hourly is None:
            return None
        requests = dry_run(self, run_key, history).batches
        arithmetic = f"{requests:,} requests at {hourly:,} an hour take {requests / hourly:.2f} h"
        if requests > hourly and self.spec.limits.quota_policy == "refuse":
            raise SpecError(
                f"{self.spec_path}: limits.requests_per_hour: {arithmetic}, more than one hour's quota "
                "(quota_policy: pace spreads the run over hours)"
            )
        return arithmetic

    def run_key_dir(self, run_key: str) -> Path:
        return self.results_dir / self.spec.name / run_key

    def planner(self, run_key: str, history: pl.DataFrame | None = None, options: RunOptions | None = None) -> Planner:
        options = options or RunOptions()
        planner = Planner(
            connector=self.connector,
            key=self.spec.key,
            run_key=run_key,
            batch_rows=self.batch_rows,
            source=self.source.description,
            retry_failed=options.retry_failed,
            resend_in_doubt=options.resend_in_doubt,
        )
        if history is not None:
            planner.history = history
        return planner

    def open_ledger(self) -> Ledger:
        spec = self.spec.ledger
        password = spec.password.resolve("ledger.password").get_secret_value() if spec.password else None
        return open_ledger(spec.url, self.results_dir / self.spec.name / "ledger.sqlite", password)

    async def history(self, run_key: str) -> pl.DataFrame:
        """What earlier runs under this run key sent (read only; no claim)."""
        ledger = self.open_ledger()
        try:
            return await ledger.history(self.spec.name, run_key)
        finally:
            await ledger.close()


@dataclass(frozen=True)
class RunOptions:
    """What a re-run under the same run key may send again."""

    retry_failed: bool = False  # rows rejected or given up on earlier
    resend_in_doubt: bool = False  # rows sent earlier whose answer never came


def check_run_key(run_key: str) -> str:
    if not _RUN_KEY.match(run_key):
        raise SpecError(f"--run-key {run_key!r}: use letters, digits and . _ = - (at most 128)")
    return run_key


@dataclass
class DryRunReport:
    rows: int
    counts: dict[str, int]
    to_send: int
    batches: int
    requests_per_second: float | None
    concurrency: int

    @property
    def implied_seconds(self) -> float | None:
        return self.batches / self.requests_per_second if self.requests_per_second else None


def dry_run(
    campaign: Campaign, run_key: str, history: pl.DataFrame | None = None, options: RunOptions | None = None
) -> DryRunReport:
    """Validate and plan the whole audience; send nothing, write nothing."""
    rows = to_send = batches = 0
    counts: dict[str, int] = {}
    with campaign.planner(run_key, history, options) as planner:
        for raw in campaign.source.iter_slices():
            plan = planner.plan_slice(raw)
            rows += plan.rows
            batches += len(plan.batches)
            to_send += plan.rows_to_send
            for status, code, n in plan.decided.group_by("status", "error_code").len().iter_rows():
                counts[f"{status}: {code}"] = counts.get(f"{status}: {code}", 0) + n
    return DryRunReport(rows, counts, to_send, batches, campaign.requests_per_second, campaign.spec.limits.concurrency)


_FIRST_SLICE_ROWS = 10_000


def _quick_start(slices: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The first slice cut in pieces of 10k, 20k, 40k... rows: sending starts once the first piece
    is planned, and each next piece is planned while the one before it is sent."""
    first = next(slices, None)
    if first is None:
        return
    size = _FIRST_SLICE_ROWS
    while first.height > 2 * size:
        yield first.slice(0, size)
        first = first.slice(size)
        size *= 2
    yield first
    yield from slices


@dataclass
class CampaignRun:
    """One execution: its identity, its claim on the run key, its ledger and outcome writer."""

    campaign: Campaign
    identity: RunIdentity
    run_dir: Path
    writer: OutcomeWriter
    planner: Planner
    ledger: Ledger
    flow_run_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    rows: int = 0
    batches: int = 0
    dispatcher: Dispatcher | None = None
    stopped_by: str | None = None

    @classmethod
    async def start(
        cls,
        campaign: Campaign,
        run_key: str | None = None,
        flow_run_id: str | None = None,
        options: RunOptions | None = None,
    ) -> CampaignRun:
        """Claim the run key (one process at a time) and read what earlier runs under it sent."""
        key = check_run_key(run_key or default_run_key())
        identity = RunIdentity(_new_run_id(), key, campaign.spec.name, campaign.spec.vendor)
        ledger = campaign.open_ledger()
        try:
            await ledger.claim(identity)
            history = await ledger.history(campaign.spec.name, key)
        except BaseException:
            await ledger.close()
            raise
        run_dir = campaign.run_key_dir(key) / identity.run_id
        writer = OutcomeWriter(run_dir, identity)
        planner = campaign.planner(key, history, options)
        return cls(campaign, identity, run_dir, writer, planner, ledger, flow_run_id)

    async def settle_in_doubt(self, chunk: int = 100) -> int:
        """Where the vendor can be asked, settle earlier rows in doubt before deciding what to send.

        Rows it accepted, rejected or failed are recorded in the ledger under this run (the
        planner skips them). Rows it has no record of (`NOT_RECEIVED`: the request never
        arrived) leave this run's history, so they are sent like rows never sent; nothing is
        recorded for them, so if this run stops before sending them the next run asks again.
        Keys are asked per earlier run, with when that run started. Returns how many were settled.
        """
        connector = self.campaign.connector
        history = self.planner.history
        doubtful = history.filter(pl.col("status").is_in([Status.IN_DOUBT.value, UNANSWERED]))
        if not connector.supports_look_up or doubtful.is_empty():
            return 0
        limits = self.campaign.spec.limits
        starts = await self.ledger.run_starts(self.identity.campaign, self.identity.run_key)
        answers: dict[str, LookUpAnswer] = {}
        async with make_client(limits.concurrency, limits.timeout_seconds, limits.connect_timeout_seconds) as client:
            for (run_id,), group in doubtful.group_by("run_id", maintain_order=True):
                keys = group[RECIPIENT_KEY].to_list()
                since = starts.get(str(run_id))
                for start in range(0, len(keys), chunk):
                    answers.update(await connector.look_up(client, keys[start : start + chunk], since))
        settled = {key: Status(answer) for key, answer in answers.items() if answer in _SETTLED_BY_LOOK_UP}
        not_received = [key for key, answer in answers.items() if answer == NOT_RECEIVED]
        if settled:
            statuses = [s.value for s in settled.values()]
            await self.ledger.settle(self.identity, "look-up", keys_json(list(settled)), statuses)
            self.planner.history = await self.ledger.history(self.identity.campaign, self.identity.run_key)
        if not_received:
            self.planner.history = self.planner.history.filter(~pl.col(RECIPIENT_KEY).is_in(not_received))
        return len(settled) + len(not_received)

    def plan_slices(self) -> Iterator[SlicePlan]:
        """Plan the audience slice by slice; rows settled before dispatch are recorded at once."""
        for raw in _quick_start(self.campaign.source.iter_slices()):
            plan = self.planner.plan_slice(raw)
            self.rows += plan.rows
            self.batches += len(plan.batches)
            self.writer.write_frame(plan.decided)
            progress.emit("planned", plan.rows)
            progress.emit("settled", plan.decided.height)
            crash_point("planning")
            yield plan
        self.writer.compact_from_now()  # on the planner's thread, free from now on

    async def intend(self, batch: Batch) -> None:
        await self.ledger.intend(self.identity, batch.batch_id, batch.keys_json)
        crash_point("dispatch")

    async def record(self, batch: Batch, outcome: BatchOutcome) -> None:
        await self.ledger.settle(self.identity, batch.batch_id, batch.keys_json, outcome.results.status)
        self.writer.write_batch(batch, outcome)
        progress.emit("sent", len(batch))
        if self.writer.flush_due:  # build and write the part off the loop: the sends go on
            await asyncio.to_thread(self.writer.write_part, self.writer.detach())

    @asynccontextmanager
    async def dispatching(self, transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[Dispatcher]:
        limits = self.campaign.spec.limits
        client = make_client(limits.concurrency, limits.timeout_seconds, limits.connect_timeout_seconds, transport)
        dispatcher = Dispatcher(self.campaign.connector, client, self.campaign.policy(), self.record, self.intend)
        async with client, dispatcher:
            self.dispatcher = dispatcher
            yield dispatcher

    async def finish(self) -> RunSummary:
        """Compact the outcomes, check the invariant, write summary.json, release the run key."""
        path = self.writer.finalize(self.rows)
        summary = self._summary(pl.scan_parquet(path), str(path), complete=True)
        await self.close(complete=True)
        return summary

    async def abandon(self, reason: str) -> RunSummary:
        """The run stopped early (the source failed mid-way): keep every outcome recorded so far."""
        self.writer.flush()
        self.writer.stop_compacting()
        self.stopped_by = reason
        summary = self._summary(read_outcomes(self.writer.parts_dir), str(self.writer.parts_dir), complete=False)
        await self.close(complete=False)
        return summary

    async def close(self, complete: bool = False) -> None:
        self.planner.close()
        await self.ledger.finish(self.identity, complete)
        await self.ledger.close()

    def _summary(self, outcomes: pl.DataFrame | pl.LazyFrame, path: str, complete: bool) -> RunSummary:
        stats = self.dispatcher.stats if self.dispatcher else None
        aborted = self.dispatcher.aborted if self.dispatcher else None
        summary = RunSummary(
            run_id=self.identity.run_id,
            run_key=self.identity.run_key,
            campaign=self.identity.campaign,
            vendor=self.identity.vendor,
            rows=self.rows,
            counts=status_counts(outcomes),
            outcome_path=path,
            elapsed_seconds=round(time.monotonic() - self.started, 3),
            requests=stats.requests if stats else 0,
            retries=stats.retries if stats else 0,
            throttled=stats.throttled if stats else 0,
            batches=self.batches,
            aborted=self.stopped_by or (aborted.message or aborted.error_code if aborted else None),
            complete=complete,
            flow_run_id=self.flow_run_id,
            errors=top_errors(outcomes),
        )
        summary.write(self.run_dir)
        return summary
