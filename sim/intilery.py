"""Intilery simulator: track commands, one at a time or in batches.

Mounted under ``/intilery``. Routes (relative to it), any client, account and brand:

- ``POST /track/{clientId}/{accountId}/{brandId}/v1/track``: one event; ``{"success": true,
  "eventId"}``, or 400 ``{"success": false, "message"}``.
- ``POST .../v1/batch``: ``{"batch": [event, ...]}``. The batch answer is not documented; this
  one (and the connector) use ``{"success": true, "results": [...]}``, one result per event in
  request order, each like a single answer without the status code.
- ``POST .../v1/identify``: ``{"userId"}`` makes a customer known.

Header ``auth-token`` (403 when missing or wrong). Over the rate (100 a second, burst 500 by
default): 429. A request over ``max_request_bytes`` (1 MB) is 413, and so is a single event
over ``max_event_bytes`` (32 KB); inside a batch such an event fails on its own. Events are
checked as documented: userId, a known command (any case), assetId for ``send_*``,
``properties.journeyIdToTrigger`` for ``start_journey``, an ISO-8601 UTC timestamp; a userId
matching ``unknown_user_pattern`` was never identified and is refused.

The log's recipient key is the event's userId.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from sim.context import VendorContext, json_response
from sim.log import RecipientEntry
from sim.throttle import TokenBucket

COMMANDS = frozenset({"send_email", "send_sms", "send_print", "send_push", "start_journey"})
BASE = "/track/{clientId}/{accountId}/{brandId}/v1"
_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")


def failure(message: str) -> dict[str, Any]:
    return {"success": False, "message": message}


def _is_iso_utc(value: object) -> bool:
    if not isinstance(value, str) or not _ISO_UTC.match(value):
        return False
    try:
        datetime.fromisoformat(value)  # 2019-02-30 has the shape but is no date
    except ValueError:
        return False
    return True


class IntilerySim:
    def __init__(self, ctx: VendorContext) -> None:
        self.ctx = ctx
        self.settings = ctx.config.intilery
        s = self.settings
        self._bucket = TokenBucket(s.requests_per_second, s.burst, clock=ctx.clock) if s.requests_per_second else None
        self._unknown = re.compile(s.unknown_user_pattern)
        self._identified: set[str] = set()
        self._events = 0
        for key in ("events_accepted", "events_rejected", "identified", "too_large"):
            ctx.counters.setdefault(key, 0)

    def _event_id(self) -> str:
        self._events += 1
        return f"evt-{self._events:010d}"

    def check_event(self, event: Any, size: int) -> tuple[str | None, str]:
        """(None or the reason it is refused, its userId)."""
        if not isinstance(event, dict):
            return "an event must be a JSON object", ""
        user = event.get("userId")
        key = user if isinstance(user, str) else ""
        if not key:
            return "userId must not be empty", ""
        if size > self.settings.max_event_bytes:
            return f"event is {size} bytes; at most {self.settings.max_event_bytes}", key
        name = event.get("event")
        command = name.lower() if isinstance(name, str) else ""
        if command not in COMMANDS:
            return f"unknown event {str(name)[:40]!r}", key
        if command.startswith("send_"):
            asset = event.get("assetId")
            if not isinstance(asset, str) or not asset:
                return f"assetId is required for {command}", key
        else:
            properties = event.get("properties")
            journey = properties.get("journeyIdToTrigger") if isinstance(properties, dict) else None
            if not isinstance(journey, str) or not journey:
                return "properties.journeyIdToTrigger is required for start_journey", key
        if "timestamp" in event and not _is_iso_utc(event["timestamp"]):
            return "timestamp must be an ISO-8601 UTC timestamp", key
        if key not in self._identified and self._unknown.search(key):
            return f"customer {key[:80]!r} has not been identified", key
        return None, key

    def apply(self, events: list[tuple[Any, int]]) -> tuple[list[dict[str, Any]], list[RecipientEntry]]:
        results: list[dict[str, Any]] = []
        entries: list[RecipientEntry] = []
        for event, size in events:
            problem, key = self.check_event(event, size)
            if problem is None:
                results.append({"success": True, "eventId": self._event_id()})
                entries.append({"key": key, "status": "accepted"})
                self.ctx.count("events_accepted")
            else:
                results.append(failure(problem))
                if key:
                    entries.append({"key": key, "status": "rejected"})
                self.ctx.count("events_rejected")
        return results, entries

    async def _gate(self, request: web.Request) -> tuple[str, web.StreamResponse | None]:
        """Token and rate: (request id, an answer that ends the request here or None)."""
        ctx = self.ctx
        request_id = await ctx.begin(request)
        if request.headers.get("auth-token", "") not in self.settings.auth_tokens:
            ctx.record(request_id, "rejected")
            return request_id, json_response(403, failure("invalid or missing auth-token"))
        if (self._bucket is not None and not self._bucket.try_acquire()) or not ctx.try_acquire():
            ctx.note_throttled(request_id)
            return request_id, json_response(429, failure("too many requests"))
        return request_id, None

    async def _read(self, request: web.Request, request_id: str) -> bytes | web.Response:
        body = await request.read()
        if len(body) > self.settings.max_request_bytes:
            self.ctx.count("too_large")
            self.ctx.record(request_id, "rejected")
            return json_response(
                413, failure(f"request is {len(body)} bytes; at most {self.settings.max_request_bytes}")
            )
        return body

    async def track(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, batch=False)

    async def batch(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, batch=True)

    async def _handle(self, request: web.Request, *, batch: bool) -> web.StreamResponse:
        ctx = self.ctx
        request_id, answer = await self._gate(request)
        if answer is not None:
            return answer
        draw = ctx.screen_fault(request_id, lambda: json_response(429, failure("too many requests")))
        if isinstance(draw, web.Response):
            return draw
        body = await self._read(request, request_id)
        if isinstance(body, web.Response):
            return body
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            ctx.record(request_id, "rejected")
            return json_response(400, failure("the body is not valid JSON"))
        if batch:
            items = document.get("batch") if isinstance(document, dict) else None
            if not isinstance(items, list) or not items:
                ctx.record(request_id, "rejected")
                return json_response(400, failure("batch must be a non-empty array of events"))
            events = [(item, len(orjson.dumps(item))) for item in items]
        else:
            if len(body) > self.settings.max_event_bytes:
                ctx.count("too_large")
                ctx.record(request_id, "rejected")
                return json_response(
                    413, failure(f"event is {len(body)} bytes; at most {self.settings.max_event_bytes}")
                )
            events = [(document, len(body))]
        if draw.fault.withholds:
            entries = self.apply(events)[1] if draw.processed else self.preview(events)
            return await ctx.withhold(request, request_id, draw, entries)
        results, entries = self.apply(events)
        accepted = sum(1 for r in results if r["success"])
        ctx.record(
            request_id, "accepted" if accepted else "rejected", processed=True, recipients=entries, accepted=accepted
        )
        if batch:
            return json_response(200, {"success": True, "results": results})
        return json_response(200 if results[0]["success"] else 400, results[0])

    def preview(self, events: list[tuple[Any, int]]) -> list[RecipientEntry]:
        """What applying would have logged, without applying (a request lost before it was applied)."""
        entries: list[RecipientEntry] = []
        for event, size in events:
            problem, key = self.check_event(event, size)
            if key:
                entries.append({"key": key, "status": "accepted" if problem is None else "rejected"})
        return entries

    async def identify(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        request_id, answer = await self._gate(request)
        if answer is not None:
            return answer
        try:
            document = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            document = None
        user = document.get("userId") if isinstance(document, dict) else None
        if not isinstance(user, str) or not user:
            ctx.record(request_id, "rejected")
            return json_response(400, failure("userId must not be empty"))
        self._identified.add(user)
        ctx.count("identified")
        ctx.record(request_id, "accepted")
        return json_response(200, {"success": True})


def create_app(ctx: VendorContext) -> web.Application:
    """The Intilery sub-application (registered in sim.vendors)."""
    sim = IntilerySim(ctx)
    app = web.Application()
    app.router.add_post(f"{BASE}/track", sim.track)
    app.router.add_post(f"{BASE}/batch", sim.batch)
    app.router.add_post(f"{BASE}/identify", sim.identify)
    return app
