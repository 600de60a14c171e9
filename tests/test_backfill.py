"""Backfills: five days from a DuckDB warehouse, one already done, one stopped half way.

Checked against the simulator's own log: every recipient of every day triggered exactly once.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from flows.backfill import backfill_flow, dates_between
from flows.campaign import campaign_flow
from sim.log import accepted_recipients, read_log
from sim.testing import SimulatorProcess
from tests.support import responsys_spec, write_spec
from volley.errors import SpecError
from volley.history import run_key_history

DAYS = [(date(2026, 3, 1) + timedelta(days=n)).isoformat() for n in range(5)]
PER_DAY = 1_200


def daily_audience() -> pl.DataFrame:
    """1,200 customers a day, each on one day only (so the log's keys tell the days apart)."""
    frames = [
        pl.DataFrame(
            {
                "n": range(PER_DAY),
                "customer_id": [f"D{d}-C{i:05d}" for i in range(PER_DAY)],
                "product_sku": [f"SKU{i % 13}" for i in range(PER_DAY)],
                "product_name": ["Trail Boots"] * PER_DAY,
                "signup_day": [date.fromisoformat(day)] * PER_DAY,
            }
        )
        for d, day in enumerate(DAYS)
    ]
    return pl.concat(frames)


def test_dates_between_is_inclusive_and_checked() -> None:
    assert dates_between("2026-02-27", "2026-03-02") == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    with pytest.raises(SpecError, match="is before --start"):
        dates_between("2026-03-02", "2026-03-01")
    with pytest.raises(SpecError, match="use YYYY-MM-DD"):
        dates_between("March 1", "2026-03-01")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "responsys_credentials")
async def test_a_backfill_sends_every_recipient_of_every_day_exactly_once(tmp_path: Path) -> None:
    frame = daily_audience()
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE audience AS SELECT * FROM frame ORDER BY signup_day, n")
    spec = responsys_spec("unused", name="daily-back-in-stock")
    spec["source"] = {
        "sql": "select customer_id, product_sku, product_name from audience where signup_day = :day order by n",
        "uri": f"duckdb:///{warehouse}",
        "params": {"day": "{run_date}"},
        "slice_rows": 1_000,
    }
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    # The same campaign on a warehouse connection that dies after the first 1,000 rows of a day.
    flaky_db = tmp_path / "flaky.db"
    with sqlite3.connect(flaky_db) as lite:
        lite.execute(
            "CREATE TABLE audience (n INTEGER, customer_id TEXT, product_sku TEXT, product_name TEXT, day TEXT)"
        )
        lite.executemany(
            "INSERT INTO audience VALUES (?, ?, ?, ?, ?)",
            [(r[0], r[1], r[2], r[3], r[4].isoformat()) for r in frame.iter_rows()],
        )
    lite.close()
    flaky = dict(spec)
    flaky["source"] = {
        "sql": "select customer_id, product_sku, product_name, "
        "case when n = 1100 then abs(-9223372036854775807 - 1) end as lost_connection "
        "from audience where day = :run_date",
        "uri": f"sqlite:///{flaky_db}",
        "slice_rows": 1_000,
    }
    flaky_path = write_spec(tmp_path / "flaky.yaml", flaky)
    results = tmp_path / "results"

    async def backfill() -> list[dict[str, Any]]:
        rows = await backfill_flow(
            spec_path=str(spec_path),
            start=DAYS[0],
            end=DAYS[-1],
            concurrency=2,
            base_url=sim.responsys_url,
            results_dir=str(results),
        )
        assert isinstance(rows, list), rows
        return rows

    with SimulatorProcess() as sim:
        done: Any = await campaign_flow(
            spec_path=str(spec_path),
            run_key=DAYS[1],
            run_date=DAYS[1],
            base_url=sim.responsys_url,
            results_dir=str(results),
        )
        assert isinstance(done, dict)
        assert done["counts"]["accepted"] == PER_DAY
        half = await campaign_flow(
            spec_path=str(flaky_path),
            run_key=DAYS[3],
            run_date=DAYS[3],
            base_url=sim.responsys_url,
            results_dir=str(results),
            return_state=True,
        )
        assert half.is_failed()
        assert "read failed: integer overflow" in (half.message or "")
        run_key_dir = results / "daily-back-in-stock" / DAYS[3]
        assert run_key_history(run_key_dir).state == "partial"

        first = await backfill()
        again = await backfill()
    log = read_log(sim.log_path)

    by_day = {row["date"]: row for row in first}
    assert [row["date"] for row in first] == DAYS
    assert {day: row["action"] for day, row in by_day.items()} == {
        DAYS[0]: "ran",
        DAYS[1]: "skipped",
        DAYS[2]: "ran",
        DAYS[3]: "resumed",
        DAYS[4]: "ran",
    }
    assert by_day[DAYS[1]]["run_id"] == done["run_id"]
    for day in (DAYS[0], DAYS[2], DAYS[4]):
        assert by_day[day]["counts"]["accepted"] == PER_DAY
    resumed = by_day[DAYS[3]]["counts"]
    assert resumed["skipped"] == 1_000, "the rows accepted before the connection died are not sent again"
    assert resumed["accepted"] == PER_DAY - 1_000
    assert {row["action"] for row in again} == {"skipped"}

    triggered = accepted_recipients(log)["key"]
    assert triggered.is_duplicated().sum() == 0, "a recipient was triggered twice"
    assert set(triggered) == set(frame["customer_id"]), "every recipient of every day was triggered"


@pytest.mark.usefixtures("responsys_credentials")
def test_backfill_command_exits_2_on_bad_dates_or_an_unusable_source(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from volley.cli import app

    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE audience AS SELECT 'C1' AS customer_id")
    spec = responsys_spec("unused")
    spec["source"] = {"sql": "select * from audience_typo where d = :run_date", "uri": f"duckdb:///{warehouse}"}
    path = str(write_spec(tmp_path / "spec.yaml", spec))
    runner = CliRunner()
    for args, expected in (
        (["--start", "2026-03-02", "--end", "2026-03-01"], "--end 2026-03-01 is before --start 2026-03-02"),
        (["--start", "2026-03-01", "--end", "2026-03-02"], "Table with name audience_typo does not exist"),
    ):
        result = runner.invoke(app, ["backfill", path, *args])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, result.output
        assert expected in lines[0]
