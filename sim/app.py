"""The simulator application: every registered vendor under its own prefix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from sim.config import SimConfig
from sim.context import VendorContext, json_response
from sim.faults import FaultInjector
from sim.log import SimLog
from sim.throttle import TokenBucket
from sim.vendors import VENDORS, VendorFactory

LOG_KEY = web.AppKey("sim_log", SimLog)
VENDORS_KEY = web.AppKey("sim_vendors", dict[str, VendorContext])

CLIENT_MAX_SIZE = 16 * 1024 * 1024


def make_context(name: str, config: SimConfig, log: SimLog) -> VendorContext:
    """A vendor's context: own fault stream (seeded with config.seed) and bucket."""
    capacity = config.bucket_capacity
    bucket = (
        TokenBucket(config.rate_limit, capacity) if config.rate_limit is not None and capacity is not None else None
    )
    return VendorContext(
        name=name,
        prefix=f"/{name}",
        config=config,
        log=log,
        faults=FaultInjector(config.faults, config.seed),
        bucket=bucket,
    )


def _stats_handler(
    ctx: VendorContext,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def stats(request: web.Request) -> web.Response:
        return json_response(200, ctx.stats())

    return stats


def build_app(config: SimConfig, vendors: Mapping[str, VendorFactory] | None = None) -> web.Application:
    """Root app: ``/health``, ``POST /_sim/flush``, and each vendor under ``/<name>`` with ``/_sim/stats``."""
    registry = VENDORS if vendors is None else vendors
    log = SimLog(config.log_path, flush_interval=config.log_flush_seconds)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[LOG_KEY] = log
    contexts: dict[str, VendorContext] = {}
    for name, factory in registry.items():
        ctx = make_context(name, config, log)
        sub = factory(ctx)
        sub.router.add_get("/_sim/stats", _stats_handler(ctx))
        app.add_subapp(ctx.prefix, sub)
        contexts[name] = ctx
    app[VENDORS_KEY] = contexts

    async def health(request: web.Request) -> web.Response:
        return json_response(200, {"status": "ok", "vendors": sorted(contexts)})

    async def flush_log(request: web.Request) -> web.Response:
        log.flush()
        return json_response(200, {"lines_written": log.lines_written})

    async def start_log(app: web.Application) -> None:
        await log.start()

    async def close_log(app: web.Application) -> None:
        await log.close()

    app.router.add_get("/health", health)
    app.router.add_post("/_sim/flush", flush_log)
    app.on_startup.append(start_log)
    app.on_cleanup.append(close_log)
    return app
