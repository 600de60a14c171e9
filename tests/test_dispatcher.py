"""The dispatcher: the only retry loop, pacing, throttle pauses, and `in_doubt` instead of blind resends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import ClassVar

import aiohttp
import httpx
import polars as pl
import pytest
from pandera.api.polars.model import DataFrameModel

from volley.batches import Batch, Shard
from volley.connector import Call, ConnectionParams, Connector, ConnectorError, VendorParams
from volley.dispatcher import Dispatcher, DispatchPolicy
from volley.outcomes import BatchOutcome, RowResults, Status
from volley.resolution import Action, Resolution
from volley.transport import VendorClient


class FakeConnector(Connector):
    """A vendor that accepts every row of a 2xx answer."""

    name: ClassVar[str] = "fake"
    params_model = VendorParams
    connection_model = ConnectionParams
    max_batch_rows: ClassVar[int] = 10
    default_batch_rows: ClassVar[int] = 10

    def __init__(self, repeat_safe: bool = False) -> None:
        super().__init__(VendorParams(), ConnectionParams(base_url="http://vendor.test"), "key")
        self.repeat_safe = repeat_safe  # type: ignore[misc]
        self.token = "t1"
        self.reauthorized = 0

    def audience_model(self) -> type[DataFrameModel]:
        raise NotImplementedError

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame

    def encode_rows(self, frame: pl.DataFrame) -> pl.Series:
        return pl.Series([], dtype=pl.String)

    def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
        return Call("POST", f"{self.base_url}/send", content=b"[]", headers={**auth_headers, "X-Batch": batch.batch_id})

    def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
        return RowResults.uniform(len(batch), Status.ACCEPTED, vendor_ref=response.headers.get("x-ref"))

    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        return {"Authorization": self.token}

    async def reauthorize(self, client: httpx.AsyncClient, stale: Mapping[str, str]) -> None:
        self.reauthorized += 1
        self.token = f"t{self.reauthorized + 1}"


Handler = Callable[[httpx.Request], httpx.Response]
FAST = DispatchPolicy(
    concurrency=3, max_attempts=4, backoff_initial_seconds=0.01, backoff_max_seconds=0.02, backoff_jitter_seconds=0.0
)


def batches(n: int, rows: int = 2) -> list[Batch]:
    return [
        Batch.of(f"b{i}", list(range(i * rows, (i + 1) * rows)), [f"k{i}-{j}" for j in range(rows)], ["{}"] * rows)
        for i in range(n)
    ]


async def dispatch(
    handler: Handler,
    work: list[Batch],
    policy: DispatchPolicy = FAST,
    connector: FakeConnector | None = None,
) -> tuple[dict[str, BatchOutcome], Dispatcher]:
    outcomes: dict[str, BatchOutcome] = {}

    async def sink(batch: Batch, outcome: BatchOutcome) -> None:
        assert batch.batch_id not in outcomes, "one outcome per batch"
        outcomes[batch.batch_id] = outcome

    async with VendorClient(transport=httpx.MockTransport(handler)) as client:
        dispatcher = Dispatcher(connector or FakeConnector(), client, policy, sink)
        async with dispatcher:
            await dispatcher.send_shard(Shard.of("s0", work))
    assert set(outcomes) == {b.batch_id for b in work}
    return outcomes, dispatcher


class Script:
    """Answers each batch from a per-batch script of responses or exceptions; logs every request."""

    def __init__(self, *steps: httpx.Response | Exception, default: httpx.Response | None = None) -> None:
        self.steps = list(steps)
        self.default = default or httpx.Response(200, headers={"x-ref": "ok"})
        self.seen: dict[str, int] = {}
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        batch = request.headers["X-Batch"]
        attempt = self.seen.get(batch, 0)
        self.seen[batch] = attempt + 1
        self.times.append(time.monotonic())
        step = self.steps[attempt] if attempt < len(self.steps) else self.default
        if isinstance(step, Exception):
            raise step
        return step


async def test_a_fed_shard_is_sent_as_its_batches_come_and_ends_once_closed_and_all_are_answered() -> None:
    work = batches(6)
    outcomes: list[str] = []
    first_three = asyncio.Event()
    async with VendorClient(transport=httpx.MockTransport(Script())) as client:

        async def sink(batch: Batch, outcome: BatchOutcome) -> None:
            outcomes.append(batch.batch_id)
            if len(outcomes) == 3:
                first_three.set()

        async with Dispatcher(FakeConnector(), client, FAST, sink) as dispatcher:
            feed = Shard("shard-00000", capacity=6, backlog=2)
            sending = asyncio.ensure_future(dispatcher.send_shard(feed))
            for batch in work[:3]:
                await feed.put(batch)
            await asyncio.wait_for(first_three.wait(), timeout=5)  # sent before the rest is planned
            for batch in work[3:]:
                await feed.put(batch)
            assert feed.full
            await asyncio.sleep(0.05)
            assert not sending.done(), "the shard is open: more batches may come"
            await feed.close()
            await asyncio.wait_for(sending, timeout=5)
    assert sorted(outcomes) == sorted(b.batch_id for b in work)
    assert (feed.batches, feed.rows) == (6, 12)


async def test_transient_errors_are_retried_until_accepted() -> None:
    script = Script(httpx.Response(503), httpx.Response(500))
    outcomes, dispatcher = await dispatch(script, batches(3))
    assert all(o.results.status == ["accepted", "accepted"] for o in outcomes.values())
    assert {o.attempts for o in outcomes.values()} == {3}
    assert dispatcher.stats.retries == 6


async def test_giving_up_is_failed_with_the_last_answer() -> None:
    script = Script(default=httpx.Response(503, text="down for maintenance"))
    outcomes, _ = await dispatch(script, batches(1))
    outcome = outcomes["b0"]
    assert outcome.results.status == ["failed", "failed"]
    assert outcome.attempts == FAST.max_attempts
    assert outcome.http_status == 503
    assert outcome.results.error_code == ["HTTP_503", "HTTP_503"]
    assert outcome.results.error_message[0] == "down for maintenance"


async def test_a_read_timeout_after_sending_is_in_doubt_and_not_resent() -> None:
    script = Script(httpx.ReadTimeout("timed out"))
    outcomes, _ = await dispatch(script, batches(2))
    assert all(o.results.status == ["in_doubt", "in_doubt"] for o in outcomes.values())
    assert script.seen == {"b0": 1, "b1": 1}


async def test_a_reset_reported_by_aiohttp_as_connect_timeout_is_still_in_doubt() -> None:
    reset = httpx.ConnectTimeout("Server disconnected")
    reset.__cause__ = aiohttp.ServerDisconnectedError()
    script = Script(reset)
    outcomes, _ = await dispatch(script, batches(1))
    assert outcomes["b0"].results.status == ["in_doubt", "in_doubt"]
    assert script.seen == {"b0": 1}


async def test_a_vendor_with_an_idempotency_key_is_resent_after_a_timeout() -> None:
    script = Script(httpx.ReadTimeout("timed out"))
    outcomes, _ = await dispatch(script, batches(1), connector=FakeConnector(repeat_safe=True))
    assert outcomes["b0"].results.status == ["accepted", "accepted"]
    assert script.seen == {"b0": 2}


async def test_a_request_that_never_left_is_retried() -> None:
    refused = httpx.ConnectError("refused")
    refused.__cause__ = aiohttp.ClientConnectorError.__new__(aiohttp.ClientConnectorError)
    outcomes, _ = await dispatch(Script(refused, httpx.ConnectError("refused")), batches(1))
    assert outcomes["b0"].results.status == ["accepted", "accepted"]
    assert outcomes["b0"].attempts == 3


async def test_throttling_pauses_every_worker_for_the_retry_after() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "0.3"}))
    start = time.monotonic()
    outcomes, dispatcher = await dispatch(script, batches(1))
    assert outcomes["b0"].results.status == ["accepted", "accepted"]
    assert script.times[1] - script.times[0] >= 0.29
    assert dispatcher.stats.throttled == 1
    assert time.monotonic() - start >= 0.29


async def test_while_paused_no_other_batch_is_sent() -> None:
    state = {"throttled": False}
    times: list[tuple[float, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append((time.monotonic(), request.headers["X-Batch"]))
        if not state["throttled"]:
            state["throttled"] = True
            return httpx.Response(429, headers={"Retry-After": "0.25"})
        return httpx.Response(200)

    await dispatch(handler, batches(6), policy=DispatchPolicy(concurrency=1, backoff_jitter_seconds=0))
    assert times[1][0] - times[0][0] >= 0.24


async def test_requests_are_paced_by_the_rate_limit() -> None:
    script = Script()
    policy = DispatchPolicy(requests_per_second=40, concurrency=8)
    await dispatch(script, batches(12), policy=policy)
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    assert min(gaps) >= 0.9 / 40


async def test_expired_credentials_are_refreshed_once_then_resent() -> None:
    connector = FakeConnector()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "t1":
            return httpx.Response(401)
        return httpx.Response(200)

    outcomes, _ = await dispatch(handler, batches(1), connector=connector)
    assert outcomes["b0"].results.status == ["accepted", "accepted"]
    assert connector.reauthorized == 1


async def test_an_abort_stops_every_batch_not_yet_sent() -> None:
    class Aborting(FakeConnector):
        def error_resolution(self, response: httpx.Response) -> Resolution | None:
            return Resolution(Action.ABORT, "REI_EVENT_NOT_FOUND", "no such event")

    script = Script(default=httpx.Response(404))
    outcomes, dispatcher = await dispatch(script, batches(20), DispatchPolicy(concurrency=1), Aborting())
    assert sum(script.seen.values()) == 1
    assert all(o.results.status == ["failed", "failed"] for o in outcomes.values())
    assert dispatcher.aborted is not None
    not_sent = [o for o in outcomes.values() if o.attempts == 0]
    assert len(not_sent) == 19
    assert not_sent[0].results.error_message[0] == "not sent: the run stopped after REI_EVENT_NOT_FOUND"


async def test_an_auth_failure_from_the_connector_aborts() -> None:
    class Refused(FakeConnector):
        async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
            raise ConnectorError(Resolution(Action.ABORT, "INVALID_USER_NAME_PASSWORD", "refused"), 401)

    script = Script()
    outcomes, _ = await dispatch(script, batches(3), DispatchPolicy(concurrency=1), Refused())
    assert script.seen == {}
    assert {o.results.error_code[0] for o in outcomes.values()} == {"INVALID_USER_NAME_PASSWORD"}


async def test_an_unreadable_success_is_in_doubt_never_failed(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeConnector):
        def decode(self, batch: Batch, response: httpx.Response) -> RowResults:
            raise KeyError("oops")

    script = Script()
    outcomes, _ = await dispatch(script, batches(2), connector=Broken())
    assert {o.results.status[0] for o in outcomes.values()} == {"in_doubt"}
    assert {o.results.error_code[0] for o in outcomes.values()} == {"UNREADABLE_ANSWER"}
    assert script.seen == {"b0": 1, "b1": 1}
    assert "cannot read the answer to batch" in caplog.text


async def test_a_bug_anywhere_else_still_gives_every_row_an_outcome(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeConnector):
        def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
            raise ValueError("bug")

    outcomes, _ = await dispatch(Script(), batches(2), connector=Broken())
    assert {o.results.error_code[0] for o in outcomes.values()} == {"INTERNAL_ERROR"}
    assert "internal error while sending batch" in caplog.text


async def test_a_request_too_large_is_split_until_it_fits() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        rows = int(request.headers["X-Rows"])
        sizes.append(rows)
        return httpx.Response(413) if rows > 3 else httpx.Response(200)

    class Sized(FakeConnector):
        def build_call(self, batch: Batch, auth_headers: Mapping[str, str]) -> Call:
            call = super().build_call(batch, auth_headers)
            return Call(call.method, call.url, call.content, {**call.headers, "X-Rows": str(len(batch))})

    parts: list[tuple[str, list[str]]] = []
    async with VendorClient(transport=httpx.MockTransport(handler)) as client:

        async def sink(batch: Batch, outcome: BatchOutcome) -> None:
            parts.append((batch.batch_id, outcome.results.status))

        dispatcher = Dispatcher(Sized(), client, FAST, sink)
        async with dispatcher:
            await dispatcher.send_shard(Shard.of("s", batches(1, rows=10)))
    assert sizes == [10, 5, 2, 3, 5, 2, 3]
    assert [p[0] for p in parts] == ["b0.1.1", "b0.1.2", "b0.2.1", "b0.2.2"]
    assert sum(len(p[1]) for p in parts) == 10
    assert dispatcher.stats.splits == 3


async def test_an_hourly_quota_lets_a_burst_through_then_paces() -> None:
    script = Script()
    policy = DispatchPolicy(requests_per_hour=3, concurrency=2)
    work = batches(4)
    outcomes: list[str] = []
    async with VendorClient(transport=httpx.MockTransport(script)) as client:

        async def sink(batch: Batch, outcome: BatchOutcome) -> None:
            outcomes.append(batch.batch_id)

        dispatcher = Dispatcher(FakeConnector(), client, policy, sink)
        async with dispatcher:
            sending = asyncio.ensure_future(dispatcher.send_shard(Shard.of("s", work)))
            await asyncio.sleep(0.3)
            assert sum(script.seen.values()) == 3, "the fourth request waits for the quota"
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            for worker in dispatcher._workers:
                worker.cancel()
            dispatcher._workers = []


async def test_nothing_is_sent_without_its_intent_on_record_and_a_broken_record_stops_the_run() -> None:
    script = Script()
    intents: list[str] = []

    async def intend(batch: Batch) -> None:
        if len(intents) == 2:
            raise OSError("disk full")
        intents.append(batch.batch_id)

    async def sink(batch: Batch, outcome: BatchOutcome) -> None:
        assert batch.batch_id in intents or outcome.attempts == 0

    async with VendorClient(transport=httpx.MockTransport(script)) as client:
        dispatcher = Dispatcher(FakeConnector(), client, DispatchPolicy(concurrency=1), sink, intend)
        async with dispatcher:
            await dispatcher.send_shard(Shard.of("s", batches(5)))
    assert sorted(script.seen) == intents == ["b0", "b1"]
    assert dispatcher.aborted is not None
    assert dispatcher.aborted.error_code == "LEDGER_UNAVAILABLE"


async def test_an_outcome_that_cannot_be_recorded_fails_the_run_instead_of_hanging() -> None:
    async def sink(batch: Batch, outcome: BatchOutcome) -> None:
        raise OSError("disk full")

    async with VendorClient(transport=httpx.MockTransport(Script())) as client:
        dispatcher = Dispatcher(FakeConnector(), client, FAST, sink)
        with pytest.raises(OSError, match="disk full"):
            async with dispatcher:
                await asyncio.wait_for(dispatcher.send_shard(Shard.of("s", batches(3))), timeout=10)
