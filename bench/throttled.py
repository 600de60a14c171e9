"""Pacing: Volley against a simulator that throttles above R requests/s, for any vendor.

The simulator's token bucket allows R requests a second (one second of burst); the
spec asks Volley for `limits.requests_per_second: R`. Good pacing uses the budget
(achieved rate close to R) and never hears the vendor's throttle answer (Responsys
API_LIMIT_EXCEEDED, Sprinklr's "Developer Over Rate" page, a 429 elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.vendors import BenchVendor, VendorRun, run_vendor

__all__ = ["ThrottledResult", "run_throttled"]


@dataclass
class ThrottledResult:
    rate_limit: float
    seconds: float
    """How long the run should take at the limit (its requests / R)."""
    run: VendorRun

    @property
    def rows(self) -> int:
        return self.run.rows

    @property
    def requests(self) -> int:
        """Trigger requests the simulator accepted."""
        return self.run.window.accepted

    @property
    def achieved_rps(self) -> float:
        """Trigger requests per second, first to last request, from the simulator's log."""
        return self.run.window.rate()

    @property
    def utilisation(self) -> float:
        return self.achieved_rps / self.rate_limit

    @property
    def run_rps(self) -> float:
        """Requests per second of the run's own elapsed time (planning and compaction included)."""
        volley = self.run.volley
        requests = int(volley.summary.get("requests") or 0)
        return requests / volley.elapsed_seconds if volley.elapsed_seconds > 0 else 0.0

    def figures(self, busy: dict[str, float]) -> dict[str, Any]:
        run, window = self.run, self.run.window
        return {
            "vendor": run.vendor,
            "rate_limit": self.rate_limit,
            "seconds": self.seconds,
            "rows": self.rows,
            "requests": self.requests,
            "achieved_rps": self.achieved_rps,
            "utilisation": self.utilisation,
            "run_rps": self.run_rps,
            "throttle_answers": run.throttle_answers,
            "login_throttled": run.stats.get("login_throttled", 0),
            "requests_by_result": window.by_result,
            "median_gap_seconds": window.median_gap,
            "stalls": window.stalls,
            "stall_seconds": window.stall_seconds,
            "window_seconds": window.span_seconds,
            "elapsed_seconds": run.volley.elapsed_seconds,
            "wall_seconds": run.volley.wall_seconds,
            "complete": run.complete,
            "busy": busy,
        }


def run_throttled(vendor: BenchVendor, rate: float, seconds: float, work_dir: Path, run_key: str) -> ThrottledResult:
    """Enough rows for about `seconds` at `rate` requests/s, whole requests of the vendor's batch size."""
    per_request = vendor.recipients_per_request()
    rows = max(per_request, round(rate * seconds) * per_request)
    return ThrottledResult(rate, seconds, run_vendor(vendor, rows, work_dir, run_key, rate=rate))
