"""Pacing: Volley against a simulator that throttles above R requests/s.

The simulator's token bucket allows R requests a second (one second of burst); the
spec asks Volley for `limits.requests_per_second: R`. Good pacing uses the budget
(achieved rate close to R) and never hears API_LIMIT_EXCEEDED.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.audience import write_audience
from bench.simulator import RequestWindow, request_window, responsys_stats, start_simulator, stats_delta
from bench.volley_runner import VolleyResult, run_volley, write_spec

__all__ = ["ThrottledResult", "run_throttled"]

BATCH_ROWS = 200


@dataclass
class ThrottledResult:
    rate_limit: float
    rows: int
    volley: VolleyResult
    window: RequestWindow
    throttle_answers: int
    login_throttled: int

    @property
    def achieved_rps(self) -> float:
        """Trigger requests per second, first to last request, from the simulator's log."""
        return self.window.rate()

    @property
    def utilisation(self) -> float:
        return self.achieved_rps / self.rate_limit

    @property
    def run_rps(self) -> float:
        """Requests per second of the run's own elapsed time (planning and compaction included)."""
        requests = int(self.volley.summary.get("requests") or 0)
        return requests / self.volley.elapsed_seconds if self.volley.elapsed_seconds > 0 else 0.0


def run_throttled(rate: float, seconds: float, work_dir: Path, run_key: str) -> ThrottledResult:
    rows = max(BATCH_ROWS, round(rate * seconds) * BATCH_ROWS)
    audience = write_audience(work_dir / "throttled-audience.parquet", rows)
    spec = write_spec(work_dir / "throttled.yaml", name="bench-throttled", audience=audience, requests_per_second=rate)
    sim = start_simulator(work_dir / "throttled-sim.ndjson", rate_limit=rate)
    try:
        before = responsys_stats(sim)
        volley = run_volley(
            spec,
            base_url=sim.responsys_url,
            run_key=run_key,
            results_dir=work_dir / "results",
            work_dir=work_dir,
            expected_rows=rows,
        )
        delta = stats_delta(before, responsys_stats(sim))
    finally:
        sim.stop()
    window = request_window(sim.log_path)
    return ThrottledResult(
        rate_limit=rate,
        rows=rows,
        volley=volley,
        window=window,
        throttle_answers=delta.get("throttled", 0),
        login_throttled=delta.get("login_throttled", 0),
    )
