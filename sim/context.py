"""What the frame hands a vendor module: shared services and generic answers.

A vendor module only renders its own API. Latency, fault draws, the token
bucket, the log, counters and the vendor-neutral failure answers (5xx,
withheld, reset) live here so every vendor behaves the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from sim.config import FAULT_KINDS, SimConfig
from sim.faults import Fault, FaultDraw, FaultInjector
from sim.log import RecipientEntry, Result, SimLog
from sim.throttle import TokenBucket

JSON_CONTENT_TYPE = "application/json"

_LINGER_RESET = struct.pack("ii", 1, 0)

GENERIC_COUNTERS: tuple[str, ...] = (
    "requests",
    "accepted",
    "rejected",
    "errors",
    "throttled",
    "withheld",
    "recipients_accepted",
    "recipients_rejected",
)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer serialised with orjson."""
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type=JSON_CONTENT_TYPE,
        headers=headers,
    )


def reset_connection(request: web.BaseRequest) -> web.Response:
    """Abort the TCP connection with an RST and no answer.

    The returned response is never delivered: aiohttp's attempt to write it
    hits the closed transport and is dropped quietly (no traceback).
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
    return web.Response(status=500)


class VendorContext:
    """Per-vendor state and helpers, backed by the simulator's shared log."""

    def __init__(
        self,
        *,
        name: str,
        prefix: str,
        config: SimConfig,
        log: SimLog,
        faults: FaultInjector,
        bucket: TokenBucket | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.config = config
        self.log = log
        self.faults = faults
        self.bucket = bucket
        self.clock = clock
        self._latency = config.latency_ms / 1000.0
        self._next_id = 0
        self.counters: dict[str, int] = dict.fromkeys(GENERIC_COUNTERS, 0)
        self.fault_counts: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)

    # ------------------------------------------------------------ bookkeeping

    def count(self, key: str, n: int = 1) -> None:
        """Bump a counter (vendor modules may add their own keys)."""
        self.counters[key] = self.counters.get(key, 0) + n

    def stats(self) -> dict[str, Any]:
        """Counters as served at ``{prefix}/_sim/stats``."""
        out: dict[str, Any] = dict(self.counters)
        out["faults"] = dict(self.fault_counts)
        out["vendor"] = self.name
        return out

    def request_id(self, request: web.BaseRequest) -> str:
        """The client's X-Request-Id, else a per-vendor counter."""
        given = request.headers.get("X-Request-Id")
        if given:
            return given
        self._next_id += 1
        return f"{self.name}-{self._next_id}"

    def record(
        self,
        request_id: str,
        result: Result,
        *,
        fault: Fault = Fault.NONE,
        processed: bool = False,
        recipients: Sequence[RecipientEntry] = (),
        accepted: int | None = None,
    ) -> None:
        """Log one handled request and count it by result.

        ``accepted`` (how many recipients have status accepted) saves a pass
        over ``recipients`` when the caller already knows it.
        """
        counters = self.counters
        if result == "accepted":
            counters["accepted"] += 1
        elif result == "rejected":
            counters["rejected"] += 1
        elif result == "error":
            counters["errors"] += 1
        elif result == "throttled":
            counters["throttled"] += 1
        else:
            counters["withheld"] += 1
        if processed and recipients:
            if accepted is None:
                accepted = sum(1 for r in recipients if r["status"] == "accepted")
            counters["recipients_accepted"] += accepted
            counters["recipients_rejected"] += len(recipients) - accepted
        self.log.record(
            vendor=self.name,
            request_id=request_id,
            result=result,
            fault=fault.value,
            processed=processed,
            recipients=recipients,
        )

    # ------------------------------------------------------------ behaviour

    async def begin(self, request: web.BaseRequest) -> str:
        """Count a request and wait the configured latency; its request id."""
        self.counters["requests"] += 1
        await self.apply_latency()
        return self.request_id(request)

    async def apply_latency(self) -> None:
        """Sleep the configured per-request latency (no-op at 0)."""
        if self._latency > 0.0:
            await asyncio.sleep(self._latency)

    def try_acquire(self) -> bool:
        """Take a token from this vendor's bucket; always True when unlimited."""
        bucket = self.bucket
        return bucket is None or bucket.try_acquire(self.clock())

    def draw_fault(self) -> FaultDraw:
        """Draw this request's injected fault (and count it)."""
        draw = self.faults.draw()
        if draw.fault is not Fault.NONE:
            self.fault_counts[str(draw.fault.value)] += 1
        return draw

    def admit(self, request_id: str, throttled: Callable[[], web.Response]) -> FaultDraw | web.Response:
        """The rate limit, then the injected fault (see `screen_fault`); a refused request is logged."""
        if not self.try_acquire():
            self.note_throttled(request_id)
            return throttled()
        return self.screen_fault(request_id, throttled)

    def screen_fault(self, request_id: str, throttled: Callable[[], web.Response]) -> FaultDraw | web.Response:
        """Draw the injected fault: an injected throttle (the vendor's `throttled()` answer) or 5xx ends
        the request here, logged; any other draw is returned for the vendor to act on (withholds)."""
        draw = self.draw_fault()
        if draw.fault is Fault.THROTTLE:
            self.note_throttled(request_id, Fault.THROTTLE)
            return throttled()
        if draw.fault is Fault.ERROR_5XX:
            return self.answer_5xx(request_id)
        return draw

    # ------------------------------------------------------------ generic answers

    def answer_5xx(self, request_id: str) -> web.Response:
        """Log and answer an injected server error (503, JSON)."""
        self.record(request_id, "error", fault=Fault.ERROR_5XX)
        return json_response(
            503,
            {
                "error": "SERVICE_UNAVAILABLE",
                "detail": "simulated server error (injected 5xx fault)",
                "vendor": self.name,
            },
        )

    def note_throttled(self, request_id: str, fault: Fault = Fault.NONE) -> None:
        """Log a throttled request; the vendor renders its own throttle answer."""
        self.record(request_id, "throttled", fault=fault)

    async def withhold(
        self,
        request: web.BaseRequest,
        request_id: str,
        draw: FaultDraw,
        recipients: Sequence[RecipientEntry] = (),
    ) -> web.StreamResponse:
        """Log a withheld request, then lose its answer.

        RESET aborts the connection at once. TIMEOUT keeps it open for
        ``hold_seconds`` and then answers 504 (the client will have given up).
        If ``draw.processed`` the caller must already have applied the request;
        ``recipients`` are its per-recipient outcomes (or would-be outcomes).
        """
        self.record(
            request_id,
            "withheld",
            fault=draw.fault,
            processed=draw.processed,
            recipients=recipients,
        )
        if draw.fault is Fault.RESET:
            return reset_connection(request)
        await asyncio.sleep(self.config.hold_seconds)
        return json_response(
            504,
            {
                "error": "GATEWAY_TIMEOUT",
                "detail": "simulated timeout (answer withheld)",
                "vendor": self.name,
            },
        )
