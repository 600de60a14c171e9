"""Run the simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from sim.app import build_app
from sim.config import SimConfig

READY_PREFIX = "volley-sim listening on "
SHUTDOWN_TIMEOUT = 1.0
"""Seconds in-flight handlers (e.g. withheld answers) get before being cancelled."""


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _announce(url: str) -> None:
    sys.stdout.write(f"{READY_PREFIX}{url}\n")
    sys.stdout.flush()


async def run(
    config: SimConfig,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] = _announce,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives; flushes the log on exit."""
    stop = asyncio.Event() if stop is None else stop
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        port = config.port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                port = int(address[1])
                break
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
        on_ready(_url(config.host, port))
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def serve(config: SimConfig) -> None:
    """Blocking entry point: print ``volley-sim listening on URL`` once bound."""
    asyncio.run(run(config))
