"""`python -m bench`: one run, every contender, the same audience, the same simulator build.

1. a deterministic Responsys audience (Parquet)
2. a fresh simulator for each contender (no latency, no faults, no rate limit)
3. the transport ceiling (pre-built bodies, 8, 16 and 32 workers, best kept)
4. Volley end to end (`volley run` subprocess, three runs, the median reported: wall time, run
   elapsed, peak RSS, outcomes)
5. the dlt peer (custom destination, batch_size 200; three runs, the median reported)
6. optionally, Volley again under py-spy (not used for the figures)
7. pacing against a throttling simulator
8. every other vendor (MedChat, Relay, Sprinklr, Intilery): unthrottled throughput, then pacing
9. warehouse memory: a DuckDB extract (and the extract planned) at two sizes
10. the report: stdout, bench/results/latest.json, docs/BENCHMARKS.md

Parts can be chosen with --only or --skip (ceiling, volley, dlt, throttled, vendors, warehouse).
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.audience import write_audience
from bench.dlt_peer import measure_dlt
from bench.machine import BusyMonitor, machine_facts
from bench.profiling import find_py_spy, hot_spots
from bench.reference import CeilingResult, build_bodies, measure_ceiling
from bench.report import check_targets, print_table, render_markdown, write_json
from bench.simulator import bench_simulator, stats_delta, vendor_stats
from bench.throttled import run_throttled
from bench.vendors import RESPONSYS, VENDORS, VendorRun, run_vendor
from bench.volley_runner import REPO_ROOT, SIM_PASSWORD, SIM_USER, VolleyResult, run_volley, write_spec
from bench.warehouse import SIZES as WAREHOUSE_SIZES
from bench.warehouse import measure_warehouse
from sim.testing import SimulatorProcess

PARTS = ("ceiling", "volley", "dlt", "throttled", "vendors", "warehouse")
RESPONSYS_PARTS = frozenset({"ceiling", "volley", "dlt"})
"""The parts that share the Responsys audience and simulator."""
QUICK_ROWS = 100_000
QUICK_THROTTLE_SECONDS = 5.0
VENDOR_ROWS = 50_000
QUICK_VENDOR_ROWS = 10_000
VENDOR_MAX_REQUESTS = 10_000
QUICK_WAREHOUSE_SIZES = (200_000, 2_000_000)
WORKER_COUNTS = (8, 16, 32)
# Volley's `limits.concurrency` for the Responsys audience. Each request spends part of its life in
# Volley (its intent and outcome committed, its answer read); 32 kept the simulator busier than 16:
# 1M-row runs 4-6% shorter in 5 of 5 alternating pairs (24 and 48 alike), where the ceiling, which
# posts pre-built bodies, gained nothing from 32 workers (measured).
VOLLEY_CONCURRENCY = 32
RUNS = 3
WARM_UP_REQUESTS = 250
NOISY_CORES = 0.2


def _names(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of some of `allowed`."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Responsys audience rows (default 1,000,000)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_ROWS:,} rows, {QUICK_VENDOR_ROWS:,} rows a vendor, {QUICK_THROTTLE_SECONDS:g} s "
        f"throttled runs, warehouse at {QUICK_WAREHOUSE_SIZES[0]:,} and {QUICK_WAREHOUSE_SIZES[1]:,} rows",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--only", type=_names(PARTS), default=None, metavar="PART,...", help=f"run only these parts: {', '.join(PARTS)}"
    )
    chosen.add_argument("--skip", type=_names(PARTS), default=(), metavar="PART,...", help="run every part but these")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"runs of Volley and of dlt over the Responsys audience, each one's median reported ({RUNS}; "
        "1 for --quick)",
    )
    parser.add_argument("--throttle-rate", type=float, default=50.0, help="simulator rate limit, requests/s")
    parser.add_argument("--throttle-seconds", type=float, default=None, help="length of each throttled run (20)")
    parser.add_argument(
        "--vendors",
        type=_names(tuple(VENDORS)),
        default=tuple(VENDORS),
        metavar="VENDOR,...",
        help=f"the vendors of the vendors part (default: {','.join(VENDORS)})",
    )
    parser.add_argument(
        "--vendor-rows",
        type=int,
        default=None,
        help=f"audience rows a vendor ({VENDOR_ROWS:,}; at most --vendor-max-requests requests' worth)",
    )
    parser.add_argument(
        "--vendor-max-requests",
        type=int,
        default=VENDOR_MAX_REQUESTS,
        help="fewer rows for a vendor with small requests (Sprinklr: one profile a request); "
        f"default {VENDOR_MAX_REQUESTS:,}",
    )
    parser.add_argument(
        "--warehouse-rows",
        type=int,
        nargs=2,
        default=None,
        metavar=("SMALL", "LARGE"),
        help=f"the two extract sizes ({WAREHOUSE_SIZES[0]:,} and {WAREHOUSE_SIZES[1]:,})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the Markdown report (default docs/BENCHMARKS.md for a full run, bench/results/partial.md "
        "for --quick, --only or --skip: a partial run never replaces the recorded figures)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="the results document (default bench/results/latest.json, or partial.json as for --out)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="PATH",
        help="also run Volley once more under py-spy; collapsed stacks go to PATH (not used for the figures)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (audience, logs)")
    return parser


def report_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """Where the Markdown and the JSON go: only a full run replaces docs/BENCHMARKS.md."""
    full = not args.quick and selected_parts(args) == PARTS
    results_dir = REPO_ROOT / "bench" / "results"
    markdown = args.out or (REPO_ROOT / "docs" / "BENCHMARKS.md" if full else results_dir / "partial.md")
    document = args.json or results_dir / ("latest.json" if full else "partial.json")
    return markdown, document


def selected_parts(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(p for p in PARTS if (args.only is None or p in args.only) and p not in args.skip)


def say(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _ceiling(responsys_url: str, bodies: list[bytes], recipients: int, sim_stats: Any) -> dict[str, Any]:
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


def _median_run(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate, with every run's rate under "runs". One run is not a figure: the same
    Volley run moved between 62k and 109k recipients/s on this machine, and the simulator's CPU for
    the same requests by as much (the machine's speed varies, not the work)."""
    ranked = sorted(tries, key=lambda t: float(t["recipients_per_second"]))
    return {**ranked[(len(ranked) - 1) // 2], "runs": [t["recipients_per_second"] for t in tries]}


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


def _check_run(run: VendorRun, what: str) -> bool:
    """Volley's check, and the simulator's log: every row triggered, none twice."""
    if run.complete:
        return True
    volley, window = run.volley, run.window
    say(
        f"{what}: NOT complete (exit {volley.exit_code}, {volley.outcome_rows:,} outcome rows, "
        f"{volley.outcome_accepted:,} accepted of {run.rows:,}; the simulator triggered "
        f"{window.recipients_accepted:,} recipients, {window.distinct_recipients_accepted:,} distinct); "
        f"last output:\n{volley.output_tail}"
    )
    return False


def _responsys(args: argparse.Namespace, parts: Sequence[str], rows: int, work: Path) -> tuple[dict[str, Any], bool]:
    """The ceiling, Volley and dlt (those of them chosen) over one audience, each against a fresh
    simulator: one that has already accepted recipients answers more slowly (measured: 9% after 600k)."""
    ok = True
    results: dict[str, Any] = {}
    runs = args.runs or (1 if args.quick else RUNS)
    say(f"writing a {rows:,}-row audience")
    audience = write_audience(work / "audience.parquet", rows)
    spec = write_spec(work / "bench.yaml", name="bench", audience=audience, concurrency=VOLLEY_CONCURRENCY)

    if "ceiling" in parts:
        say("building request bodies for the transport ceiling (not timed)")
        bodies, recipients = build_bodies(audience)

    # The ceiling, Volley and dlt take turns, run by run: the machine's speed drifts over minutes (the
    # simulator's CPU for the same requests moved by half within one session), and a ratio of two
    # medians taken minutes apart would carry that drift.
    ceiling_tries: list[dict[str, Any]] = []
    volley_tries: list[dict[str, Any]] = []
    dlt_tries: list[dict[str, Any]] = []
    for number in range(1, runs + 1):
        if "ceiling" in parts:
            with fresh_simulator(work, f"ceiling-{number}") as sim:
                say(f"transport ceiling, run {number} of {runs}")
                ceiling_tries.append(
                    _ceiling(sim.responsys_url, bodies, recipients, lambda: vendor_stats(sim, "responsys"))
                )
            ok &= ceiling_tries[-1]["recipients_accepted_by_simulator"] == rows
        if "volley" in parts:
            volley_tries.append(_volley_try(spec, rows, number, runs, work))
            ok &= volley_tries[-1]["complete"]
        if "dlt" in parts:
            dlt_tries.append(_dlt_try(audience, number, runs, work))
            ok &= dlt_tries[-1]["recipients_accepted_by_simulator"] == rows
    if ceiling_tries:
        results["ceiling"] = _median_run(ceiling_tries)
    if volley_tries:
        results["volley"] = {
            **_median_run(volley_tries),
            "peak_rss_mib": max(t["peak_rss_mib"] for t in volley_tries),
        }
    if dlt_tries:
        results["dlt"] = _median_run(dlt_tries)

    if args.profile is not None and "volley" in parts:
        if find_py_spy() is None:
            say("--profile: py-spy not found (pip install py-spy); skipped")
        else:
            with fresh_simulator(work, "profile") as sim:
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
    return results, ok


def _volley_try(spec: Path, rows: int, number: int, runs: int, work: Path) -> dict[str, Any]:
    with fresh_simulator(work, f"volley-{number}") as sim:
        say(f"Volley end to end (volley run, embedded Prefect server), run {number} of {runs}")
        with BusyMonitor() as busy:
            volley = run_volley(
                spec,
                base_url=sim.responsys_url,
                run_key=_run_key(f"-{number}"),
                results_dir=work / "results",
                work_dir=work,
                expected_rows=rows,
            )
    _check_volley(volley, "Volley")
    say(
        f"Volley: {volley.recipients_per_second:,.0f} recipients/s over {volley.elapsed_seconds:.2f} s "
        f"(command {volley.wall_seconds:.1f} s), peak RSS {volley.peak_rss_mib:,.0f} MiB"
    )
    return _volley_dict(volley, busy.result.to_dict())


def _dlt_try(audience: Path, number: int, runs: int, work: Path) -> dict[str, Any]:
    say(f"dlt custom destination, run {number} of {runs}")
    with fresh_simulator(work, f"dlt-{number}") as sim:
        before = vendor_stats(sim, "responsys")
        with BusyMonitor() as busy:
            dlt = measure_dlt(audience, sim.responsys_url, SIM_USER, SIM_PASSWORD, work / f"dlt-{number}")
        delta = stats_delta(before, vendor_stats(sim, "responsys"))
    say(f"dlt: {dlt.recipients_per_second:,.0f} recipients/s in {dlt.seconds:.2f} s")
    return {
        "recipients": dlt.recipients,
        "requests": dlt.requests,
        "seconds": dlt.seconds,
        "recipients_per_second": dlt.recipients_per_second,
        "failed_requests": dlt.failed_requests,
        "loader_file_format": dlt.loader_file_format,
        "recipients_accepted_by_simulator": delta.get("recipients_accepted", 0),
        "busy": busy.result.to_dict(),
    }


@contextmanager
def fresh_simulator(work: Path, name: str) -> Iterator[SimulatorProcess]:
    with bench_simulator(work / f"sim-{name}.ndjson") as sim:
        say(f"simulator for {name} at {sim.base_url}")
        yield sim


def _vendors(args: argparse.Namespace, throttle_seconds: float, work: Path) -> tuple[dict[str, Any], bool]:
    """Per vendor: a run against its simulator with nothing throttled, then one throttled at --throttle-rate."""
    ok = True
    results: dict[str, Any] = {}
    wanted_rows = args.vendor_rows or (QUICK_VENDOR_ROWS if args.quick else VENDOR_ROWS)
    for name in args.vendors:
        vendor = VENDORS[name]
        rows = min(wanted_rows, args.vendor_max_requests * vendor.recipients_per_request())
        say(f"{name}: {rows:,} rows, unthrottled")
        with BusyMonitor() as busy:
            run = run_vendor(vendor, rows, work, _run_key(f"-{name}"))
        ok &= _check_run(run, name)
        figures = {"campaign": vendor.campaign, **run.figures(), "busy": busy.result.to_dict()}
        say(f"{name}: {run.volley.recipients_per_second:,.0f} recipients/s over {run.volley.elapsed_seconds:.2f} s")

        say(f"{name}: throttled at {args.throttle_rate:g} requests/s for about {throttle_seconds:g} s")
        with BusyMonitor() as busy:
            throttled = run_throttled(
                vendor, args.throttle_rate, throttle_seconds, work, _run_key(f"-{name}-throttled")
            )
        ok &= _check_run(throttled.run, f"throttled {name}")
        figures["throttled"] = throttled.figures(busy.result.to_dict())
        say(
            f"{name} throttled: {throttled.achieved_rps:.2f} requests/s ({throttled.utilisation:.1%}), "
            f"{throttled.run.throttle_answers} throttle answers"
        )
        results[name] = figures
    return results, ok


def _warehouse(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], bool]:
    """Peak RSS of the DuckDB extract at two sizes: read only, then read and planned (same databases)."""
    sizes = tuple(args.warehouse_rows or (QUICK_WAREHOUSE_SIZES if args.quick else WAREHOUSE_SIZES))
    results: dict[str, Any] = {}
    for label, plan in (("extract", False), ("plan", True)):
        say(f"warehouse {label}: {' and '.join(f'{n:,}' for n in sizes)} rows, each in a fresh process")
        with BusyMonitor() as busy:
            try:
                figures = measure_warehouse(sizes, work / "warehouse", plan=plan)
            except RuntimeError as exc:  # lost or repeated rows: a correctness problem
                say(f"warehouse {label}: {exc}")
                return {**results, label: {"error": str(exc)}}, False
        results[label] = {**figures, "busy": busy.result.to_dict()}
        peaks = ", ".join(f"{r['size']:,} rows {r['peak_rss_mib']:,.0f} MiB" for r in figures["runs"])
        say(f"warehouse {label}: {peaks}; ratio {figures['peak_ratio']:.2f}")
    return results, True


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], bool]:
    parts = selected_parts(args)
    rows = QUICK_ROWS if args.quick else args.rows
    throttle_seconds = args.throttle_seconds or (QUICK_THROTTLE_SECONDS if args.quick else 20.0)
    ok = True
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "machine": machine_facts(),
        "parts": list(parts),
        "rows": rows,
        "quick": bool(args.quick),
    }
    if RESPONSYS_PARTS.intersection(parts):
        figures, fine = _responsys(args, parts, rows, work)
        results.update(figures)
        ok &= fine

    if "throttled" in parts:
        say(f"throttled: {args.throttle_rate:g} requests/s for about {throttle_seconds:g} s")
        with BusyMonitor() as busy:
            throttled = run_throttled(RESPONSYS, args.throttle_rate, throttle_seconds, work, _run_key("-throttled"))
        ok &= _check_run(throttled.run, "throttled Volley")
        results["throttled"] = throttled.figures(busy.result.to_dict())

    if "vendors" in parts:
        results["vendors"], fine = _vendors(args, throttle_seconds, work)
        ok &= fine

    if "warehouse" in parts:
        results["warehouse"], fine = _warehouse(args, work)
        ok &= fine

    results["targets"] = check_targets(results)
    results["noise_notes"] = _noise_notes(results)
    results["complete"] = ok
    return results, ok


def _phases(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, figures) of every measured phase that records how busy the machine was."""
    phases: list[tuple[str, dict[str, Any]]] = [
        (name, results[name]) for name in ("ceiling", "volley", "dlt", "throttled") if name in results
    ]
    for name, vendor in (results.get("vendors") or {}).items():
        phases += [(name, vendor), (f"{name} throttled", vendor.get("throttled") or {})]
    phases += [(f"warehouse {name}", figures) for name, figures in (results.get("warehouse") or {}).items()]
    return phases


def _noise_notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for phase, figures in _phases(results):
        busy = figures.get("busy") or {}
        if busy.get("foreign_cores", 0.0) > NOISY_CORES:
            notes.append(
                f"{phase}: other processes kept {busy['foreign_cores']:.2f} of "
                f"{results['machine']['nproc']} cores busy on average (load average {busy['load_average_end']:.2f}); "
                "its figure is likely lower than on a quiet machine"
            )
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not selected_parts(args):
        build_parser().error("--skip leaves nothing to run")
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
    markdown, document = report_paths(args)
    json_path = write_json(results, document)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render_markdown(results), encoding="utf-8")
    say(f"wrote {json_path} and {markdown} in {results['bench_seconds']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
