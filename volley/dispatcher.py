"""The dispatcher: a fixed pool of workers, a rate limiter, and the only retry loop.

Vendor-neutral: everything it knows of a vendor comes from the connector's `Resolution`s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import stamina
import stamina.instrumentation
from aiolimiter import AsyncLimiter

from volley.batches import Batch, Shard
from volley.connector import Connector, ConnectorError
from volley.outcomes import BatchOutcome, RowResults, Status
from volley.resolution import Action, Resolution, classify_transport_error
from volley.secrets import redact
from volley.transport import VendorClient

__all__ = ["DispatchPolicy", "DispatchStats", "Dispatcher"]

log = logging.getLogger("volley.dispatcher")


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    requests_per_second: float | None = None
    requests_per_hour: int | None = None
    burst: int = 1
    concurrency: int = 8
    max_attempts: int = 6
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    backoff_jitter_seconds: float = 1.0
    throttle_backoff_seconds: float | None = None
    max_elapsed_seconds: float | None = None


@dataclass(slots=True)
class DispatchStats:
    requests: int = 0
    retries: int = 0
    splits: int = 0
    throttled: int = 0
    auth_refreshes: int = 0
    throttle_pause_seconds: float = 0.0
    by_status: dict[int, int] = field(default_factory=dict)


class _TooLargeError(Exception):
    """The vendor refused the request whole for its size (nothing was applied)."""

    def __init__(self, resolution: Resolution, http_status: int | None) -> None:
        super().__init__(resolution.error_code)
        self.resolution = resolution
        self.http_status = http_status


class _RetryableError(Exception):
    """One attempt failed in a way worth another; carries what the vendor said."""

    def __init__(self, resolution: Resolution, http_status: int | None, wait: float | None = None) -> None:
        super().__init__(resolution.error_code)
        self.resolution = resolution
        self.http_status = http_status
        self.wait = wait


@dataclass(slots=True)
class _Ticket:
    """The batches of one shard still without an outcome; done once none is left and none will follow."""

    remaining: int = 0
    closed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finish_one(self) -> None:
        self.remaining -= 1
        if self.closed and self.remaining == 0:
            self.done.set()

    def close(self) -> None:
        self.closed = True
        if self.remaining == 0:
            self.done.set()


@dataclass(slots=True)
class _Tries:
    """The attempts made at one batch so far, and when the first went out."""

    count: int = 0
    submitted_at: datetime | None = None


OutcomeSink = Callable[[Batch, BatchOutcome], Awaitable[None]]
IntentSink = Callable[[Batch], Awaitable[None]]


class Dispatcher:
    """Send batches with at most `concurrency` requests in flight, paced and retried."""

    def __init__(
        self,
        connector: Connector,
        client: VendorClient,
        policy: DispatchPolicy,
        on_outcome: OutcomeSink,
        on_intent: IntentSink | None = None,
    ) -> None:
        self._connector = connector
        self._client = client
        self._policy = policy
        self._on_outcome = on_outcome
        self._on_intent = on_intent
        rate = policy.requests_per_second
        self._limiter = AsyncLimiter(policy.burst, policy.burst / rate) if rate else None
        hourly = policy.requests_per_hour
        self._hourly = AsyncLimiter(hourly, 3600) if hourly else None
        self._queue: asyncio.Queue[tuple[Batch, _Ticket] | None] = asyncio.Queue(maxsize=policy.concurrency * 4)
        self._workers: list[asyncio.Task[None]] = []
        self._resume_at = 0.0
        self._aborted: Resolution | None = None
        self._fatal: Exception | None = None
        self.stats = DispatchStats()

    async def __aenter__(self) -> Dispatcher:
        # Retries are counted in DispatchStats; stamina's default hooks would log each one.
        stamina.instrumentation.set_on_retry_hooks([])
        self._workers = [
            asyncio.create_task(self._work(), name=f"volley-worker-{i}") for i in range(self._policy.concurrency)
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for _ in self._workers:
            await self._queue.put(None)
        await asyncio.gather(*self._workers)
        if self._fatal is not None and exc_info[0] is None:
            raise self._fatal

    @property
    def aborted(self) -> Resolution | None:
        return self._aborted

    async def send_shard(self, shard: Shard) -> None:
        """Queue every batch of the shard as it comes and return once each has an outcome."""
        ticket = _Ticket()
        async for batch in shard:
            ticket.remaining += 1
            await self._queue.put((batch, ticket))
        ticket.close()
        await ticket.done.wait()

    async def _work(self) -> None:
        while (item := await self._queue.get()) is not None:
            batch, ticket = item
            try:
                settled = await self._send_with_intent(batch)
            except Exception as exc:  # a bug must not lose the batch's rows; it may have been sent
                log.exception("internal error while sending batch %s", batch.batch_id)
                doubt = Resolution(Action.IN_DOUBT, "INTERNAL_ERROR", repr(exc))
                settled = [(batch, _uniform(batch, Status.IN_DOUBT, doubt))]
            try:
                for part, outcome in settled:
                    await self._on_outcome(part, outcome)
            except Exception as exc:  # the outcome could not be recorded: stop sending, fail the run
                log.exception("cannot record the outcome of batch %s", batch.batch_id)
                self._aborted = self._aborted or Resolution(Action.ABORT, "RECORD_FAILED", redact(repr(exc)))
                self._fatal = self._fatal or exc
            finally:
                ticket.finish_one()

    async def _send_with_intent(self, batch: Batch) -> list[tuple[Batch, BatchOutcome]]:
        """Nothing goes out before its intent is on record; a run that cannot record stops."""
        if self._aborted is not None:
            return [(batch, self._not_sent(batch, 0, None))]
        if self._on_intent is not None:
            try:
                await self._on_intent(batch)
            except Exception as exc:
                log.exception("cannot record the intent of batch %s", batch.batch_id)
                self._aborted = Resolution(Action.ABORT, "LEDGER_UNAVAILABLE", redact(f"ledger: {exc!r}"))
                return [(batch, self._not_sent(batch, 0, None))]
        return await self._deliver_splitting(batch)

    async def _deliver_splitting(self, batch: Batch) -> list[tuple[Batch, BatchOutcome]]:
        try:
            return [(batch, await self._deliver(batch))]
        except _TooLargeError as exc:
            if len(batch) == 1:
                return [(batch, _uniform(batch, Status.FAILED, exc.resolution, 1, exc.http_status))]
            self.stats.splits += 1
            first, second = batch.halves()
            return [*await self._deliver_splitting(first), *await self._deliver_splitting(second)]

    def _backoff_hook(self, exc: Exception) -> bool | float:
        if isinstance(exc, _RetryableError):
            self.stats.retries += 1
            return exc.wait if exc.wait is not None else True
        return False

    async def _deliver(self, batch: Batch) -> BatchOutcome:
        # Nearly every batch goes through at the first attempt, and building stamina's retry loop
        # for each one measured a tenth of the dispatcher's time: the loop is entered only when a
        # first attempt fails, and it starts by replaying that failure, so stamina waits, counts
        # and gives up exactly as if it had made the first attempt itself.
        started = time.monotonic()
        tries = _Tries()
        try:
            return await self._attempt_paced(batch, tries)
        except _RetryableError as exc:
            failure: _RetryableError | None = exc
        policy = self._policy
        timeout = policy.max_elapsed_seconds
        try:
            async for attempt in stamina.retry_context(
                on=self._backoff_hook,
                attempts=policy.max_attempts,
                timeout=None if timeout is None else max(timeout - (time.monotonic() - started), 0.001),
                wait_initial=policy.backoff_initial_seconds,
                wait_max=policy.backoff_max_seconds,
                wait_jitter=policy.backoff_jitter_seconds,
            ):
                with attempt:
                    if failure is not None:
                        replayed, failure = failure, None
                        raise replayed
                    return await self._attempt_paced(batch, tries)
        except _RetryableError as exc:
            return _uniform(batch, Status.FAILED, exc.resolution, tries.count, exc.http_status, tries.submitted_at)
        raise AssertionError("unreachable: stamina ends with a return or the last exception")

    async def _attempt_paced(self, batch: Batch, tries: _Tries) -> BatchOutcome:
        if self._aborted is not None:
            return self._not_sent(batch, tries.count, tries.submitted_at)
        await self._wait_for_vendor()
        tries.count += 1
        tries.submitted_at = tries.submitted_at or datetime.now(UTC)
        return await self._attempt(batch, tries.count, tries.submitted_at)

    async def _wait_for_vendor(self) -> None:
        """Honour a throttle pause shared by every worker, then the pace of the rate limiter."""
        # A sleep, not an Event: another throttle answer may push the resume time further out.
        while (delay := self._resume_at - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
        if self._hourly is not None:
            await self._hourly.acquire()
        if self._limiter is not None:
            await self._limiter.acquire()

    def _pause(self, seconds: float) -> None:
        resume_at = time.monotonic() + seconds
        if resume_at > self._resume_at:
            self.stats.throttle_pause_seconds += resume_at - max(self._resume_at, time.monotonic())
            self._resume_at = resume_at

    async def _attempt(self, batch: Batch, attempts: int, submitted_at: datetime) -> BatchOutcome:
        connector = self._connector
        try:
            headers = await connector.authorize(self._client)
        except ConnectorError as exc:
            return await self._act(batch, exc.resolution, exc.http_status, {}, attempts, submitted_at)
        except httpx.TransportError as exc:  # logging in is safe to repeat
            raise _RetryableError(Resolution(Action.RETRY, "AUTH_UNREACHABLE", type(exc).__name__), None) from None
        call = connector.build_call(batch, headers)
        self.stats.requests += 1
        try:
            response = await self._client.send_call(call)
        except httpx.TransportError as exc:
            resolution = classify_transport_error(exc, connector.repeat_safe)
            return await self._act(batch, resolution, None, headers, attempts, submitted_at)
        status = response.status_code
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        resolution = connector.classify(response)
        if resolution.action is Action.SUCCESS:
            try:
                results = connector.decode(batch, response)
            except Exception as exc:  # the vendor acted on the request: never `failed`, which invites a resend
                log.exception("cannot read the answer to batch %s", batch.batch_id)
                doubt = Resolution(Action.IN_DOUBT, "UNREADABLE_ANSWER", f"answer could not be read: {exc!r}")
                return _uniform(batch, Status.IN_DOUBT, doubt, attempts, status, submitted_at)
            return BatchOutcome(results, attempts, status, submitted_at, datetime.now(UTC))
        return await self._act(batch, resolution, status, headers, attempts, submitted_at)

    async def _act(
        self,
        batch: Batch,
        resolution: Resolution,
        http_status: int | None,
        headers: Mapping[str, str],
        attempts: int,
        submitted_at: datetime,
    ) -> BatchOutcome:
        action = resolution.action
        if action is Action.IN_DOUBT and self._connector.repeat_safe:
            action = Action.RETRY
        if action is Action.RETRY:
            raise _RetryableError(resolution, http_status, resolution.wait_seconds)
        if action is Action.THROTTLE:
            wait = self._policy.throttle_backoff_seconds
            if resolution.wait_seconds is not None:
                wait = resolution.wait_seconds
            wait = wait if wait is not None else self._connector.throttle_backoff_seconds
            self.stats.throttled += 1
            self._pause(wait)
            raise _RetryableError(resolution, http_status, wait)
        if action is Action.REFRESH_AUTH:
            self.stats.auth_refreshes += 1
            try:
                await self._connector.reauthorize(self._client, headers)
            except ConnectorError as exc:
                return await self._act(batch, exc.resolution, exc.http_status, {}, attempts, submitted_at)
            raise _RetryableError(resolution, http_status, 0.0)
        if action is Action.IN_DOUBT:
            return _uniform(batch, Status.IN_DOUBT, resolution, attempts, http_status, submitted_at)
        if action is Action.SPLIT:
            raise _TooLargeError(resolution, http_status)
        if action is Action.ABORT and self._aborted is None:
            self._aborted = resolution
            log.error("stopping the run: %s", redact(resolution.message or resolution.error_code or "aborted"))
        return _uniform(batch, Status.FAILED, resolution, attempts, http_status, submitted_at)

    def _not_sent(self, batch: Batch, attempts: int, submitted_at: datetime | None) -> BatchOutcome:
        reason = self._aborted or Resolution(Action.ABORT)
        message = f"not sent: the run stopped after {reason.error_code}"
        return _uniform(
            batch, Status.FAILED, Resolution(Action.ABORT, reason.error_code, message), attempts, None, submitted_at
        )


def _uniform(
    batch: Batch,
    status: Status,
    resolution: Resolution,
    attempts: int = 0,
    http_status: int | None = None,
    submitted_at: datetime | None = None,
) -> BatchOutcome:
    message = redact(resolution.message) if resolution.message else None
    results = RowResults.uniform(len(batch), status, resolution.error_code, message)
    return BatchOutcome(results, attempts, http_status, submitted_at, datetime.now(UTC))
