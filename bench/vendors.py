"""Every vendor as the benchmark runs it: an audience, a spec, a simulator of its own.

`run_vendor` writes a deterministic audience and a spec, starts a simulator (no latency, no
faults, the vendor's own simulated limits lifted), runs `volley run` against it and reads the
simulator's log and counters.

- Unthrottled (`rate=None`): no token bucket in the simulator and no pace in the spec (a
  vendor with a published default pace gets one far above what is reached), so the figure
  is Volley's throughput for that vendor.
- Throttled at R: the simulator's token bucket allows R requests/s per vendor (one second
  of burst) and the spec asks for `limits.requests_per_second: R` (`bench.throttled`).

MedChat, Relay, Sprinklr and Intilery run their sample campaign (`campaigns/`: vendor
params, connection, batch size) over a generated audience of the sample's shape
(`bench.vendor_audiences`); only the name, the source and the limits are the benchmark's.
Responsys runs the benchmark's own spec (`bench.volley_runner.responsys_spec`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl
import yaml

from bench.audience import audience_frame
from bench.simulator import RequestWindow, bench_simulator, request_window, vendor_stats
from bench.vendor_audiences import intilery_audience, medchat_audience, relay_audience, sprinklr_audience
from bench.volley_runner import REPO_ROOT, VolleyResult, responsys_spec, run_volley, write_spec
from connectors import connector_class

__all__ = ["INTILERY", "MEDCHAT", "RELAY", "RESPONSYS", "SPRINKLR", "VENDORS", "BenchVendor", "VendorRun", "run_vendor"]

# "No pace" for a vendor whose connector paces by default when the spec says nothing.
UNPACED_REQUESTS_PER_SECOND = 1_000_000.0
UNPACED_REQUESTS_PER_HOUR = 1_000_000_000
_SPEC_KEYS_OF_THE_BENCH = ("name", "source", "limits", "schedule", "results_dir", "ledger")


@dataclass(frozen=True)
class BenchVendor:
    name: str
    """The spec's vendor and the simulator's prefix."""
    audience: Callable[[int], pl.DataFrame]
    campaign: str | None = None
    """The sample campaign under campaigns/ the spec is made from; None: the benchmark's Responsys spec."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The simulator's demo credentials, as the spec's `{env: ...}` references name them."""
    simulator_limits: tuple[str, ...] = ()
    """Fields of the vendor's simulator config that are limits of its own (lifted: the bench sets the rate)."""
    token_store: bool = False
    """A fresh token store per run (Sprinklr: a new simulator does not know tokens rotated in an earlier run)."""

    def _vendor_part(self) -> dict[str, Any]:
        if self.campaign is None:
            return responsys_spec()
        campaign = yaml.safe_load((REPO_ROOT / "campaigns" / self.campaign).read_text(encoding="utf-8"))
        return {k: v for k, v in campaign.items() if k not in _SPEC_KEYS_OF_THE_BENCH}

    def vendor_spec(self, work_dir: Path) -> dict[str, Any]:
        """The vendor half of the spec: vendor, key, vendor_params, connection (and the campaign's batch size)."""
        spec = self._vendor_part()
        if self.token_store:
            spec["connection"] = {**spec["connection"], "token_store_dir": str(work_dir / "tokens")}
        return spec

    def url_path(self) -> str:
        """Where the connector's base URL points under the simulator's (e.g. /relay/platform/v3/api)."""
        return urlsplit(str(self._vendor_part()["connection"]["base_url"])).path

    def recipients_per_request(self) -> int:
        """The spec's batch size, else the connector's default."""
        size = self._vendor_part().get("batch_size")
        return int(size) if size else connector_class(self.name).default_batch_rows

    def limits(self, rate: float | None) -> dict[str, Any]:
        """The spec's pace: `rate` requests/s, or none at all; an hourly quota only where the vendor has a
        default one, and then too high to matter."""
        connector = connector_class(self.name)
        unpaced = UNPACED_REQUESTS_PER_SECOND if connector.default_requests_per_second else None
        return {
            "requests_per_second": unpaced if rate is None else rate,
            "requests_per_hour": UNPACED_REQUESTS_PER_HOUR if connector.default_requests_per_hour else None,
        }

    def simulator_options(self) -> dict[str, object]:
        return {f"{self.name}.{name}": None for name in self.simulator_limits}


RESPONSYS = BenchVendor("responsys", audience_frame)
MEDCHAT = BenchVendor(
    "medchat",
    medchat_audience,
    campaign="medchat_appointment_reminder.yaml",
    env={"MEDCHAT_TOKEN": "medchat-demo-token"},
)
RELAY = BenchVendor(
    "relay",
    relay_audience,
    campaign="relay_delivery_reminder.yaml",
    env={"RELAY_API_KEY": "relay-demo-key"},
)
SPRINKLR = BenchVendor(
    "sprinklr",
    sprinklr_audience,
    campaign="sprinklr_welcome_journey.yaml",
    env={
        "SPRINKLR_API_KEY": "sprinklr-demo-key",
        "SPRINKLR_ACCESS_TOKEN": "sprinklr-demo-access",
        "SPRINKLR_REFRESH_TOKEN": "sprinklr-demo-refresh",
        "SPRINKLR_CLIENT_SECRET": "sprinklr-demo-secret",
    },
    simulator_limits=("requests_per_second", "requests_per_hour"),
    token_store=True,
)
INTILERY = BenchVendor(
    "intilery",
    intilery_audience,
    campaign="intilery_abandoned_booking.yaml",
    env={"INTILERY_AUTH_TOKEN": "intilery-demo-token"},
    simulator_limits=("requests_per_second",),
)
VENDORS: dict[str, BenchVendor] = {v.name: v for v in (MEDCHAT, RELAY, SPRINKLR, INTILERY)}
"""The vendors with a row of their own (Responsys has the rest of the benchmark)."""


@dataclass
class VendorRun:
    vendor: str
    rows: int
    rate_limit: float | None
    volley: VolleyResult
    window: RequestWindow
    """The simulator's log: requests by result, the accepted ones' span, recipients triggered."""
    stats: dict[str, int]
    """The simulator's counters for this vendor at the end of the run (a fresh simulator)."""

    @property
    def throttle_answers(self) -> int:
        return self.stats.get("throttled", 0)

    @property
    def complete(self) -> bool:
        """Volley's check (exit 0, one outcome per row, all accepted) and the simulator's: each row triggered once."""
        window = self.window
        return self.volley.complete and window.recipients_accepted == window.distinct_recipients_accepted == self.rows

    def figures(self) -> dict[str, Any]:
        volley = self.volley
        requests = int(volley.summary.get("requests") or 0)
        return {
            "rows": self.rows,
            "requests": requests,
            "recipients_per_request": round(self.rows / requests, 1) if requests else None,
            "recipients_per_second": volley.recipients_per_second,
            "elapsed_seconds": volley.elapsed_seconds,
            "wall_seconds": volley.wall_seconds,
            "wall_recipients_per_second": volley.wall_recipients_per_second,
            "retries": int(volley.summary.get("retries") or 0),
            "throttled_by_volley": int(volley.summary.get("throttled") or 0),
            "throttle_answers": self.throttle_answers,
            "counts": volley.summary.get("counts") or {},
            "outcome_rows": volley.outcome_rows,
            "outcome_accepted": volley.outcome_accepted,
            "recipients_accepted_by_simulator": self.window.recipients_accepted,
            "distinct_recipients_accepted_by_simulator": self.window.distinct_recipients_accepted,
            "requests_by_result": self.window.by_result,
            "peak_rss_mib": volley.peak_rss_mib,
            "exit_code": volley.exit_code,
            "complete": self.complete,
        }


def run_vendor(vendor: BenchVendor, rows: int, work_dir: Path, run_key: str, *, rate: float | None = None) -> VendorRun:
    """One `volley run` of `rows` recipients against a simulator of its own (throttled at `rate` requests/s).

    Files go under work_dir/<vendor>[-throttled]; the Prefect home is work_dir's, shared by every run.
    """
    label = vendor.name if rate is None else f"{vendor.name}-throttled"
    files = work_dir / label
    files.mkdir(parents=True, exist_ok=True)
    audience = files / "audience.parquet"
    vendor.audience(rows).write_parquet(audience, row_group_size=100_000)
    spec = write_spec(
        files / "spec.yaml",
        name=f"bench-{label}",
        audience=audience,
        vendor_spec=vendor.vendor_spec(files),
        **vendor.limits(rate),
    )
    with bench_simulator(files / "sim.ndjson", rate_limit=rate, vendor_options=vendor.simulator_options()) as sim:
        volley = run_volley(
            spec,
            base_url=f"{sim.base_url}{vendor.url_path()}",
            run_key=run_key,
            results_dir=files / "results",
            work_dir=work_dir,
            expected_rows=rows,
            env=vendor.env,
        )
        stats = {k: v for k, v in vendor_stats(sim, vendor.name).items() if isinstance(v, int)}
    return VendorRun(vendor.name, rows, rate, volley, request_window(sim.log_path, vendor.name), stats)
