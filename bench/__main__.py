"""`python -m bench`: one run, every contender, the same audience, the same simulator.

1. a deterministic Responsys audience (Parquet)
2. one simulator (no latency, no faults, no rate limit)
3. the transport ceiling (pre-built bodies, 8 and 16 workers, best kept)
4. Volley end to end (`volley run` subprocess: wall time, run elapsed, peak RSS, outcomes)
5. the dlt peer (custom destination, batch_size 200)
6. optionally, Volley again under py-spy (not used for the figures)
7. pacing against a throttling simulator
8. the report: stdout, bench/results/latest.json, docs/BENCHMARKS.md

No figure is asserted: missed targets are reported, not raised. The exit status is 1 only
when a contender did not deliver every recipient (a correctness problem, not a slow one).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.audience import write_audience
from bench.dlt_peer import measure_dlt
from bench.machine import BusyMonitor, machine_facts
from bench.profiling import find_py_spy, hot_spots
from bench.reference import CeilingResult, build_bodies, measure_ceiling
from bench.report import check_targets, print_table, render_markdown, write_json
from bench.simulator import responsys_stats, start_simulator, stats_delta
from bench.throttled import run_throttled
from bench.volley_runner import REPO_ROOT, SIM_PASSWORD, SIM_USER, VolleyResult, run_volley, write_spec

QUICK_ROWS = 100_000
QUICK_THROTTLE_SECONDS = 5.0
WORKER_COUNTS = (8, 16)
WARM_UP_REQUESTS = 250
NOISY_CORES = 0.2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="audience rows (default 1,000,000)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_ROWS:,} rows and a {QUICK_THROTTLE_SECONDS:g} s throttled run",
    )
    parser.add_argument("--throttle-rate", type=float, default=50.0, help="simulator rate limit, requests/s")
    parser.add_argument("--throttle-seconds", type=float, default=None, help="length of the throttled run (20)")
    parser.add_argument("--out", type=Path, default=Path("docs/BENCHMARKS.md"), help="the Markdown report")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="PATH",
        help="also run Volley once more under py-spy; collapsed stacks go to PATH (not used for the figures)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (audience, logs)")
    return parser


def say(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _ceiling(responsys_url: str, audience: Path, sim_stats: Any) -> dict[str, Any]:
    say("building request bodies for the transport ceiling (not timed)")
    bodies, recipients = build_bodies(audience)
    measure_ceiling(responsys_url, bodies[:WARM_UP_REQUESTS], 0, WORKER_COUNTS[0], SIM_USER, SIM_PASSWORD)
    tries: list[tuple[CeilingResult, dict[str, float], dict[str, int]]] = []
    for workers in WORKER_COUNTS:
        before = sim_stats()
        with BusyMonitor() as busy:
            result = measure_ceiling(responsys_url, bodies, recipients, workers, SIM_USER, SIM_PASSWORD)
        delta = stats_delta(before, sim_stats())
        say(f"ceiling, {workers} workers: {result.recipients_per_second:,.0f} recipients/s in {result.seconds:.2f} s")
        tries.append((result, busy.result.to_dict(), delta))
    best, best_busy, best_delta = max(tries, key=lambda t: t[0].recipients_per_second)
    return {
        "workers": best.workers,
        "recipients": best.recipients,
        "requests": best.requests,
        "seconds": best.seconds,
        "recipients_per_second": best.recipients_per_second,
        "failed_requests": best.failed_requests,
        "recipients_accepted_by_simulator": best_delta.get("recipients_accepted", 0),
        "busy": best_busy,
        "tries": [
            {
                "workers": r.workers,
                "seconds": r.seconds,
                "recipients_per_second": r.recipients_per_second,
                "failed_requests": r.failed_requests,
                "busy": b,
            }
            for r, b, _ in tries
        ],
    }


def _volley_dict(result: VolleyResult, busy: dict[str, float]) -> dict[str, Any]:
    summary = result.summary
    return {
        "exit_code": result.exit_code,
        "wall_seconds": result.wall_seconds,
        "elapsed_seconds": result.elapsed_seconds,
        "accepted": result.accepted,
        "recipients_per_second": result.recipients_per_second,
        "wall_recipients_per_second": result.wall_recipients_per_second,
        "requests": int(summary.get("requests") or 0),
        "retries": int(summary.get("retries") or 0),
        "throttled": int(summary.get("throttled") or 0),
        "counts": summary.get("counts") or {},
        "outcome_rows": result.outcome_rows,
        "outcome_accepted": result.outcome_accepted,
        "complete": result.complete,
        "peak_rss_mib": result.peak_rss_mib,
        "peak_prefect_server_rss_mib": result.peak_prefect_server_rss_mib,
        "rss_samples": result.rss_samples,
        "rss_timeline_mib": result.rss_timeline,
        "busy": busy,
    }


def _run_key(suffix: str = "") -> str:
    return f"bench-{datetime.now(UTC):%Y%m%dT%H%M%S}{suffix}"


def _check_volley(result: VolleyResult, what: str) -> bool:
    if result.complete:
        return True
    say(
        f"{what}: NOT complete (exit {result.exit_code}, {result.outcome_rows:,} outcome rows, "
        f"{result.outcome_accepted:,} accepted); last output:\n{result.output_tail}"
    )
    return False


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], bool]:
    rows = QUICK_ROWS if args.quick else args.rows
    throttle_seconds = args.throttle_seconds or (QUICK_THROTTLE_SECONDS if args.quick else 20.0)
    ok = True
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "machine": machine_facts(),
        "rows": rows,
        "quick": bool(args.quick),
    }
    say(f"writing a {rows:,}-row audience")
    audience = write_audience(work / "audience.parquet", rows)

    sim = start_simulator(work / "sim.ndjson")
    try:
        say(f"simulator at {sim.base_url}")

        def sim_stats() -> dict[str, Any]:
            return responsys_stats(sim)

        results["ceiling"] = _ceiling(sim.responsys_url, audience, sim_stats)
        ok &= results["ceiling"]["recipients_accepted_by_simulator"] == rows

        say("Volley end to end (volley run, embedded Prefect server)")
        spec = write_spec(work / "bench.yaml", name="bench", audience=audience)
        with BusyMonitor() as busy:
            volley = run_volley(
                spec,
                base_url=sim.responsys_url,
                run_key=_run_key(),
                results_dir=work / "results",
                work_dir=work,
                expected_rows=rows,
            )
        results["volley"] = _volley_dict(volley, busy.result.to_dict())
        ok &= _check_volley(volley, "Volley")
        say(
            f"Volley: {volley.recipients_per_second:,.0f} recipients/s over {volley.elapsed_seconds:.2f} s "
            f"(command {volley.wall_seconds:.1f} s), peak RSS {volley.peak_rss_mib:,.0f} MiB"
        )

        say("dlt custom destination")
        before = sim_stats()
        with BusyMonitor() as busy:
            dlt = measure_dlt(audience, sim.responsys_url, SIM_USER, SIM_PASSWORD, work)
        delta = stats_delta(before, sim_stats())
        results["dlt"] = {
            "recipients": dlt.recipients,
            "requests": dlt.requests,
            "seconds": dlt.seconds,
            "recipients_per_second": dlt.recipients_per_second,
            "failed_requests": dlt.failed_requests,
            "loader_file_format": dlt.loader_file_format,
            "recipients_accepted_by_simulator": delta.get("recipients_accepted", 0),
            "busy": busy.result.to_dict(),
        }
        ok &= delta.get("recipients_accepted", 0) == rows
        say(f"dlt: {dlt.recipients_per_second:,.0f} recipients/s in {dlt.seconds:.2f} s")

        if args.profile is not None:
            if find_py_spy() is None:
                say("--profile: py-spy not found (pip install py-spy); skipped")
            else:
                say(f"Volley again under py-spy -> {args.profile}")
                profiled = run_volley(
                    spec,
                    base_url=sim.responsys_url,
                    run_key=_run_key("-profile"),
                    results_dir=work / "results",
                    work_dir=work,
                    expected_rows=rows,
                    profile=args.profile.resolve(),
                )
                if profiled.profile:
                    samples, own, inclusive = hot_spots(Path(profiled.profile))
                    results["hot_spots"] = {
                        "samples": samples,
                        "elapsed_seconds": profiled.elapsed_seconds,
                        "self": [vars(h) for h in own],
                        "inclusive": [vars(h) for h in inclusive],
                    }
    finally:
        sim.stop()

    say(f"throttled: {args.throttle_rate:g} requests/s for about {throttle_seconds:g} s")
    with BusyMonitor() as busy:
        throttled = run_throttled(args.throttle_rate, throttle_seconds, work / "throttled", _run_key("-throttled"))
    ok &= _check_volley(throttled.volley, "throttled Volley")
    results["throttled"] = {
        "rate_limit": throttled.rate_limit,
        "seconds": throttle_seconds,
        "rows": throttled.rows,
        "requests": throttled.rows // 200,
        "achieved_rps": throttled.achieved_rps,
        "utilisation": throttled.utilisation,
        "run_rps": throttled.run_rps,
        "throttle_answers": throttled.throttle_answers,
        "login_throttled": throttled.login_throttled,
        "requests_by_result": throttled.window.by_result,
        "median_gap_seconds": throttled.window.median_gap,
        "stalls": throttled.window.stalls,
        "stall_seconds": throttled.window.stall_seconds,
        "window_seconds": throttled.window.span_seconds,
        "elapsed_seconds": throttled.volley.elapsed_seconds,
        "wall_seconds": throttled.volley.wall_seconds,
        "complete": throttled.volley.complete,
        "busy": busy.result.to_dict(),
    }
    results["targets"] = check_targets(results)
    results["noise_notes"] = _noise_notes(results)
    results["complete"] = ok
    return results, ok


def _noise_notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for phase in ("ceiling", "volley", "dlt", "throttled"):
        busy = results.get(phase, {}).get("busy") or {}
        if busy.get("foreign_cores", 0.0) > NOISY_CORES:
            notes.append(
                f"{phase}: other processes kept {busy['foreign_cores']:.2f} of "
                f"{results['machine']['nproc']} cores busy on average (load average {busy['load_average_end']:.2f}); "
                "its figure is likely lower than on a quiet machine"
            )
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="volley-bench-"))
    started = time.perf_counter()
    try:
        results, ok = run(args, work)
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    print_table(results)
    json_path = write_json(results, REPO_ROOT / "bench" / "results" / "latest.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_markdown(results), encoding="utf-8")
    say(f"wrote {json_path} and {args.out} in {results['bench_seconds']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
