"""Peak memory of a DuckDB extract read through the SQL source, at 1M and 10M rows.

Each size runs in a fresh process (peak RSS is a high-water mark), after another fresh
process has built the table inside DuckDB with `range()`. The child reads the query with
`SqlSource.iter_slices` (and, with `plan=True`, also plans every slice for Responsys, as a
run does). Target: the peak at 10M rows within 1.5 times the peak at 1M rows, for the plain
extract (a filter; DuckDB keeps the table's order). `ordered=True` measures the same query
with `ORDER BY n`: DuckDB sorts everything first, within its memory_limit (256MB unless the
URI sets one), spilling the rest to disk.

    python -m bench.warehouse [--rows 1000000 10000000] [--plan] [--ordered] [--dir DIR]

`measure_warehouse()` returns the figures for the report: `python -m bench` runs it plain and with
`plan=True` (`--only warehouse`, `--warehouse-rows SMALL LARGE`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["TARGET_RATIO", "measure_warehouse"]

TARGET_RATIO = 1.5
SIZES = (1_000_000, 10_000_000)
SLICE_ROWS = 250_000
_ROOT = Path(__file__).resolve().parent.parent
_SQL = "select * from audience where segment <> :excluded order by n"
_SQL_UNORDERED = "select * from audience where segment <> :excluded"


def _build(path: Path, rows: int) -> None:
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute(
            f"""CREATE TABLE audience AS
            SELECT i AS n,
                   'C' || lpad(i::VARCHAR, 10, '0') AS customer_id,
                   'SKU' || (i % 97)::VARCHAR AS product_sku,
                   CASE WHEN i % 5 = 0 THEN 'Crème brûlée candle' ELSE 'Stonewash Jeans' END AS product_name,
                   ['lapsed', 'active', 'new'][(i % 3) + 1] AS segment
            FROM range({int(rows)}) t(i)"""
        )


def _read(path: Path, plan: bool, ordered: bool) -> dict[str, Any]:
    """In the child: read (and optionally plan) the whole extract; report peak RSS."""
    from volley.sources import open_source
    from volley.spec import SourceSpec

    baseline = _peak_rss_mib()
    spec = SourceSpec(
        sql=_SQL if ordered else _SQL_UNORDERED,
        uri=f"duckdb:///{path}",
        params={"excluded": "none"},
        slice_rows=SLICE_ROWS,
    )
    source = open_source(spec)
    planner = _planner(source.description) if plan else None
    source.preflight("customer_id")
    started = time.perf_counter()
    rows = slices = last_index = 0
    for frame in source.iter_slices():
        rows += frame.height
        slices += 1
        last_index = int(frame[0, 0]) + frame.height - 1
        if planner is not None:
            planner.plan_slice(frame)
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "slices": slices,
        "last_row_index": last_index,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds) if seconds else None,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that over an exec from the
    parent, so a child started by a big bench process reported the parent's peak (seen: 581 MiB
    for both sizes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def _planner(description: str) -> Any:
    import os

    from connectors import connector_class
    from volley.planning import Planner

    os.environ.setdefault("BENCH_RESPONSYS_USER", "bench")
    os.environ.setdefault("BENCH_RESPONSYS_PASSWORD", "bench-secret")
    cls = connector_class("responsys")
    params = cls.params_model.model_validate(
        {
            "event": "Back_In_Stock",
            "list": {"folder": "F", "object": "O"},
            "identify_by": "customerId",
            "optional_data": [{"name": "PRODUCT_SKU_ID", "column": "product_sku"}],
        }
    )
    connection = cls.connection_model.model_validate(
        {
            "base_url": "http://127.0.0.1:9/responsys",
            "user_name": {"env": "BENCH_RESPONSYS_USER"},
            "password": {"env": "BENCH_RESPONSYS_PASSWORD"},
        }
    )
    connector = cls(params, connection, "customer_id")
    return Planner(
        connector=connector,
        key="customer_id",
        run_key="bench",
        batch_rows=200,
        source=description,
    )


def _child(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.warehouse", *args],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench.warehouse {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def measure_warehouse(
    sizes: tuple[int, ...] = SIZES, directory: Path | None = None, plan: bool = False, ordered: bool = False
) -> dict[str, Any]:
    """Peak RSS reading each size through the SQL source; the 10M/1M ratio against the target."""
    workdir = directory or Path(tempfile.mkdtemp(prefix="volley-bench-warehouse-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for rows in sizes:
        path = workdir / f"audience_{rows}.duckdb"
        if not path.exists():
            started = time.perf_counter()
            _child("--build", str(path), "--rows", str(rows))
            build_seconds = round(time.perf_counter() - started, 1)
        else:
            build_seconds = 0.0
        figures = _child("--read", str(path), *(["--plan"] if plan else []), *([] if ordered else ["--unordered"]))
        figures.update(size=rows, build_seconds=build_seconds, database_mib=round(path.stat().st_size / 2**20, 1))
        if figures["rows"] != rows or figures["last_row_index"] != rows - 1:
            raise RuntimeError(f"read {figures['rows']} rows of {rows}: the extract lost or repeated rows")
        runs.append(figures)
    smallest, largest = runs[0], runs[-1]
    ratio = round(largest["peak_rss_mib"] / smallest["peak_rss_mib"], 2)
    return {
        "what": "DuckDB extract read through SqlSource.iter_slices" + (" and planned for Responsys" if plan else ""),
        "query": _SQL if ordered else _SQL_UNORDERED,
        "slice_rows": SLICE_ROWS,
        "runs": runs,
        "peak_ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warehouse")
    parser.add_argument("--build", type=Path)
    parser.add_argument("--read", type=Path)
    parser.add_argument("--rows", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--plan", action="store_true")
    parser.add_argument("--unordered", action="store_true", help="(child) read without ORDER BY")
    parser.add_argument("--ordered", action="store_true", help="measure the query with ORDER BY n too")
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args(argv)
    if args.build:
        _build(args.build, args.rows[0])
        print(json.dumps({"built": str(args.build)}))
        return 0
    if args.read:
        print(json.dumps(_read(args.read, args.plan, not args.unordered)))
        return 0
    reports = [measure_warehouse(tuple(args.rows), args.dir, args.plan)]
    if args.ordered:
        reports.append(measure_warehouse(tuple(args.rows), args.dir, args.plan, ordered=True))
    print(json.dumps(reports, indent=2))
    return 0 if reports[0]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
