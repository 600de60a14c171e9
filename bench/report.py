"""The report: a table on stdout, bench/results/latest.json, and docs/BENCHMARKS.md (rewritten).

Everything here renders the one results document `__main__` assembles; nothing is measured here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["check_targets", "print_table", "render_markdown", "write_json"]

MEMORY_LIMIT_MIB = 1024.0


def _fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the value reached and whether it was met."""
    ceiling = results["ceiling"]["recipients_per_second"]
    volley = results["volley"]
    dlt = results["dlt"]["recipients_per_second"]
    rate = volley["recipients_per_second"]
    targets = [
        {
            "target": "Volley / transport ceiling >= 0.5",
            "value": f"{rate / ceiling:.2f}" if ceiling else "n/a",
            "met": bool(ceiling) and rate / ceiling >= 0.5,
        },
        {
            "target": "Volley / dlt >= 3",
            "value": f"{rate / dlt:.2f}" if dlt else "n/a",
            "met": bool(dlt) and rate / dlt >= 3,
        },
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
    throttled = results.get("throttled")
    if throttled is not None:
        targets += [
            {
                "target": "throttled: achieved / allowed rate >= 95%",
                "value": f"{throttled['utilisation']:.1%}",
                "met": throttled["utilisation"] >= 0.95,
            },
            {
                "target": "throttled: API_LIMIT_EXCEEDED answers = 0",
                "value": str(throttled["throttle_answers"]),
                "met": throttled["throttle_answers"] == 0 and throttled["complete"],
            },
        ]
    return targets


def _main_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, recipients/s, seconds, note) for the headline table."""
    ceiling = results["ceiling"]
    volley = results["volley"]
    dlt = results["dlt"]
    tries = ", ".join(f"{t['workers']} workers {t['recipients_per_second']:,.0f}/s" for t in ceiling["tries"])
    return [
        (
            "transport ceiling (pre-built bodies)",
            _fmt_rate(ceiling["recipients_per_second"]),
            f"{ceiling['seconds']:.2f}",
            f"best of: {tries}",
        ),
        (
            "Volley, run elapsed (plan + send + compact)",
            _fmt_rate(volley["recipients_per_second"]),
            f"{volley['elapsed_seconds']:.2f}",
            f"summary.json elapsed_seconds; {volley['requests']:,} requests, {volley['retries']} retries",
        ),
        (
            "Volley, whole command (incl. Prefect server start)",
            _fmt_rate(volley["wall_recipients_per_second"]),
            f"{volley['wall_seconds']:.2f}",
            "wall time of `volley run`",
        ),
        (
            "dlt custom destination (batch_size 200)",
            _fmt_rate(dlt["recipients_per_second"]),
            f"{dlt['seconds']:.2f}",
            f"pipeline.run end to end; {dlt['requests']:,} requests",
        ),
    ]


def print_table(results: dict[str, Any]) -> None:
    rows = _main_rows(results)
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'':{width}}  {'recipients/s':>12}  {'seconds':>8}")
    for what, rate, seconds, note in rows:
        print(f"{what:{width}}  {rate:>12}  {seconds:>8}  {note}")
    volley = results["volley"]
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
    print()
    for target in results["targets"]:
        print(f"[{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['value']}")
    for note in results.get("noise_notes", []):
        print(f"note: {note}")


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


def render_markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    volley = results["volley"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (`make bench`); rerun it to refresh this page.",
        "Every figure below comes from one run on one machine, so the ratios compare like with like.",
        "",
        f"- date: {results['date']}",
        f"- machine: {machine['nproc']} cores ({machine['cpu']}), {machine['ram_gib']} GiB RAM, {machine['platform']}",
        f"- python {machine['python']}, polars {versions.get('polars')}, prefect {versions.get('prefect')}, "
        f"dlt {versions.get('dlt')}, httpx {versions.get('httpx')}, httpx-aiohttp {versions.get('httpx-aiohttp')}, "
        f"aiohttp {versions.get('aiohttp')}",
        f"- command: `{results['command']}`",
        f"- audience: {results['rows']:,} rows (Parquet), 200 recipients a request",
        "",
        "## Throughput",
        "",
        "| what | recipients/s | seconds | other work on the machine (cores) | notes |",
        "|---|---:|---:|---:|---|",
    ]
    phases = ("ceiling", "volley", "volley", "dlt")
    for (what, rate, seconds, note), phase in zip(_main_rows(results), phases, strict=True):
        lines.append(f"| {what} | {rate} | {seconds} | {_busy_cell(results[phase])} | {note} |")
    lines += [
        "",
        f"Peak memory of the Volley process: **{volley['peak_rss_mib']:,.0f} MiB** "
        f"({volley['rss_samples']:,} samples, every 50 ms); the embedded Prefect server, a separate process, "
        f"peaked at {volley['peak_prefect_server_rss_mib']:,.0f} MiB and is not counted.{_memory_line(volley)}",
        "",
    ]
    throttled = results.get("throttled")
    if throttled is not None:
        lines += [
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
    lines += ["## Targets", "", "| target | reached | met |", "|---|---|---|"]
    for target in results["targets"]:
        lines.append(f"| {target['target']} | {target['value']} | {'yes' if target['met'] else '**no**'} |")
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
    return [
        "## How measured",
        "",
        "- **Audience**: polars writes a deterministic Parquet file (customer_id `C{n}`, product_sku, "
        "product_name and first_name, some of them non-ASCII, including a character outside the BMP).",
        "- **Simulator**: one `python -m sim` process (no latency, no faults, no rate limit) serves every "
        "contender in turn; it validates each body and logs every request and recipient.",
        "- **Transport ceiling**: the request bodies (the Responsys REI JSON Volley sends, 200 recipients, "
        "ASCII with `\\uXXXX` escapes) are all built before the clock starts; after one login, one "
        "`httpx.AsyncClient` over `httpx_aiohttp.AiohttpTransport` posts them from a fixed pool of workers "
        "pulling from an `asyncio.Queue`. A short warm-up pass runs first; 8 and 16 workers are tried and the "
        "best is kept.",
        "- **Volley**: `volley run SPEC --base-url SIM/responsys --run-key bench-... --results-dir TMP` as a "
        "subprocess (concurrency 16, no rate limit, timeout 30 s), with a fresh `PREFECT_HOME` and the embedded "
        "Prefect server. The rate is accepted recipients / `elapsed_seconds` of the run's `summary.json` "
        "(planning, validation, encoding, sending and outcome compaction; not the Prefect server start). The "
        "wall time of the whole command is given too. Peak memory: psutil samples the RSS of the `volley` "
        "process every 50 ms (its children, the Prefect server, apart). The outcome Parquet is read back: "
        "one row per audience row, all `accepted`.",
        "- **dlt**: a resource yielding Arrow record batches from the same Parquet, the default pipeline "
        "(extract, normalize, load; telemetry off, a temporary pipelines dir) and a "
        "`@dlt.destination(batch_size=200, loader_file_format='parquet')` function that posts the same body "
        "with a sync `httpx.Client` after one login. Timed: `pipeline.run(...)`.",
        "- **Throttled**: a second simulator with `--rate-limit R`; a Volley spec with "
        "`limits.requests_per_second: R` and R x S x 200 rows. The achieved rate is taken from the simulator "
        "log (accepted requests, first to last); throttle answers from `GET /responsys/_sim/stats`.",
        "- **Other work**: every second the benchmark reads the CPU time of every process outside its own "
        "tree; the column gives the average number of cores they kept busy during that phase (a lower bound: "
        "processes that start and end between two samples are missed). On a 2-core machine anything above "
        "about 0.2 makes the figures noticeably noisy.",
        "- No figure here is asserted by a test: this page records what one run measured.",
        "",
    ]
