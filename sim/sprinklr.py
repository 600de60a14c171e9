"""Sprinklr simulator: marketing-journey triggers, OAuth refresh, the gateway's rate limits.

Mounted under ``/sprinklr``. Routes (relative to it; ``{env}`` is any path segment, as in
the newer ``/{env}/api/v2/`` bases):

- ``POST /oauth/token`` and ``/{env}/oauth/token``: ``grant_type=refresh_token`` with the
  configured client; every refresh token works once (a reused one is ``invalid_grant``).
- ``POST /api/marketing-journey/{trigger|triggerWithNewProfile|triggerJourney}``, the same
  under ``/api/v2/`` and ``/{env}/api/v2/``.

Order of checks, as a gateway in front of a service would: ``Key`` (403 "Developer
Inactive" page), the rate limits (per second and per hour: 403 "Developer Over Rate" page,
every Nth one a 429), the bearer token (401), injected faults, then the body.

Answers not documented by Sprinklr (so the connector treats them as designed, see
connectors/sprinklr.py): errors are ``{"data": null, "errors": [{"code", "message"}]}`` with
400 (``PROFILE_NOT_FOUND``, ``INVALID_REQUEST``, ``INVALID_SN_TYPE``, ``JOURNEY_NOT_FOUND``);
an opted-out channel of a new profile gets 200 with ``data.status`` ``FAILED``.

The log's recipient key is the snId (trigger) or the unified profile id (new profile).
"""

from __future__ import annotations

import re
import secrets
import zlib
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from sim.context import VendorContext, json_response
from sim.log import RecipientEntry
from sim.throttle import TokenBucket

ENDPOINTS = frozenset({"trigger", "triggerWithNewProfile", "triggerJourney"})
OVER_RATE_PAGE = (
    b"<html><head><title>403 Developer Over Rate</title></head><body><h1>Developer Over Rate</h1></body></html>"
)
INACTIVE_PAGE = (
    b"<html><head><title>403 Developer Inactive</title></head><body><h1>Developer Inactive</h1></body></html>"
)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"code": code, "message": message}]}


def tracking_id_for(key: str, serial: int) -> str:
    return f"trk-{zlib.crc32(key.encode()):08x}-{serial:06d}"


class Verdict(NamedTuple):
    """What the service makes of a body: the answer and the log entry (None when no key)."""

    status: int
    payload: dict[str, Any] | None
    entry: RecipientEntry | None


class SprinklrSim:
    def __init__(self, ctx: VendorContext) -> None:
        self.ctx = ctx
        self.settings = ctx.config.sprinklr
        s = self.settings
        now = ctx.clock()
        self._access: dict[str, float] = dict.fromkeys(s.access_tokens, now + s.token_ttl_seconds)
        self._refresh: set[str] = set(s.refresh_tokens)
        self._second = TokenBucket(s.requests_per_second, s.burst, clock=ctx.clock) if s.requests_per_second else None
        self._hour = (
            TokenBucket(s.requests_per_hour / 3600.0, s.requests_per_hour, clock=ctx.clock)
            if s.requests_per_hour
            else None
        )
        self._unknown = re.compile(s.unknown_profile_pattern)
        self._opted_out = re.compile(s.opted_out_pattern)
        self._throttled = 0
        self._tracking = 0
        for key in ("refreshes", "refresh_refused", "refresh_reused", "unauthorized"):
            ctx.counters.setdefault(key, 0)

    # ------------------------------------------------------------ oauth

    async def oauth_token(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.apply_latency()
        form = await request.post()
        s = self.settings

        def refused(status: int, error: str, description: str) -> web.Response:
            ctx.count("refresh_refused")
            return json_response(status, {"error": error, "error_description": description})

        if str(form.get("grant_type", "")) != "refresh_token":
            return refused(400, "unsupported_grant_type", "grant_type must be refresh_token")
        client_id = str(form.get("client_id", ""))
        client_secret = str(form.get("client_secret", ""))
        if client_id != s.client_id or not secrets.compare_digest(client_secret, s.client_secret):
            return refused(401, "invalid_client", "unknown client or wrong client secret")
        redirect_uri = str(form.get("redirect_uri", ""))
        if not redirect_uri or (s.redirect_uri is not None and redirect_uri != s.redirect_uri):
            return refused(400, "invalid_request", "redirect_uri does not match the client's")
        token = str(form.get("refresh_token", ""))
        if token not in self._refresh:
            ctx.count("refresh_reused")
            return refused(401, "invalid_grant", "refresh token is invalid, expired or already used")
        self._refresh.discard(token)  # single use
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        now = ctx.clock()
        self._access[access] = now + s.token_ttl_seconds
        self._refresh.add(refresh)
        if len(self._access) > 4096:
            self._access = {t: expiry for t, expiry in self._access.items() if expiry > now}
        ctx.count("refreshes")
        return json_response(
            200,
            {
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_in": s.token_ttl_seconds,
            },
        )

    # ------------------------------------------------------------ gateway

    def throttle_answer(self) -> web.Response:
        self._throttled += 1
        every = self.settings.throttle_429_every
        if every and self._throttled % every == 0:
            return json_response(429, error_body("TOO_MANY_REQUESTS", "Too Many Requests"))
        return web.Response(
            status=403,
            body=OVER_RATE_PAGE,
            content_type="text/html",
            headers={"X-Mashery-Error-Code": "ERR_403_DEVELOPER_OVER_RATE"},
        )

    def over_limit(self) -> bool:
        """Per second first (an hourly token is not spent on a call refused per second)."""
        if self._second is not None and not self._second.try_acquire():
            return True
        if self._hour is not None and not self._hour.try_acquire():
            return True
        return not self.ctx.try_acquire()

    def token_ok(self, request: web.BaseRequest) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        expiry = self._access.get(header[len("Bearer ") :])
        return expiry is not None and self.ctx.clock() < expiry

    # ------------------------------------------------------------ service

    def _common(self, document: dict[str, Any]) -> Verdict | None:
        journey = document.get("journeyId")
        if not isinstance(journey, str) or not journey:
            return Verdict(400, error_body("INVALID_REQUEST", "journeyId is required"), None)
        journeys = self.settings.journeys
        if journeys is not None and journey not in journeys:
            return Verdict(400, error_body("JOURNEY_NOT_FOUND", f"journey {journey[:80]!r} not found"), None)
        context = document.get("contextParams")
        if context is not None and (
            not isinstance(context, dict) or not all(isinstance(v, str) for v in context.values())
        ):
            return Verdict(400, error_body("INVALID_REQUEST", "contextParams must map strings to strings"), None)
        return None

    def evaluate_trigger(self, document: dict[str, Any]) -> Verdict:
        sn_id = document.get("snId")
        key = sn_id if isinstance(sn_id, str) else ""
        problem = self._common(document)
        if problem is not None:
            return problem._replace(entry={"key": key, "status": "rejected"} if key else None)
        rejected: RecipientEntry | None = {"key": key, "status": "rejected"} if key else None
        sn_type = document.get("snType")
        if not isinstance(sn_type, str) or sn_type not in self.settings.sn_types:
            return Verdict(400, error_body("INVALID_SN_TYPE", f"unknown snType {str(sn_type)[:40]!r}"), rejected)
        if not key:
            return Verdict(400, error_body("INVALID_REQUEST", "snId is required"), None)
        if self._unknown.search(key):
            return Verdict(400, error_body("PROFILE_NOT_FOUND", f"no {sn_type} profile {key[:80]!r}"), rejected)
        return Verdict(204, None, {"key": key, "status": "accepted"})

    def evaluate_new_profile(self, document: dict[str, Any]) -> Verdict:
        profile = document.get("unifiedProfile")
        profile = profile if isinstance(profile, dict) else {}
        profile_id = profile.get("id")
        key = profile_id if isinstance(profile_id, str) else ""
        rejected: RecipientEntry | None = {"key": key, "status": "rejected"} if key else None
        problem = self._common(document)
        if problem is not None:
            return problem._replace(entry=rejected)
        if not key:
            return Verdict(400, error_body("INVALID_REQUEST", "unifiedProfile.id is required"), None)
        contact = profile.get("contact")
        if contact is not None and not isinstance(contact, dict):
            return Verdict(400, error_body("INVALID_REQUEST", "unifiedProfile.contact must be an object"), rejected)
        channels = profile.get("profiles")
        if not isinstance(channels, list) or not channels:
            return Verdict(400, error_body("INVALID_REQUEST", "unifiedProfile.profiles must not be empty"), rejected)
        for channel in channels:
            if (
                not isinstance(channel, dict)
                or not isinstance(channel.get("channelId"), str)
                or not channel["channelId"]
            ):
                return Verdict(400, error_body("INVALID_REQUEST", "every profile needs a channelId"), rejected)
            if channel.get("channelType") not in self.settings.sn_types:
                channel_type = str(channel.get("channelType"))[:40]
                return Verdict(400, error_body("INVALID_SN_TYPE", f"unknown channelType {channel_type!r}"), rejected)
        created = profile.get("createdTime")
        if created is not None and (not isinstance(created, int) or isinstance(created, bool)):
            return Verdict(400, error_body("INVALID_REQUEST", "createdTime must be epoch milliseconds"), rejected)
        self._tracking += 1
        opted_out = [c["channelId"] for c in channels if self._opted_out.search(c["channelId"])]
        if opted_out:
            message = f"channel {opted_out[0][:80]!r} has opted out"
            return Verdict(
                200,
                {
                    "data": {"status": "FAILED", "message": message, "trackingId": None},
                    "errors": [{"code": "CHANNEL_OPTED_OUT", "message": message}],
                },
                rejected,
            )
        return Verdict(
            200,
            {
                "data": {
                    "status": "SUCCESS",
                    "message": "Journey triggered for the new profile",
                    "trackingId": tracking_id_for(key, self._tracking),
                },
                "errors": [],
            },
            {"key": key, "status": "accepted"},
        )

    def evaluate(self, endpoint: str, body: bytes) -> Verdict:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Verdict(400, error_body("INVALID_REQUEST", "the body is not valid JSON"), None)
        if not isinstance(document, dict):
            return Verdict(400, error_body("INVALID_REQUEST", "the body must be a JSON object"), None)
        if endpoint == "trigger":
            return self.evaluate_trigger(document)
        return self.evaluate_new_profile(document)

    async def journey(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        request_id = await ctx.begin(request)
        endpoint = request.match_info["endpoint"]
        if endpoint not in ENDPOINTS:
            ctx.record(request_id, "rejected")
            return json_response(404, error_body("NOT_FOUND", f"no endpoint {endpoint[:40]!r}"))
        if request.headers.get("Key", "") not in self.settings.api_keys:
            ctx.record(request_id, "rejected")
            return web.Response(status=403, body=INACTIVE_PAGE, content_type="text/html")
        if self.over_limit():
            ctx.note_throttled(request_id)
            return self.throttle_answer()
        if not self.token_ok(request):
            ctx.count("unauthorized")
            ctx.record(request_id, "rejected")
            return json_response(401, error_body("UNAUTHORIZED", "access token invalid or expired"))
        draw = ctx.screen_fault(request_id, self.throttle_answer)
        if isinstance(draw, web.Response):
            return draw
        verdict = self.evaluate(endpoint, await request.read())
        entries = [verdict.entry] if verdict.entry is not None else []
        if draw.fault.withholds:
            return await ctx.withhold(request, request_id, draw, entries)
        accepted = verdict.entry is not None and verdict.entry["status"] == "accepted"
        ctx.record(request_id, "accepted" if accepted else "rejected", processed=True, recipients=entries)
        if verdict.payload is None:
            return web.Response(status=verdict.status)
        return json_response(verdict.status, verdict.payload)


def create_app(ctx: VendorContext) -> web.Application:
    """The Sprinklr sub-application (registered in sim.vendors)."""
    sim = SprinklrSim(ctx)
    app = web.Application()
    app.router.add_post("/oauth/token", sim.oauth_token)
    app.router.add_post("/{env}/oauth/token", sim.oauth_token)
    app.router.add_post("/api/marketing-journey/{endpoint}", sim.journey)
    app.router.add_post("/api/v2/marketing-journey/{endpoint}", sim.journey)
    app.router.add_post("/{env}/api/v2/marketing-journey/{endpoint}", sim.journey)
    return app
