"""Oracle Responsys simulator: login, token refresh, Trigger REI Event, rate limits.

Mounted under ``/responsys``; paths below are relative to that prefix, so a
client's login host and ``endPoint`` are both ``http://HOST:PORT/responsys``.
"""

from __future__ import annotations

import re
import secrets
import time
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from sim.context import JSON_CONTENT_TYPE, VendorContext, json_response
from sim.log import RecipientEntry
from sim.throttle import TokenBucket

AUTH_PATH = "/rest/api/v1.3/auth/token"
TRIGGER_PATH = "/rest/api/v1.3/events/rei/{eventName}"
RATELIMIT_PATH = "/rest/api/ratelimit"

MAX_RECIPIENTS = 200
IDENTIFIER_FIELDS: tuple[str, ...] = (
    "recipientId",
    "emailAddress",
    "customerId",
    "mobileNumber",
    "emailMD5Hash",
    "emailSHA256Hash",
)

ONE_CHANNEL = "Request should contain data for only one channel."
NO_RECIPIENT_FOUND = "NO_RECIPIENT_FOUND"
PUSH_IDS_MISSING = "deviceId and apiKey can not be null or empty for push recipient."
WEB_PUSH_IDS_MISSING = "visitorId and apiKey can not be null or empty for web push recipient."
PUSH_LIST_INVALID = "Push channel List: is not valid."
WEB_PUSH_LIST_INVALID = "Web Push channel List: is not valid."

THROTTLE_DETAIL = "Request rate limit exceeded for the API: triggerCustomEvent per minute"
LOGIN_THROTTLE_DETAIL = "Request rate limit exceeded for the API: login per minute"


def error_body(title: str, code: str, detail: str) -> dict[str, Any]:
    """Responsys request-level error document."""
    return {
        "type": "",
        "title": title,
        "errorCode": code,
        "detail": detail,
        "errorDetails": [],
    }


def recipient_id_for(key: str) -> int:
    """Stable positive recipientId for an identifier (never -1/-2/0)."""
    return (zlib.crc32(key.encode()) & 0x7FFFFFFF) or 1


class Rejection(NamedTuple):
    """A request-level refusal (nothing applied)."""

    status: int
    payload: dict[str, Any]


class Applied(NamedTuple):
    """Per-recipient results (the HTTP answer) and log entries, in request order."""

    results: list[dict[str, Any]]
    entries: list[RecipientEntry]
    accepted: int


def _app_channel(recipient: dict[str, Any], mobile: Any, webpush: Any) -> tuple[str | None, str]:
    """(error message or None, key) for a push or web-push recipient."""
    if mobile is not None and webpush is not None:
        return ONE_CHANNEL, ""
    if mobile is not None:
        id_field, channel, missing, bad_list = (
            "deviceId",
            mobile,
            PUSH_IDS_MISSING,
            PUSH_LIST_INVALID,
        )
    else:
        id_field, channel, missing, bad_list = (
            "visitorId",
            webpush,
            WEB_PUSH_IDS_MISSING,
            WEB_PUSH_LIST_INVALID,
        )
    if not isinstance(channel, dict):
        return missing, ""
    value = channel.get(id_field)
    key = "" if value is None else str(value)
    if not key or channel.get("apiKey") in (None, ""):
        return missing, key
    if not recipient.get("listName"):
        return bad_list, key
    return None, key


def unknown_matcher(pattern: str) -> Callable[[str], bool]:
    """Predicate for identifiers that resolve to no recipient.

    A plain ``^prefix`` pattern becomes str.startswith (4x cheaper than re).
    """
    body = pattern[1:]
    if pattern.startswith("^") and body and re.escape(body) == body:
        return lambda key: key.startswith(body)
    search = re.compile(pattern).search
    return lambda key: search(key) is not None


def evaluate_recipients(recipient_data: list[Any], is_unknown: Callable[[str], bool]) -> Applied:
    """Apply the documented per-recipient rules, one result per item in order.

    This is the simulator's hot loop (200 recipients a request): keep it lean.
    """
    results: list[dict[str, Any]] = []
    entries: list[RecipientEntry] = []
    add_result = results.append
    add_entry = entries.append
    crc32 = zlib.crc32
    empty: dict[str, Any] = {}
    accepted = 0
    for item in recipient_data:
        recipient = item.get("recipient", empty) if type(item) is dict else empty
        if type(recipient) is not dict:
            recipient = empty
        get = recipient.get
        mobile = get("mobileAppRecipient")
        webpush = get("webPushAppRecipient")
        key = ""
        message: str | None = None
        if mobile is None and webpush is None:
            if not get("listName"):
                message = ONE_CHANNEL
            else:
                for name in IDENTIFIER_FIELDS:
                    value = get(name)
                    if value is not None and value != "":
                        key = value if type(value) is str else str(value)
                        break
                else:
                    message = NO_RECIPIENT_FOUND
        else:
            message, key = _app_channel(recipient, mobile, webpush)
        if message is None and not is_unknown(key):
            add_result(
                {
                    "errorMessage": None,
                    "success": True,
                    "recipientId": (crc32(key.encode()) & 0x7FFFFFFF) or 1,
                }
            )
            add_entry({"key": key, "status": "accepted"})
            accepted += 1
        else:
            add_result(
                {
                    "errorMessage": message or NO_RECIPIENT_FOUND,
                    "success": False,
                    "recipientId": -1,
                }
            )
            add_entry({"key": key, "status": "rejected"})
    return Applied(results, entries, accepted)


class ResponsysSim:
    """State of one simulated Responsys account (tokens, login throttle)."""

    def __init__(self, ctx: VendorContext) -> None:
        self.ctx = ctx
        self.settings = ctx.config.responsys
        self._is_unknown = unknown_matcher(self.settings.unknown_recipient_pattern)
        self._tokens: dict[str, float] = {}
        per_minute = self.settings.login_per_minute
        self._login_bucket = TokenBucket(per_minute / 60.0, per_minute, clock=ctx.clock)
        self._throttle_body = orjson.dumps(error_body("API limit exceeded", "API_LIMIT_EXCEEDED", THROTTLE_DETAIL))
        for key in ("logins", "refreshes", "login_failures", "login_throttled"):
            ctx.counters.setdefault(key, 0)

    # ------------------------------------------------------------ auth

    def _issue_token(self, request: web.Request) -> web.Response:
        token = secrets.token_urlsafe(32)
        now = self.ctx.clock()
        self._tokens[token] = now + self.settings.token_ttl_seconds
        if len(self._tokens) > 1024:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        return json_response(
            200,
            {
                "authToken": token,
                "issuedAt": int(time.time() * 1000),
                "endPoint": f"{request.scheme}://{request.host}{self.ctx.prefix}",
            },
        )

    def token_error(self, request: web.BaseRequest) -> web.Response | None:
        """None when the Authorization header holds a current token, else the 401."""
        token = request.headers.get("Authorization", "")
        expiry = self._tokens.get(token)
        if expiry is None:
            return json_response(
                401,
                error_body("Unauthorized", "INVALID_TOKEN", "Not a valid authentication token"),
            )
        if self.ctx.clock() >= expiry:
            return json_response(
                401,
                error_body("Unauthorized", "TOKEN_EXPIRED", "Authentication token expired"),
            )
        return None

    async def auth_token(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.apply_latency()
        if not self._login_bucket.try_acquire():
            ctx.count("login_throttled")
            return json_response(
                401,
                error_body("API limit exceeded", "API_LIMIT_EXCEEDED", LOGIN_THROTTLE_DETAIL),
            )
        form = await request.post()
        auth_type = str(form.get("auth_type", "password"))
        if auth_type == "token":
            denied = self.token_error(request)
            if denied is not None:
                ctx.count("login_failures")
                return denied
            ctx.count("refreshes")
            return self._issue_token(request)
        if auth_type != "password":
            return json_response(
                400,
                error_body(
                    "Invalid parameter",
                    "INVALID_PARAMETER",
                    f"auth_type must be password or token, not {auth_type[:40]!r}",
                ),
            )
        user = str(form.get("user_name", ""))
        password = str(form.get("password", ""))
        expected = self.settings.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            ctx.count("login_failures")
            return json_response(
                401,
                error_body(
                    "Unauthorized",
                    "INVALID_USER_NAME_PASSWORD",
                    "The user name or password is not valid",
                ),
            )
        ctx.count("logins")
        return self._issue_token(request)

    # ------------------------------------------------------------ trigger

    def throttle_answer(self) -> web.Response:
        return web.Response(
            status=self.settings.throttle_status,
            body=self._throttle_body,
            content_type=JSON_CONTENT_TYPE,
        )

    def evaluate(self, event: str, body: bytes) -> Rejection | Applied:
        """Validate a trigger request and compute its per-recipient results."""
        if not body.isascii():
            return Rejection(
                400,
                error_body(
                    "Invalid request content",
                    "INVALID_REQUEST_CONTENT",
                    "Request content is not valid: non-ASCII characters must be escaped as \\uXXXX",
                ),
            )
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Rejection(
                400,
                error_body(
                    "Invalid parameter",
                    "INVALID_PARAMETER",
                    "Request body is not valid JSON",
                ),
            )
        recipient_data = document.get("recipientData") if isinstance(document, dict) else None
        if not isinstance(recipient_data, list):
            return Rejection(
                400,
                error_body(
                    "Invalid parameter",
                    "INVALID_PARAMETER",
                    "recipientData is required and must be an array",
                ),
            )
        if event not in self.settings.events:
            return Rejection(
                404,
                error_body(
                    "Rei event not found",
                    "REI_EVENT_NOT_FOUND",
                    f"Unable to retrieve EventDefinition for eventName:{event} for account:{self.settings.account}",
                ),
            )
        if len(recipient_data) > MAX_RECIPIENTS:
            return Rejection(
                400,
                error_body(
                    "Recipient limit exceeded",
                    "RECIPIENT_LIMIT_EXCEEDED",
                    "Recipient limit exceeded, maximum of 200 recipients are allowed per each api call",
                ),
            )
        return evaluate_recipients(recipient_data, self._is_unknown)

    async def trigger(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        request_id = await ctx.begin(request)
        denied = self.token_error(request)
        if denied is not None:
            ctx.record(request_id, "rejected")
            return denied
        draw = ctx.admit(request_id, self.throttle_answer)
        if isinstance(draw, web.Response):
            return draw
        body = await request.read()
        outcome = self.evaluate(request.match_info["eventName"], body)
        if draw.fault.withholds:
            entries = outcome.entries if isinstance(outcome, Applied) else []
            return await ctx.withhold(request, request_id, draw, entries)
        if isinstance(outcome, Rejection):
            ctx.record(request_id, "rejected")
            return json_response(outcome.status, outcome.payload)
        ctx.record(
            request_id,
            "accepted",
            processed=True,
            recipients=outcome.entries,
            accepted=outcome.accepted,
        )
        return web.Response(
            status=200,
            body=orjson.dumps(outcome.results),
            content_type=JSON_CONTENT_TYPE,
        )

    # ------------------------------------------------------------ rate limits

    async def ratelimit(self, request: web.Request) -> web.Response:
        denied = self.token_error(request)
        if denied is not None:
            return denied
        config = self.ctx.config
        trigger_limit = self.settings.trigger_limit_per_minute
        if trigger_limit is None and config.rate_limit is not None:
            trigger_limit = round(config.rate_limit * 60)
        return json_response(
            200,
            [
                {
                    "limit": trigger_limit,
                    "api": "triggerCustomEvent",
                    "resource_path": "/events/rei/{eventName}",
                    "verb": "POST",
                    "description": "Trigger REI Event",
                    "simRatePerSecond": config.rate_limit,
                    "simBurst": config.bucket_capacity,
                },
                {
                    "limit": self.settings.login_per_minute,
                    "api": "login",
                    "resource_path": "/auth/token",
                    "verb": "POST",
                    "description": "Login and token refresh",
                },
            ],
        )


def create_app(ctx: VendorContext) -> web.Application:
    """The Responsys sub-application (registered in sim.vendors)."""
    sim = ResponsysSim(ctx)
    app = web.Application()
    app.router.add_post(AUTH_PATH, sim.auth_token)
    app.router.add_post(TRIGGER_PATH, sim.trigger)
    app.router.add_get(RATELIMIT_PATH, sim.ratelimit)
    return app
