"""Volley's vendor simulator: fake vendor APIs with faults, throttling and a log."""

from __future__ import annotations

from sim.config import FaultRates, ResponsysSimConfig, SimConfig, config_from_options

__all__ = ["FaultRates", "ResponsysSimConfig", "SimConfig", "config_from_options"]
