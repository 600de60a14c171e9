"""The transport ceiling: the least code that can post the audience to the simulator.

Bodies are built before the clock starts; the timed part is only HTTP: Volley's own client
(`volley.transport.make_client`, pyreqwest underneath) on uvloop, as `volley run` has it, and a
fixed pool of workers pulling bodies from an `asyncio.Queue`. Whatever Volley does beyond this costs time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import uvloop

from bench.audience import AUDIENCE_COLUMNS
from bench.rei import alogin, body_for, trigger_headers, trigger_url
from volley.connector import Call
from volley.transport import make_client

__all__ = ["CeilingResult", "build_bodies", "measure_ceiling"]

BATCH_ROWS = 200


@dataclass
class CeilingResult:
    workers: int
    recipients: int
    requests: int
    seconds: float
    failed_requests: int

    @property
    def recipients_per_second(self) -> float:
        return self.recipients / self.seconds if self.seconds > 0 else 0.0


def build_bodies(audience: Path) -> tuple[list[bytes], int]:
    """Every request body of the audience (200 recipients each) and the recipient count."""
    bodies: list[bytes] = []
    rows = 0
    for frame in pl.scan_parquet(audience).select(AUDIENCE_COLUMNS).collect_batches(chunk_size=100_000):
        records = frame.to_dicts()
        rows += len(records)
        bodies.extend(body_for(records[i : i + BATCH_ROWS]) for i in range(0, len(records), BATCH_ROWS))
    return bodies, rows


async def _post_all(responsys_url: str, bodies: list[bytes], workers: int, user: str, password: str) -> CeilingResult:
    async with make_client(workers, 30.0, 10.0) as client:
        headers = trigger_headers(await alogin(client, responsys_url, user, password))
        url = trigger_url(responsys_url)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        failed = 0

        async def worker() -> None:
            nonlocal failed
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                response = await client.send_call(Call("POST", url, body, headers))
                if response.status_code != 200:
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        seconds = time.perf_counter() - start
    return CeilingResult(workers, 0, len(bodies), seconds, failed)


def measure_ceiling(
    responsys_url: str, bodies: list[bytes], recipients: int, workers: int, user: str, password: str
) -> CeilingResult:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the event loop Volley's command runs on
        result = runner.run(_post_all(responsys_url, bodies, workers, user, password))
    result.recipients = recipients
    return result
