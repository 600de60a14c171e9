"""MedChat journeys simulator: bulk trigger (main flow and subflows), cancel, static tokens.

Mounted under ``/medchat``: a connection's ``base_url`` is ``http://HOST:PORT/medchat``.
A request is accepted whole (204, no body) or refused whole (400 with an array of
messages). Instances are remembered by their identifier parameter; their journey instance
id is derived from it (``instance_id_for``) so tests can cancel them. The log's recipient
key is the identifier parameter's value for a trigger, the journey instance id for a cancel.
"""

from __future__ import annotations

import functools
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from sim.config import MedChatJourneyConfig
from sim.context import VendorContext, json_response
from sim.faults import FaultDraw
from sim.log import RecipientEntry
from sim.responsys import unknown_matcher

BULK_PATH = "/chatbotapi/external/orgs/{orgId}/journeys/{chatBotId}/instances/bulk"
CANCEL_PATH = "/chatbotapi/orgs/{orgId}/journeys/{chatBotId}/instances/{journeyInstanceId}/execution"
INSTANCES_PATH = "/_sim/instances"
CREATE_SCOPE = "create.journey_instances"

_NAMESPACE = uuid.UUID("6d0a3c1e-5f0b-4f4e-8c51-2b7e9f1d3a77")


def instance_id_for(chatbot_id: str, identifier: str) -> str:
    """The journey instance id the simulator gives the instance with this identifier."""
    return str(uuid.uuid5(_NAMESPACE, f"{chatbot_id}/{identifier}"))


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


@dataclass
class Instance:
    chatbot_id: str
    identifier: str
    running: bool = True
    subflows: int = 0


class Refused(NamedTuple):
    """The request is refused whole: 400 with these messages."""

    messages: list[str]


class Accepted(NamedTuple):
    """Every instance of the request is accepted: their identifiers, in order."""

    identifiers: list[str]
    subflow: bool

    @property
    def entries(self) -> list[RecipientEntry]:
        return [{"key": key, "status": "accepted"} for key in self.identifiers]


class MedChatSim:
    """State of one simulated MedChat organization."""

    def __init__(self, ctx: VendorContext) -> None:
        self.ctx = ctx
        self.settings = ctx.config.medchat
        self._rejected = unknown_matcher(self.settings.reject_pattern)
        self.instances: dict[str, Instance] = {}
        for key in ("instances_started", "subflows_started", "instances_cancelled", "cancel_not_found"):
            ctx.counters.setdefault(key, 0)

    # ------------------------------------------------------------ shared checks

    def _denied(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scopes = self.settings.tokens.get(header[7:]) if header.startswith("Bearer ") else None
        if scopes is None:
            return json_response(401, {"message": "Authorization has been denied for this request."})
        if CREATE_SCOPE not in scopes:
            return json_response(403, {"message": f"The access token does not have the {CREATE_SCOPE} scope."})
        return None

    def _journey(self, request: web.Request) -> MedChatJourneyConfig | web.Response:
        org = request.match_info["orgId"]
        chatbot = request.match_info["chatBotId"]
        journey = self.settings.journeys.get(chatbot)
        if org != self.settings.org_id or journey is None:
            return json_response(404, [f"Journey {chatbot} was not found in organization {org}."])
        return journey

    @staticmethod
    def _throttled() -> web.Response:
        return json_response(429, ["Too many requests. Please retry later."], headers={"Retry-After": "1"})

    async def _gate(self, request: web.Request) -> tuple[str, MedChatJourneyConfig, FaultDraw] | web.Response:
        """Auth, journey, rate limit and injected faults, in the order a gateway applies them.

        Past them: the request id, the journey and the fault drawn (a withholding one is the caller's).
        """
        ctx = self.ctx
        request_id = await ctx.begin(request)
        denied = self._denied(request)
        if denied is not None:
            ctx.record(request_id, "rejected")
            return denied
        journey = self._journey(request)
        if isinstance(journey, web.Response):
            ctx.record(request_id, "rejected")
            return journey
        draw = ctx.admit(request_id, self._throttled)
        if isinstance(draw, web.Response):
            return draw
        return request_id, journey, draw

    # ------------------------------------------------------------ trigger

    def evaluate(self, chatbot_id: str, journey: MedChatJourneyConfig, body: bytes) -> Refused | Accepted:
        """Validate a bulk request against the journey; nothing is applied here."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Refused(["The request body is not valid JSON."])
        if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
            return Refused(["'instances' is required and must be an array."])
        messages: list[str] = []
        flow_id = document.get("flowId")
        subflow = flow_id is not None
        if subflow and flow_id not in journey.subflows:
            messages.append(f"Flow '{flow_id}' does not exist on this journey.")
        time_zone = document.get("timeZone")
        if time_zone is None and journey.datetime_parameters:
            messages.append("'timeZone' is required because the journey has datetime parameters.")
        elif time_zone is not None and (not isinstance(time_zone, str) or time_zone not in _time_zones()):
            messages.append(f"'{time_zone}' is not a valid IANA time zone.")
        instances: list[Any] = document["instances"]
        limit = self.settings.max_instances
        if limit is not None and len(instances) > limit:
            messages.append(f"At most {limit} instances can be triggered in one request.")
        identifiers: list[str] = []
        seen: set[str] = set()
        for position, instance in enumerate(instances):
            problems = self._instance_problems(chatbot_id, journey, instance, subflow)
            messages += [f"Instance {position}: {problem}" for problem in problems]
            if not problems:
                key = instance["parameters"][journey.identifier]
                if key in seen:
                    messages.append(f"Instance {position}: {journey.identifier} '{key}' appears more than once.")
                seen.add(key)
                identifiers.append(key)
        return Refused(messages) if messages else Accepted(identifiers, subflow)

    def _instance_problems(
        self, chatbot_id: str, journey: MedChatJourneyConfig, instance: Any, subflow: bool
    ) -> list[str]:
        parameters = instance.get("parameters") if isinstance(instance, dict) else None
        if not isinstance(parameters, dict):
            return ["'parameters' is required and must be an object."]
        problems = [
            f"'{name}' is not a parameter of this journey." for name in parameters if name not in journey.parameters
        ]
        for name in journey.parameters:
            value = parameters.get(name)
            if value is None:
                problems.append(f"parameter '{name}' is required.")
            elif not isinstance(value, str):
                problems.append(f"parameter '{name}' must be a string.")
            elif name in journey.datetime_parameters and not self._is_datetime(value):
                problems.append(f"parameter '{name}' value '{value}' is not a date and time like 2023-12-01 08:00:00.")
        key = parameters.get(journey.identifier)
        if problems or not isinstance(key, str):
            return problems
        if self._rejected(key):
            problems.append(f"no patient record matches {journey.identifier} '{key}'.")
        elif subflow:
            existing = self.instances.get(instance_id_for(chatbot_id, key))
            if existing is None or not existing.running:
                problems.append(f"no running instance matches {journey.identifier} '{key}'.")
        return problems

    def _is_datetime(self, value: str) -> bool:
        try:
            datetime.strptime(value, self.settings.datetime_format)
        except ValueError:
            return False
        return True

    def apply(self, chatbot_id: str, accepted: Accepted) -> None:
        for key in accepted.identifiers:
            instance_id = instance_id_for(chatbot_id, key)
            if accepted.subflow:
                self.instances[instance_id].subflows += 1
            else:
                self.instances[instance_id] = Instance(chatbot_id, key)
        self.ctx.count("subflows_started" if accepted.subflow else "instances_started", len(accepted.identifiers))

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        gate = await self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        request_id, journey, draw = gate
        chatbot_id = request.match_info["chatBotId"]
        outcome = self.evaluate(chatbot_id, journey, await request.read())
        if draw.fault.withholds:
            entries: list[RecipientEntry] = []
            if isinstance(outcome, Accepted):
                entries = outcome.entries
                if draw.processed:
                    self.apply(chatbot_id, outcome)
            return await ctx.withhold(request, request_id, draw, entries)
        if isinstance(outcome, Refused):
            ctx.record(request_id, "rejected")
            return json_response(400, outcome.messages)
        self.apply(chatbot_id, outcome)
        ctx.record(request_id, "accepted", processed=True, recipients=outcome.entries, accepted=len(outcome.entries))
        return web.Response(status=204)

    # ------------------------------------------------------------ cancel

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        gate = await self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        request_id, _, draw = gate
        chatbot_id = request.match_info["chatBotId"]
        instance_id = request.match_info["journeyInstanceId"]
        instance = self.instances.get(instance_id)
        known = instance is not None and instance.chatbot_id == chatbot_id and instance.running
        entries: list[RecipientEntry] = [{"key": instance_id, "status": "accepted" if known else "rejected"}]
        if draw.fault.withholds:
            if draw.processed and known and instance is not None:
                instance.running = False
                ctx.count("instances_cancelled")
            return await ctx.withhold(request, request_id, draw, entries)
        if not known or instance is None:
            ctx.count("cancel_not_found")
            ctx.record(request_id, "rejected", processed=True, recipients=entries, accepted=0)
            return json_response(404, [f"Journey instance {instance_id} was not found or has no running execution."])
        instance.running = False
        ctx.count("instances_cancelled")
        ctx.record(request_id, "accepted", processed=True, recipients=entries, accepted=1)
        return web.Response(status=204)

    # ------------------------------------------------------------ inspection (simulator only)

    async def list_instances(self, request: web.Request) -> web.Response:
        return json_response(
            200,
            [
                {
                    "journeyInstanceId": instance_id,
                    "chatBotId": instance.chatbot_id,
                    "identifier": instance.identifier,
                    "running": instance.running,
                    "subflows": instance.subflows,
                }
                for instance_id, instance in self.instances.items()
            ],
        )


def create_app(ctx: VendorContext) -> web.Application:
    """The MedChat sub-application (registered in sim.vendors)."""
    sim = MedChatSim(ctx)
    app = web.Application()
    app.router.add_post(BULK_PATH, sim.bulk)
    app.router.add_delete(CANCEL_PATH, sim.cancel)
    app.router.add_get(INSTANCES_PATH, sim.list_instances)
    return app
