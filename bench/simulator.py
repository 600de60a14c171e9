"""The vendor simulator as the benchmark uses it: a subprocess, its counters, its log."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from sim.log import accepted_recipients, read_log
from sim.testing import SimulatorProcess

__all__ = ["STALL_SECONDS", "RequestWindow", "bench_simulator", "request_window", "stats_delta", "vendor_stats"]


def bench_simulator(
    log_path: Path, rate_limit: float | None = None, vendor_options: Mapping[str, object] | None = None
) -> SimulatorProcess:
    """The simulator as the bench runs it (`with bench_simulator(...) as sim`: started, then stopped):
    no latency, no faults; a token bucket of `rate_limit` requests/s per vendor when given.

    `vendor_options` set fields of a vendor's own simulator config (`volley sim --vendor-option`),
    e.g. {"sprinklr.requests_per_hour": None} lifts Sprinklr's hourly quota.
    """
    extra = [
        arg
        for name, value in (vendor_options or {}).items()
        for arg in ("--vendor-option", f"{name}={json.dumps(value)}")
    ]
    return SimulatorProcess(
        latency_ms=0.0,
        rate_limit=rate_limit,
        log_path=log_path,
        extra_args=extra,
        python=sys.executable,
        startup_timeout=60.0,
    )


def vendor_stats(sim: SimulatorProcess, vendor: str) -> dict[str, Any]:
    """One simulated vendor's counters (GET /<vendor>/_sim/stats)."""
    response = httpx.get(f"{sim.base_url}/{vendor}/_sim/stats", timeout=10.0)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) - int(before.get(k, 0)) for k, v in after.items() if isinstance(v, int)}


class RequestWindow:
    """Trigger requests the simulator logged, by result; the span of the accepted ones."""

    def __init__(
        self,
        by_result: dict[str, int],
        first_ts: float | None,
        last_ts: float | None,
        median_gap: float | None = None,
        stalls: int = 0,
        stall_seconds: float = 0.0,
        recipients_accepted: int = 0,
        distinct_recipients_accepted: int = 0,
    ) -> None:
        self.by_result = by_result
        self.recipients_accepted = recipients_accepted
        """Recipients the simulator triggered (accepted in an applied request), and how many distinct keys."""
        self.distinct_recipients_accepted = distinct_recipients_accepted
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.median_gap = median_gap
        """Median time between two accepted requests: the pace when nothing gets in the way."""
        self.stalls = stalls
        """Gaps between two accepted requests longer than STALL_SECONDS, and their total length."""
        self.stall_seconds = stall_seconds

    @property
    def accepted(self) -> int:
        return self.by_result.get("accepted", 0)

    @property
    def span_seconds(self) -> float:
        if self.first_ts is None or self.last_ts is None:
            return 0.0
        return self.last_ts - self.first_ts

    def rate(self) -> float:
        """Accepted requests per second from the first to the last of them (n - 1 intervals)."""
        span = self.span_seconds
        return (self.accepted - 1) / span if span > 0 else 0.0


STALL_SECONDS = 0.1


def request_window(log_path: Path, vendor: str = "responsys") -> RequestWindow:
    """Read the simulator's NDJSON log for one vendor (after the simulator stopped: it flushes on exit)."""
    import polars as pl

    log = read_log(log_path).filter(pl.col("vendor") == vendor)
    by_result = {str(result): int(n) for result, n in log.group_by("result").len().iter_rows()}
    triggered = accepted_recipients(log)["key"]
    recipients, distinct = triggered.len(), triggered.n_unique()
    accepted = log.filter(pl.col("result") == "accepted")["ts"].sort()
    if accepted.len() == 0:
        return RequestWindow(
            by_result, None, None, recipients_accepted=recipients, distinct_recipients_accepted=distinct
        )
    gaps = accepted.diff().drop_nulls()
    stalls = gaps.filter(gaps > STALL_SECONDS)
    return RequestWindow(
        by_result,
        float(accepted.min()),  # type: ignore[arg-type]
        float(accepted.max()),  # type: ignore[arg-type]
        median_gap=float(gaps.median()) if gaps.len() else None,  # type: ignore[arg-type]
        stalls=stalls.len(),
        stall_seconds=float(stalls.sum()),
        recipients_accepted=recipients,
        distinct_recipients_accepted=distinct,
    )
