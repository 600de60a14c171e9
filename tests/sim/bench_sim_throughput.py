"""Measure how many Responsys trigger requests per second the simulator answers.

Not a test (pytest does not collect it). Run from the repository root:

    python -m tests.sim.bench_sim_throughput [--seconds 5] [--workers 16]

200 recipients per request (~40 KB bodies, pre-built), latency 0, one
httpx.AsyncClient over httpx_aiohttp.AiohttpTransport, N workers pulling
from a queue.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from sim.testing import SimulatorProcess

TRIGGER = "/rest/api/v1.3/events/rei/Purchase_Event"


def build_body(batch: int) -> bytes:
    recipients: list[dict[str, Any]] = []
    for i in range(200):
        n = batch * 200 + i
        recipients.append(
            {
                "recipient": {
                    "customerId": f"CUST-{n:09d}",
                    "listName": {"folderName": "Volley", "objectName": "CONTACTS_LIST"},
                    "emailFormat": "HTML_FORMAT",
                },
                "optionalData": [
                    {"name": "PRODUCT_NAME", "value": "Stonewash Jeans"},
                ],
            }
        )
    document = {
        "reiEvent": {
            "eventNumberDataMapping": None,
            "eventDateDataMapping": None,
            "eventStringDataMapping": None,
        },
        "recipientData": recipients,
    }
    return json.dumps(document, separators=(",", ":")).encode()


async def run(base: str, seconds: float, workers: int) -> tuple[int, int, float]:
    bodies = [build_body(b) for b in range(64)]
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30.0) as client:
        login = await client.post(
            base + "/rest/api/v1.3/auth/token",
            data={
                "user_name": "volley",
                "password": "volley-secret",
                "auth_type": "password",
            },
        )
        token = login.json()["authToken"]
        endpoint = login.json()["endPoint"]
        headers = {"Authorization": token, "Content-Type": "application/json"}
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=workers * 4)
        done = 0
        failed = 0
        deadline = time.monotonic() + seconds

        async def feed() -> None:
            for body in itertools.cycle(bodies):
                await queue.put(body)

        async def work() -> None:
            nonlocal done, failed
            while time.monotonic() < deadline:
                body = await queue.get()
                answer = await client.post(endpoint + TRIGGER, content=body, headers=headers)
                if answer.status_code == 200:
                    done += 1
                else:
                    failed += 1

        feeder = asyncio.create_task(feed())
        started = time.monotonic()
        await asyncio.gather(*(work() for _ in range(workers)))
        elapsed = time.monotonic() - started
        feeder.cancel()
        return done, failed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    print(f"body size: {len(build_body(0))} bytes")
    with SimulatorProcess() as sim:
        done, failed, elapsed = asyncio.run(run(sim.responsys_url, args.seconds, args.workers))
    rate = done / elapsed
    print(f"{done} ok, {failed} failed in {elapsed:.2f} s: {rate:.0f} requests/s, {rate * 200:.0f} recipients/s")


if __name__ == "__main__":
    main()
