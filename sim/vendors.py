"""The vendor registry: the one place a simulated vendor is added.

To add a vendor, write ``sim/<name>.py`` with ``create_app(ctx: VendorContext)
-> web.Application`` (routes relative to its prefix; use the ctx helpers for
latency, faults, throttle bucket, log and counters) and add it to VENDORS.
It is mounted under ``/<name>`` and gets ``/<name>/_sim/stats`` for free.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from sim import intilery, medchat, relay, responsys, sprinklr
from sim.context import VendorContext

VendorFactory = Callable[[VendorContext], web.Application]

VENDORS: dict[str, VendorFactory] = {
    "responsys": responsys.create_app,
    "medchat": medchat.create_app,
    "relay": relay.create_app,
    "sprinklr": sprinklr.create_app,
    "intilery": intilery.create_app,
}
