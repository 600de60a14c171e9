"""Relay Network simulator: trigger experience, single and bulk, API-key auth.

Mounted under ``/relay``; routes live under ``/platform/v3/api`` as on the real host, so a
connection's ``base_url`` is ``http://HOST:PORT/relay/platform/v3/api``.

Per customer (deterministic, for tests): a ccid matching ``not_sent_pattern`` gets message
status ``not-sent``, one matching ``error_pattern`` gets ``error``, the rest ``sent``. Every
ccid has one or two phone numbers (``channels_for``) whose status is ``ok``, ``no-consent``,
``channel-deactivated`` or ``error-sms`` by a hash of the number. The same ccid + trigger +
journey + inputs within ``duplicate_window_seconds`` is dropped as a duplicate (``not-sent``;
logged with status ``duplicate``). The bulk answer (undocumented) is
``{"results": [{"trigger_id", "ccid", "message", "notification"}]}`` in request order.
The log's recipient key is the ccid.

Status look-up (undocumented shape, as ``connectors/relay.py`` reads it): ``GET
.../experience-status/1.0/client/{client_id}/customer/{ccid}/trigger_status`` answers
``{"ccid", "triggers": [{"trigger_id", "journey_id", "status", "triggered_at"}]}``: every
trigger the simulator applied for the ccid (processed requests only, a withheld answer
included when the request was applied; a duplicate as ``not-sent``), oldest first, with the
wall-clock time in ISO 8601 UTC. Every ccid is known (an empty list when never triggered).
Same API-key checks and rate limit as the triggers; no injected faults (they model lost
trigger answers); counted as ``status_lookups``, not logged.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from sim.context import VendorContext, json_response
from sim.log import RecipientEntry
from sim.responsys import unknown_matcher

API = "/platform/v3/api"
BULK_PATH = API + "/messaging/client/{client_id}/journey_trigger"
SINGLE_PATH = API + "/messaging/client/{client_id}/journey_trigger/{trigger_id}/customer/{ccid}"
STATUS_PATH = API + "/experience-status/1.0/client/{client_id}/customer/{ccid}/trigger_status"
API_KEY_HEADER = "xx-relay-api-key"
MAX_LENGTH = 100
_LIMITED = ("trigger_id", "ccid", "journey_id", "asset_id", "client_message_tag", "lb_name", "lb_source")


def channels_for(ccid: str, no_consent_every: int = 7, deactivated_every: int = 13) -> list[dict[str, str]]:
    """The simulated customer's phone numbers and what sending to each gives."""
    digest = zlib.crc32(ccid.encode())
    count = 2 if digest % 4 == 0 else 1
    channels = []
    for index in range(count):
        number = f"+1555{(digest // (index + 1) + index * 7919) % 10_000_000:07d}"
        mark = zlib.crc32(number.encode())
        if mark % no_consent_every == 0:
            status = "no-consent"
        elif mark % deactivated_every == 0:
            status = "channel-deactivated"
        elif mark % 97 == 0:
            status = "error-sms"
        else:
            status = "ok"
        channels.append({"channel_addr": number, "channel_type": "sms", "status": status})
    return channels


def error_body(status: int, error: str, message: str) -> dict[str, Any]:
    return {"status": status, "error": error, "message": message}


class Refusal(NamedTuple):
    status: int
    payload: dict[str, Any]


class Item(NamedTuple):
    """One validated trigger: who, and what makes it a duplicate."""

    trigger_id: str
    ccid: str
    fingerprint: bytes


class RelaySim:
    """State of one simulated Relay account (recent triggers for duplicate suppression)."""

    def __init__(self, ctx: VendorContext, wall_clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.settings = ctx.config.relay
        self.wall_clock = wall_clock
        self._not_sent = unknown_matcher(self.settings.not_sent_pattern)
        self._error = unknown_matcher(self.settings.error_pattern)
        self._recent: dict[bytes, float] = {}
        # ccid -> (trigger_id, message status, wall-clock time) of every applied trigger: the status look-up.
        self._triggered: dict[str, list[tuple[str, str, float]]] = {}
        for key in (
            "messages_sent",
            "messages_not_sent",
            "messages_error",
            "duplicates",
            "no_consent",
            "status_lookups",
        ):
            ctx.counters.setdefault(key, 0)

    # ------------------------------------------------------------ checks

    def _denied(self, request: web.Request) -> web.Response | None:
        client = self.settings.api_keys.get(request.headers.get(API_KEY_HEADER, ""))
        if client is None:
            return json_response(401, error_body(401, "Unauthorized", "missing or unknown API key"))
        if client != request.match_info["client_id"]:
            return json_response(403, error_body(403, "Forbidden", "the API key does not belong to this client"))
        return None

    @staticmethod
    def _throttled() -> web.Response:
        return json_response(
            429, error_body(429, "Too Many Requests", "rate limit exceeded"), headers={"Retry-After": "1"}
        )

    def _check_item(self, item: Any, where: str) -> Refusal | Item:
        if not isinstance(item, dict):
            return Refusal(400, error_body(400, "Bad Request", f"{where}: must be an object"))
        for name in _LIMITED:
            value = item.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or not value or len(value) > MAX_LENGTH:
                return Refusal(
                    400, error_body(400, "Bad Request", f"{where}.{name}: a string of 1 to {MAX_LENGTH} characters")
                )
        trigger_id, ccid = item.get("trigger_id"), item.get("ccid")
        if not isinstance(trigger_id, str) or not isinstance(ccid, str):
            return Refusal(400, error_body(400, "Bad Request", f"{where}: trigger_id and ccid are required"))
        inputs = item.get("input_parameters", {})
        if not isinstance(inputs, dict):
            return Refusal(400, error_body(400, "Bad Request", f"{where}.input_parameters: must be an object"))
        for key, value in inputs.items():
            if not key.startswith("input_"):
                return Refusal(
                    400, error_body(400, "Bad Request", f"{where}.input_parameters: {key!r} must start with input_")
                )
            if isinstance(value, dict | list):
                return Refusal(400, error_body(400, "Bad Request", f"{where}.input_parameters.{key}: not a scalar"))
        journey = self.settings.triggers.get(trigger_id)
        if journey is None:
            return Refusal(404, error_body(404, "Not Found", f"trigger_id {trigger_id!r} not found"))
        wanted = item.get("journey_id")
        if wanted is not None and wanted != journey:
            return Refusal(404, error_body(404, "Not Found", f"trigger_id {trigger_id!r} is not in journey {wanted!r}"))
        fingerprint = orjson.dumps([ccid, trigger_id, journey, inputs], option=orjson.OPT_SORT_KEYS)
        return Item(trigger_id, ccid, fingerprint)

    def evaluate(self, items: list[Any]) -> Refusal | list[Item]:
        checked: list[Item] = []
        pairs: set[tuple[str, str]] = set()
        for position, raw in enumerate(items):
            item = self._check_item(raw, f"batch[{position}]")
            if isinstance(item, Refusal):
                return item
            if (item.trigger_id, item.ccid) in pairs:
                message = f"batch[{position}]: trigger_id and ccid {item.trigger_id!r}/{item.ccid!r} repeated"
                return Refusal(400, error_body(400, "Bad Request", message))
            pairs.add((item.trigger_id, item.ccid))
            checked.append(item)
        return checked

    # ------------------------------------------------------------ outcomes

    def outcome(self, item: Item, now: float, apply: bool) -> tuple[dict[str, Any], RecipientEntry]:
        """The answer for one customer and its log entry; `apply` remembers it (duplicates, counters)."""
        settings = self.settings
        window = settings.duplicate_window_seconds
        last = self._recent.get(item.fingerprint)
        if window > 0 and last is not None and now - last < window:
            if apply:
                self.ctx.count("duplicates")
                self._remember(item, "not-sent")
            answer = {"message": {"status": "not-sent", "reason": "duplicate"}, "notification": {"results": []}}
            return answer, {"key": item.ccid, "status": "duplicate"}
        channels: list[dict[str, str]] = []
        if self._not_sent(item.ccid):
            status = "not-sent"
        elif self._error(item.ccid):
            status = "error"
        else:
            status = "sent"
            channels = channels_for(item.ccid, settings.no_consent_every, settings.deactivated_every)
        if apply:
            if status == "sent" and window > 0:
                self._recent[item.fingerprint] = now
                if len(self._recent) > 200_000:
                    self._recent = {k: t for k, t in self._recent.items() if now - t < window}
            self.ctx.count({"sent": "messages_sent", "not-sent": "messages_not_sent"}.get(status, "messages_error"))
            self._remember(item, status)
            self.ctx.count("no_consent", sum(1 for c in channels if c["status"] == "no-consent"))
        entry: RecipientEntry = {"key": item.ccid, "status": "accepted" if status == "sent" else "rejected"}
        return {"message": {"status": status}, "notification": {"results": channels}}, entry

    def _remember(self, item: Item, status: str) -> None:
        self._triggered.setdefault(item.ccid, []).append((item.trigger_id, status, self.wall_clock()))

    def trigger_status(self, ccid: str) -> dict[str, Any]:
        """The status look-up's answer for one customer."""
        triggers = [
            {
                "trigger_id": trigger_id,
                "journey_id": self.settings.triggers.get(trigger_id),
                "status": status,
                "triggered_at": datetime.fromtimestamp(at, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
            }
            for trigger_id, status, at in self._triggered.get(ccid, ())
        ]
        return {"ccid": ccid, "triggers": triggers}

    # ------------------------------------------------------------ handlers

    async def _handle(self, request: web.Request, single: bool) -> web.StreamResponse:
        ctx = self.ctx
        request_id = await ctx.begin(request)
        denied = self._denied(request)
        if denied is not None:
            ctx.record(request_id, "rejected")
            return denied
        draw = ctx.admit(request_id, self._throttled)
        if isinstance(draw, web.Response):
            return draw
        checked = self._read(await request.read(), request.match_info if single else None)
        if isinstance(checked, Refusal):
            if draw.fault.withholds:
                return await ctx.withhold(request, request_id, draw)
            ctx.record(request_id, "rejected")
            return json_response(checked.status, checked.payload)
        apply = not draw.fault.withholds or draw.processed
        now = ctx.clock()
        answers: list[dict[str, Any]] = []
        entries: list[RecipientEntry] = []
        for item in checked:
            answer, entry = self.outcome(item, now, apply)
            answers.append(answer if single else {"trigger_id": item.trigger_id, "ccid": item.ccid, **answer})
            entries.append(entry)
        if draw.fault.withholds:
            return await ctx.withhold(request, request_id, draw, entries)
        accepted = sum(1 for e in entries if e["status"] == "accepted")
        ctx.record(request_id, "accepted", processed=True, recipients=entries, accepted=accepted)
        return json_response(200, answers[0] if single else {"results": answers})

    def _read(self, body: bytes, path: Any) -> Refusal | list[Item]:
        try:
            document = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return Refusal(400, error_body(400, "Bad Request", "the body is not valid JSON"))
        if path is not None:
            if not isinstance(document, dict):
                return Refusal(400, error_body(400, "Bad Request", "the body must be an object"))
            return self.evaluate([{**document, "trigger_id": path["trigger_id"], "ccid": path["ccid"]}])
        batch = document.get("batch") if isinstance(document, dict) else None
        if not isinstance(batch, list) or not batch:
            return Refusal(400, error_body(400, "Bad Request", "'batch' must be a non-empty array"))
        if len(batch) > self.settings.max_batch:
            message = f"at most {self.settings.max_batch} triggers a request, got {len(batch)}"
            return Refusal(400, error_body(400, "Bad Request", message))
        return self.evaluate(batch)

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, single=False)

    async def single(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, single=True)

    async def status(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        ctx.count("status_lookups")
        await ctx.apply_latency()
        denied = self._denied(request)
        if denied is not None:
            return denied
        if not ctx.try_acquire():
            return self._throttled()
        return json_response(200, self.trigger_status(request.match_info["ccid"]))


def create_app(ctx: VendorContext) -> web.Application:
    """The Relay sub-application (registered in sim.vendors)."""
    sim = RelaySim(ctx)
    app = web.Application()
    app.router.add_post(BULK_PATH, sim.bulk)
    app.router.add_post(SINGLE_PATH, sim.single)
    app.router.add_get(STATUS_PATH, sim.status)
    return app
