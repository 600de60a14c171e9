"""The report: a table on stdout, bench/results/latest.json, and docs/BENCHMARKS.md (rewritten).

Everything here renders the one results document `__main__` assembles; nothing is measured here.
A part that was not run (`--only`, `--skip`) has no key in it and no section here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["check_targets", "print_table", "render_markdown", "write_json"]

MEMORY_LIMIT_MIB = 1024.0
UTILISATION_TARGET = 0.95
VENDOR_LABELS = {
    "responsys": "Responsys",
    "medchat": "MedChat",
    "relay": "Relay",
    "sprinklr": "Sprinklr",
    "intilery": "Intilery",
}
WAREHOUSE_LABELS = {"extract": "warehouse extract", "plan": "warehouse extract + plan"}


def _fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _label(vendor: str) -> str:
    return VENDOR_LABELS.get(vendor, vendor)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the parts that ran, with the value reached and whether it was met."""
    targets: list[dict[str, Any]] = []
    volley = results.get("volley")
    if volley is not None:
        targets += _volley_targets(results, volley)
    throttled = results.get("throttled")
    if throttled is not None:
        targets += _pacing_targets("throttled", throttled, "API_LIMIT_EXCEEDED answers")
    for name, vendor in (results.get("vendors") or {}).items():
        label = _label(name)
        targets.append(
            {
                "target": f"{label}: every row has an outcome, all accepted, each triggered once",
                "value": f"{vendor['outcome_rows']:,} rows, {vendor['outcome_accepted']:,} accepted, "
                f"{vendor['distinct_recipients_accepted_by_simulator']:,} triggered (expected {vendor['rows']:,})",
                "met": vendor["complete"],
            }
        )
        targets += _pacing_targets(f"{label} throttled", vendor["throttled"], "throttle answers")
    for kind, warehouse in (results.get("warehouse") or {}).items():
        targets.append(_warehouse_target(WAREHOUSE_LABELS.get(kind, kind), warehouse))
    return targets


def _volley_targets(results: dict[str, Any], volley: dict[str, Any]) -> list[dict[str, Any]]:
    rate = volley["recipients_per_second"]
    targets = []
    for part, target, minimum in (("ceiling", "Volley / transport ceiling", 0.5), ("dlt", "Volley / dlt", 3.0)):
        if part in results:
            reference = results[part]["recipients_per_second"]
            targets.append(
                {
                    "target": f"{target} >= {minimum:g}",
                    "value": f"{rate / reference:.2f}" if reference else "n/a",
                    "met": bool(reference) and rate / reference >= minimum,
                }
            )
    return [
        *targets,
        {
            "target": "Volley peak RSS < 1 GiB",
            "value": f"{volley['peak_rss_mib']:,.0f} MiB",
            "met": 0 < volley["peak_rss_mib"] < MEMORY_LIMIT_MIB,
        },
        {
            "target": "every row has an outcome, all accepted",
            "value": f"{volley['outcome_rows']:,} rows, {volley['outcome_accepted']:,} accepted "
            f"(expected {results['rows']:,})",
            "met": volley["complete"],
        },
    ]


def _pacing_targets(label: str, throttled: dict[str, Any], answers: str) -> list[dict[str, Any]]:
    return [
        {
            "target": f"{label}: achieved / allowed rate >= {UTILISATION_TARGET:.0%}",
            "value": f"{throttled['utilisation']:.1%}",
            "met": throttled["utilisation"] >= UTILISATION_TARGET,
        },
        {
            "target": f"{label}: {answers} = 0",
            "value": str(throttled["throttle_answers"]),
            "met": throttled["throttle_answers"] == 0 and throttled["complete"],
        },
    ]


def _warehouse_target(label: str, warehouse: dict[str, Any]) -> dict[str, Any]:
    if "error" in warehouse:
        return {"target": f"{label}: every row read once", "value": warehouse["error"], "met": False}
    small, large = warehouse["runs"][0], warehouse["runs"][-1]
    return {
        "target": f"{label}: peak RSS at {large['size']:,} rows / at {small['size']:,} rows "
        f"<= {warehouse['target_ratio']:g}",
        "value": f"{warehouse['peak_ratio']:.2f} ({small['peak_rss_mib']:,.0f} -> {large['peak_rss_mib']:,.0f} MiB)",
        "met": warehouse["met"],
    }


def _runs_note(contender: dict[str, Any], what: str = "") -> str:
    runs = contender.get("runs") or []
    if len(runs) < 2:
        return ""
    return f"; median of {len(runs)} runs{f' ({what})' if what else ''}: " + ", ".join(f"{r:,.0f}/s" for r in runs)


def _main_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(what, recipients/s, seconds, note, phase) for the headline table: the parts that ran."""
    rows = []
    ceiling = results.get("ceiling")
    if ceiling is not None:
        tries = ", ".join(f"{t['workers']} workers {t['recipients_per_second']:,.0f}/s" for t in ceiling["tries"])
        rows.append(
            (
                "transport ceiling (pre-built bodies)",
                _fmt_rate(ceiling["recipients_per_second"]),
                f"{ceiling['seconds']:.2f}",
                f"in the median run, best of: {tries}" + _runs_note(ceiling, "each its best"),
                "ceiling",
            )
        )
    volley = results.get("volley")
    if volley is not None:
        rows += [
            (
                "Volley, run elapsed (plan + send + compact)",
                _fmt_rate(volley["recipients_per_second"]),
                f"{volley['elapsed_seconds']:.2f}",
                f"summary.json elapsed_seconds; {volley['requests']:,} requests, {volley['retries']} retries"
                + _runs_note(volley),
                "volley",
            ),
            (
                "Volley, whole command (incl. Prefect server start)",
                _fmt_rate(volley["wall_recipients_per_second"]),
                f"{volley['wall_seconds']:.2f}",
                "wall time of `volley run`",
                "volley",
            ),
        ]
    dlt = results.get("dlt")
    if dlt is not None:
        rows.append(
            (
                "dlt custom destination (batch_size 200)",
                _fmt_rate(dlt["recipients_per_second"]),
                f"{dlt['seconds']:.2f}",
                f"pipeline.run end to end; {dlt['requests']:,} requests" + _runs_note(dlt),
                "dlt",
            )
        )
    return rows


def print_table(results: dict[str, Any]) -> None:
    rows = _main_rows(results)
    print()
    if rows:
        width = max(len(r[0]) for r in rows)
        print(f"{'':{width}}  {'recipients/s':>12}  {'seconds':>8}")
        for what, rate, seconds, note, _ in rows:
            print(f"{what:{width}}  {rate:>12}  {seconds:>8}  {note}")
    volley = results.get("volley")
    if volley is not None:
        print(
            f"Volley peak RSS {volley['peak_rss_mib']:,.0f} MiB "
            f"(Prefect server apart: {volley['peak_prefect_server_rss_mib']:,.0f} MiB)"
        )
    throttled = results.get("throttled")
    if throttled is not None:
        print(
            f"throttled at {throttled['rate_limit']:g} req/s: achieved {throttled['achieved_rps']:.2f} req/s "
            f"({throttled['utilisation']:.1%}), throttle answers {throttled['throttle_answers']}"
        )
    vendors = results.get("vendors") or {}
    if vendors:
        _print_vendors(vendors)
    for kind, warehouse in (results.get("warehouse") or {}).items():
        label = WAREHOUSE_LABELS.get(kind, kind)
        if "error" in warehouse:
            print(f"{label}: {warehouse['error']}")
            continue
        peaks = ", ".join(f"{r['size']:,} rows {r['peak_rss_mib']:,.0f} MiB" for r in warehouse["runs"])
        print(
            f"{label}: peak RSS {peaks}; ratio {warehouse['peak_ratio']:.2f} (target <= {warehouse['target_ratio']:g})"
        )
    print()
    for target in results["targets"]:
        print(f"[{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['value']}")
    for note in results.get("noise_notes", []):
        print(f"note: {note}")


def _print_vendors(vendors: dict[str, Any]) -> None:
    print()
    print(
        f"{'vendor':10}  {'rows':>8}  {'requests':>8}  {'recipients/s':>12}  {'seconds':>8}  "
        f"{'throttled at':>12}  {'achieved':>8}  {'use':>6}  {'throttle answers':>16}  complete"
    )
    for name, vendor in vendors.items():
        throttled = vendor["throttled"]
        complete = vendor["complete"] and throttled["complete"]
        print(
            f"{_label(name):10}  {vendor['rows']:>8,}  {vendor['requests']:>8,}  "
            f"{_fmt_rate(vendor['recipients_per_second']):>12}  {vendor['elapsed_seconds']:>8.2f}  "
            f"{throttled['rate_limit']:>10g}/s  {throttled['achieved_rps']:>6.2f}/s  {throttled['utilisation']:>6.1%}  "
            f"{throttled['throttle_answers']:>16}  {'yes' if complete else 'NO'}"
        )


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _gap(throttled: dict[str, Any]) -> str:
    gap = throttled.get("median_gap_seconds")
    return "n/a" if gap is None else f"{gap:.4f} s"


def _stall_share(throttled: dict[str, Any]) -> str:
    window = throttled.get("window_seconds") or 0.0
    stalled = throttled.get("stall_seconds") or 0.0
    share = f", {stalled / window:.0%} of the sending time" if window > 0 else ""
    return f"{stalled:.1f} s in all{share}"


def _memory_line(volley: dict[str, Any]) -> str:
    """The typical RSS while the run itself went on (its last `elapsed_seconds` of the command, roughly)."""
    run_start = volley["wall_seconds"] - volley["elapsed_seconds"] - 1.0
    during = sorted(rss for t, rss in volley.get("rss_timeline_mib") or [] if t >= run_start)
    if not during:
        return ""
    return (
        f" Sampled once a second during the run, the median was {during[len(during) // 2]:,.0f} MiB: "
        "the peak is a spike above it (see `rss_timeline_mib` in bench/results/latest.json)."
    )


def _busy_cell(phase: dict[str, Any]) -> str:
    busy = phase.get("busy") or {}
    return f"{busy.get('foreign_cores', 0):.2f}" if busy else "n/a"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def render_markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (`make bench`); rerun it to refresh this page.",
        "Every figure below comes from one run on one machine, so the ratios compare like with like.",
        "",
        f"- date: {results['date']}",
        f"- machine: {machine['nproc']} cores ({machine['cpu']}), {machine['ram_gib']} GiB RAM, {machine['platform']}",
        f"- python {machine['python']}, polars {versions.get('polars')}, prefect {versions.get('prefect')}, "
        f"dlt {versions.get('dlt')}, httpx {versions.get('httpx')}, pyreqwest {versions.get('pyreqwest')}, "
        f"uvloop {versions.get('uvloop')}",
        f"- command: `{results['command']}`",
        f"- parts: {', '.join(results['parts'])}",
    ]
    rows = _main_rows(results)
    if rows:
        lines.append(f"- Responsys audience: {results['rows']:,} rows (Parquet), 200 recipients a request")
    lines.append("")
    if rows:
        lines += [
            "## Throughput",
            "",
            "| what | recipients/s | seconds | other work on the machine (cores) | notes |",
            "|---|---:|---:|---:|---|",
        ]
        for what, rate, seconds, note, phase in rows:
            lines.append(f"| {what} | {rate} | {seconds} | {_busy_cell(results[phase])} | {note} |")
        lines.append("")
    volley = results.get("volley")
    if volley is not None:
        lines += [
            f"Peak memory of the Volley process: **{volley['peak_rss_mib']:,.0f} MiB** "
            f"({volley['rss_samples']:,} samples, every 50 ms); the embedded Prefect server, a separate process, "
            f"peaked at {volley['peak_prefect_server_rss_mib']:,.0f} MiB and is not counted.{_memory_line(volley)}",
            "",
        ]
    throttled = results.get("throttled")
    if throttled is not None:
        lines += _pacing_lines(throttled)
    vendors = results.get("vendors") or {}
    if vendors:
        lines += _vendor_lines(vendors)
    warehouse = results.get("warehouse") or {}
    if warehouse:
        lines += _warehouse_lines(warehouse)
    lines += ["## Targets", "", "| target | reached | met |", "|---|---|---|"]
    for target in results["targets"]:
        lines.append(f"| {target['target']} | {target['value']} | {_yes(target['met'])} |")
    missed = [t["target"] for t in results["targets"] if not t["met"]]
    lines += ["", f"Missed: {'; '.join(missed)}." if missed else "All targets met in this run.", ""]
    notes = results.get("noise_notes") or []
    if notes:
        lines += ["## Noise", ""] + [f"- {note}" for note in notes] + [""]
    spots = results.get("hot_spots")
    if spots:
        lines += _hot_spot_lines(spots)
    lines += _how_measured(results)
    return "\n".join(lines) + "\n"


def _pacing_lines(throttled: dict[str, Any]) -> list[str]:
    return [
        "## Pacing against a throttling vendor",
        "",
        f"Simulator token bucket: {throttled['rate_limit']:g} requests/s (one second of burst); "
        f"spec `limits.requests_per_second: {throttled['rate_limit']:g}`; "
        f"{throttled['rows']:,} rows = {throttled['requests']:,} requests "
        f"(about {throttled['requests'] / throttled['rate_limit']:.0f} s at the limit).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| achieved rate, first to last accepted request (simulator log) | {throttled['achieved_rps']:.2f} /s |",
        f"| utilisation (achieved / allowed) | {throttled['utilisation']:.1%} |",
        f"| rate over the run's elapsed time (planning, compaction included) | {throttled['run_rps']:.2f} /s |",
        f"| median time between two requests (ideal {1 / throttled['rate_limit']:.3f} s) | {_gap(throttled)} |",
        f"| pauses longer than 0.1 s between two requests | {throttled['stalls']} ({_stall_share(throttled)}) |",
        f"| throttle answers (API_LIMIT_EXCEEDED, simulator stats) | {throttled['throttle_answers']} |",
        f"| login throttled | {throttled['login_throttled']} |",
        f"| outcomes complete and accepted | {'yes' if throttled['complete'] else 'no'} |",
        f"| other work on the machine (cores) | {_busy_cell(throttled)} |",
        "",
    ]


def _vendor_lines(vendors: dict[str, Any]) -> list[str]:
    lines = [
        "## Other vendors",
        "",
        "Each vendor's sample campaign (its vendor params, connection and batch size; concurrency 16, no pace) "
        "against a simulator of its own, no latency, nothing throttled. Recipients/s: accepted recipients / the "
        "run's `elapsed_seconds`.",
        "",
        "| vendor | campaign | rows | requests | recipients a request | recipients/s | seconds | command seconds "
        "| retries | every row accepted, triggered once | other work (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, v in vendors.items():
        lines.append(
            f"| {_label(name)} | `{v.get('campaign')}` | {v['rows']:,} | {v['requests']:,} | "
            f"{v['recipients_per_request'] or 'n/a'} | {_fmt_rate(v['recipients_per_second'])} | "
            f"{v['elapsed_seconds']:.2f} | {v['wall_seconds']:.1f} | {v['retries']} | {_yes(v['complete'])} | "
            f"{_busy_cell(v)} |"
        )
    lines += [
        "",
        "Pacing: the simulator's token bucket allows R requests/s per vendor (one second of burst), the spec "
        "asks for `limits.requests_per_second: R`; about R x S requests. Achieved rate: accepted requests, first "
        "to last, from the simulator's log; throttle answers: the simulator's counter (each vendor's own answer: "
        "a 429, Sprinklr's 403 page).",
        "",
        "| vendor | allowed | requests | achieved | utilisation | median gap | pauses > 0.1 s | throttle answers "
        "| complete | other work (cores) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for name, v in vendors.items():
        t = v["throttled"]
        lines.append(
            f"| {_label(name)} | {t['rate_limit']:g} /s | {t['requests']:,} | {t['achieved_rps']:.2f} /s | "
            f"{t['utilisation']:.1%} | {_gap(t)} | {t['stalls']} ({_stall_share(t)}) | {t['throttle_answers']} | "
            f"{_yes(t['complete'])} | {_busy_cell(t)} |"
        )
    return [*lines, ""]


def _warehouse_lines(warehouse: dict[str, Any]) -> list[str]:
    lines = [
        "## Warehouse memory",
        "",
        "Peak RSS of a fresh process reading a DuckDB table through the SQL source "
        "(`SqlSource.iter_slices`), and of one also planning every slice for Responsys, at two sizes.",
        "",
    ]
    for kind, figures in warehouse.items():
        label = WAREHOUSE_LABELS.get(kind, kind)
        if "error" in figures:
            lines += [f"**{label}**: {figures['error']}", ""]
            continue
        lines += [
            f"**{label}** (`{figures['query']}`, {figures['slice_rows']:,} rows a slice): the peak at the "
            f"larger size is **{figures['peak_ratio']:.2f}x** the peak at the smaller "
            f"(target <= {figures['target_ratio']:g}); other work on the machine meanwhile: "
            f"{_busy_cell(figures)} cores.",
            "",
            "| rows | peak RSS | RSS before reading | seconds | rows/s | slices | database |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in figures["runs"]:
            lines.append(
                f"| {r['size']:,} | {r['peak_rss_mib']:,.0f} MiB | {r['baseline_rss_mib']:,.0f} MiB | "
                f"{r['seconds']:.2f} | {_fmt_rate(r['rows_per_second'])} | {r['slices']} | "
                f"{r['database_mib']:,.0f} MiB |"
            )
        lines.append("")
    return lines


def _hot_spot_lines(spots: dict[str, Any]) -> list[str]:
    lines = [
        "## Where Volley spends its time",
        "",
        f"py-spy (100 Hz, non-blocking) on a second, unmeasured Volley run of the same audience: "
        f"{spots['samples']:,} samples of non-idle threads, the process start included.",
        "",
        "| function (self time) | self | | project function (inclusive) | inclusive |",
        "|---|---:|---|---|---:|",
    ]
    own = spots["self"]
    inclusive = spots["inclusive"]
    for i in range(max(len(own), len(inclusive))):
        left = ("`" + own[i]["function"] + "`", f"{own[i]['self_share']:.1%}") if i < len(own) else ("", "")
        right = (
            ("`" + inclusive[i]["function"] + "`", f"{inclusive[i]['total_share']:.1%}")
            if i < len(inclusive)
            else ("", "")
        )
        lines.append(f"| {left[0]} | {left[1]} | | {right[0]} | {right[1]} |")
    return [*lines, ""]


def _how_measured(results: dict[str, Any]) -> list[str]:
    lines = ["## How measured", ""]
    if _main_rows(results) or "throttled" in results:
        lines += [
            "- **Audience**: polars writes a deterministic Parquet file (customer_id `C{n}`, product_sku, "
            "product_name and first_name, some of them non-ASCII, including a character outside the BMP).",
            "- **Simulator**: a fresh `python -m sim` process (no latency, no faults, no rate limit) for each "
            "contender (one that has already accepted recipients answers more slowly); it validates each body "
            "and logs every request and recipient.",
        ]
    if "ceiling" in results:
        lines.append(
            "- **Transport ceiling**: the request bodies (the Responsys REI JSON Volley sends, 200 recipients, "
            "ASCII with `\\uXXXX` escapes) are all built before the clock starts; after one login, Volley's own "
            "HTTP client (`volley.transport.make_client`: pyreqwest), on uvloop as `volley run` is, posts them "
            "from a fixed pool of workers "
            "pulling from an `asyncio.Queue`. A short warm-up pass runs first; 8, 16 and 32 workers are tried and the "
            "best is kept. It runs as often as Volley and dlt, taking turns with them, against a fresh simulator "
            "each time; the median is reported."
        )
    if "volley" in results:
        lines.append(
            "- **Volley**: `volley run SPEC --base-url SIM/responsys --run-key bench-... --results-dir TMP` as a "
            "subprocess (concurrency 32, no rate limit, timeout 30 s), with a `PREFECT_HOME` of the benchmark's own "
            "(new for each `python -m bench`, shared by its Volley runs) and the embedded "
            "Prefect server. The rate is accepted recipients / `elapsed_seconds` of the run's `summary.json` "
            "(planning, validation, encoding, sending and outcome compaction; not the Prefect server start). The "
            "wall time of the whole command is given too. Peak memory: psutil samples the RSS of the `volley` "
            "process every 50 ms (its children, the Prefect server, apart). The outcome Parquet is read back: "
            "one row per audience row, all `accepted`. Volley runs three times, each against a fresh simulator, "
            "and the median run is reported (peak memory: the highest of the three): on this machine the same "
            "run moved between 62k and 109k recipients/s, and the simulator's CPU for the same requests by as "
            "much, so one run is not a figure."
        )
    if "dlt" in results:
        lines.append(
            "- **dlt**: a resource yielding Arrow record batches from the same Parquet, the default pipeline "
            "(extract, normalize, load; telemetry off, a temporary pipelines dir) and a "
            "`@dlt.destination(batch_size=200, loader_file_format='parquet')` function that posts the same body "
            "with a sync `httpx.Client` after one login. Timed: `pipeline.run(...)`. Three runs, each against a "
            "fresh simulator and in a fresh pipelines dir; the median is reported. The ceiling's, Volley's and "
            "dlt's runs take turns (ceiling 1, Volley 1, dlt 1, ceiling 2, ...), so that a drift of the machine's "
            "speed reaches every side of a ratio."
        )
    if "throttled" in results:
        lines.append(
            "- **Throttled**: a second simulator with `--rate-limit R`; a Volley spec with "
            "`limits.requests_per_second: R` and R x S x 200 rows. The achieved rate is taken from the simulator "
            "log (accepted requests, first to last); throttle answers from `GET /responsys/_sim/stats`."
        )
    if "vendors" in results:
        lines.append(
            "- **Other vendors**: per vendor, its sample campaign under `campaigns/` with the benchmark's name, "
            "source and limits (concurrency 16, timeout 30 s; no pace: a vendor whose connector paces by default, "
            "Sprinklr and Intilery, gets 1,000,000 requests/s and, Sprinklr, 10^9 an hour), over a deterministic "
            "audience of the sample's shape with no bad rows (`bench/vendor_audiences.py`), at most "
            "`--vendor-max-requests` requests' worth of rows (Sprinklr takes one profile a request). Each run has a "
            "simulator of its own with the vendor's own simulated limits lifted (`--vendor-option "
            "sprinklr.requests_per_second=null`, `sprinklr.requests_per_hour=null`, "
            "`intilery.requests_per_second=null`); throttled runs add `--rate-limit R`. Complete means Volley's "
            "check (exit 0, one outcome per row, all `accepted`) and the simulator log's: every row triggered "
            "exactly once."
        )
    if "warehouse" in results:
        lines.append(
            "- **Warehouse**: `bench/warehouse.py`. A fresh process builds each table inside DuckDB with "
            "`range()`; another fresh process per size reads it through `open_source` (`slice_rows` 250,000; no "
            "ORDER BY) and, for the plan row, plans every slice for Responsys as a run does; its peak RSS is "
            "`VmHWM` from `/proc/self/status`. Every row must come back exactly once."
        )
    lines += [
        "- **Other work**: every second the benchmark reads the CPU time of every process outside its own "
        "tree; the column gives the average number of cores they kept busy during that phase (a lower bound: "
        "processes that start and end between two samples are missed). On a 2-core machine anything above "
        "about 0.2 makes the figures noticeably noisy.",
        "- No figure here is asserted by a test: this page records what one run measured.",
        "",
    ]
    return lines
