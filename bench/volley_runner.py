"""Volley end to end: write a campaign spec, run `volley run` as a subprocess, read what it left.

Measured: the wall time of the whole command (it starts an embedded Prefect server),
the run's own `elapsed_seconds` from summary.json (planning + sending + outcome
compaction), the peak RSS of the Volley process (the Prefect server apart), and the
outcome Parquet (one row per audience row, all accepted).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from bench.memory import RssSampler
from bench.profiling import attach_py_spy
from bench.rei import EVENT, LIST_FOLDER, LIST_OBJECT, OPTIONAL_FIELDS

__all__ = ["REPO_ROOT", "VolleyResult", "responsys_spec", "run_volley", "write_spec"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SIM_USER = "volley"
SIM_PASSWORD = "volley-secret"  # the simulator's built-in test account, not a secret


def responsys_spec() -> dict[str, Any]:
    """The vendor half of the benchmark's Responsys spec: the request `bench.rei` builds too."""
    return {
        "vendor": "responsys",
        "key": "customer_id",
        "vendor_params": {
            "event": EVENT,
            "list": {"folder": LIST_FOLDER, "object": LIST_OBJECT},
            "identify_by": "customerId",
            "optional_data": [{"name": n, "column": c} for n, c in OPTIONAL_FIELDS],
        },
        "connection": {
            "base_url": "http://127.0.0.1:9/responsys",  # replaced by --base-url
            "user_name": {"env": "RESPONSYS_USER"},
            "password": {"env": "RESPONSYS_PASSWORD"},
        },
    }


def write_spec(
    path: Path,
    *,
    name: str,
    audience: Path,
    vendor_spec: Mapping[str, Any] | None = None,
    concurrency: int = 16,
    requests_per_second: float | None = None,
    requests_per_hour: int | None = None,
    timeout_seconds: float = 30.0,
) -> Path:
    """A campaign spec: `vendor_spec` (vendor, key, vendor_params, connection, batch_size...; default
    `responsys_spec()`) with this name, this audience and these limits, no others."""
    limits: dict[str, Any] = {"concurrency": concurrency, "timeout_seconds": timeout_seconds}
    if requests_per_second is not None:
        limits["requests_per_second"] = requests_per_second
    if requests_per_hour is not None:
        limits["requests_per_hour"] = requests_per_hour
    spec = {
        "name": name,
        **(responsys_spec() if vendor_spec is None else vendor_spec),
        "source": {"path": str(audience)},
        "limits": limits,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class VolleyResult:
    exit_code: int
    wall_seconds: float
    expected_rows: int
    summary: dict[str, Any] = field(default_factory=dict)
    outcome_rows: int = 0
    outcome_accepted: int = 0
    peak_rss_mib: float = 0.0
    peak_prefect_server_rss_mib: float = 0.0
    rss_samples: int = 0
    rss_timeline: list[tuple[float, float]] = field(default_factory=list)
    profile: str | None = None
    output_tail: str = ""

    @property
    def elapsed_seconds(self) -> float:
        return float(self.summary.get("elapsed_seconds") or 0.0)

    @property
    def accepted(self) -> int:
        counts = self.summary.get("counts") or {}
        return int(counts.get("accepted", 0))

    @property
    def recipients_per_second(self) -> float:
        """Accepted recipients per second of the run's own elapsed time."""
        return self.accepted / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def wall_recipients_per_second(self) -> float:
        return self.accepted / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Exit 0, one outcome row per audience row, every one accepted."""
        return (
            self.exit_code == 0
            and self.outcome_rows == self.expected_rows
            and self.outcome_accepted == self.expected_rows
            and self.accepted == self.expected_rows
        )


def _volley_argv() -> list[str]:
    script = Path(sys.executable).parent / "volley"
    return [str(script)] if script.exists() else [sys.executable, "-m", "volley.cli"]


def _environment(prefect_home: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # always the embedded server: the same cost on every machine
    env["PREFECT_HOME"] = str(prefect_home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    env["RESPONSYS_USER"] = SIM_USER  # the simulator's account, whatever the shell holds
    env["RESPONSYS_PASSWORD"] = SIM_PASSWORD
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)  # other vendors' simulator credentials
    return env


def run_volley(
    spec: Path,
    *,
    base_url: str,
    run_key: str,
    results_dir: Path,
    work_dir: Path,
    expected_rows: int,
    profile: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> VolleyResult:
    argv = [*_volley_argv(), "run", str(spec), "--base-url", base_url, "--run-key", run_key]
    argv += ["--results-dir", str(results_dir)]
    log_path = work_dir / f"volley-{run_key}.log"
    work_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(work_dir / "prefect-home", env or {}),
            cwd=REPO_ROOT,
        )
        with RssSampler(process.pid) as sampler:
            spy = None
            if profile is not None:
                time.sleep(0.3)  # let the interpreter come up before attaching
                spy = attach_py_spy(process.pid, profile)
            exit_code = process.wait()
            wall = time.perf_counter() - start
        if spy is not None:
            spy.wait(timeout=60)
    result = VolleyResult(
        exit_code=exit_code,
        wall_seconds=wall,
        expected_rows=expected_rows,
        peak_rss_mib=sampler.peak_mib,
        peak_prefect_server_rss_mib=sampler.peak_children_mib,
        rss_samples=sampler.samples,
        rss_timeline=sampler.timeline,
        profile=str(profile) if spy is not None and profile is not None and profile.exists() else None,
    )
    output = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    result.output_tail = "\n".join(output[-15:])
    _read_run(result, results_dir / spec_name(spec) / run_key)
    return result


def spec_name(spec: Path) -> str:
    name: str = yaml.safe_load(spec.read_text(encoding="utf-8"))["name"]
    return name


def _read_run(result: VolleyResult, run_key_dir: Path) -> None:
    """summary.json and outcomes.parquet of the (only) run under this run key."""
    summaries = sorted(run_key_dir.glob("*/summary.json"))
    if not summaries:
        return
    import json

    run_dir = summaries[-1].parent
    result.summary = json.loads(summaries[-1].read_text(encoding="utf-8"))
    outcomes = run_dir / "outcomes.parquet"
    if outcomes.exists():
        counts = (
            pl.scan_parquet(outcomes)
            .select(pl.len().alias("rows"), (pl.col("status") == "accepted").sum().alias("accepted"))
            .collect()
            .row(0, named=True)
        )
        result.outcome_rows = int(counts["rows"])
        result.outcome_accepted = int(counts["accepted"])
