"""SQL sources: DuckDB, SQLite and PostgreSQL queries read in ordered slices, parameters bound by the driver,
and every unusable database, query or table a one-line error before anything is sent."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from tests.support import audience, responsys_spec, write_spec
from volley.cli import app
from volley.errors import SourceError, SpecError
from volley.sources import ROW_INDEX, open_source
from volley.spec import SourceSpec, read_spec
from volley.warehouse import compile_placeholders, run_date_for, with_run_date

INJECTION = "x' OR '1'='1"
runner = CliRunner()


def sql_source(uri: str, sql: str, **fields: Any) -> Any:
    return open_source(SourceSpec(sql=sql, uri=uri, **fields))


def read_all(source: Any) -> pl.DataFrame:
    frames: list[pl.DataFrame] = list(source.iter_slices())
    return pl.concat(frames)


def people(rows: int) -> pl.DataFrame:
    """An audience with a day and a segment per row, and a name with a quote in it."""
    return audience(rows).with_columns(
        (pl.lit(date(2026, 3, 1)) + pl.duration(days=pl.int_range(pl.len()) % 3)).alias("signup_day"),
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("lapsed")).otherwise(pl.lit("active")).alias("segment"),
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("O'Brien")).otherwise(pl.lit("Smith")).alias("last_name"),
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> str:
    path = tmp_path / "warehouse.duckdb"
    frame = people(2_500)  # noqa: F841 - read by DuckDB's replacement scan
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE audience AS SELECT * FROM frame")
    return f"duckdb:///{path}"


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    path = tmp_path / "warehouse.db"
    frame = people(2_500)
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE audience (customer_id TEXT, product_sku TEXT, product_name TEXT, n INTEGER, "
            "signup_day TEXT, segment TEXT, last_name TEXT)"
        )
        con.executemany(
            "INSERT INTO audience VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r["customer_id"],
                    r["product_sku"],
                    r["product_name"],
                    i,
                    r["signup_day"].isoformat(),
                    r["segment"],
                    r["last_name"],
                )
                for i, r in enumerate(frame.iter_rows(named=True))
            ],
        )
    con.close()
    return f"sqlite:///{path}"


# -- placeholders ------------------------------------------------------------------------------


def test_placeholders_become_the_drivers_and_quoted_text_is_left_alone() -> None:
    sql = "select ':a' as s, x::date, \"col:a\" -- :b\nfrom t /* :c */ where d = :a and e = :run_date and f like '5%'"
    dollar, names = compile_placeholders(sql, "dollar")
    assert names == ["a", "run_date"]
    assert dollar == sql.replace("d = :a", "d = $a").replace("e = :run_date", "e = $run_date")
    pyformat, _ = compile_placeholders(sql, "pyformat")
    assert "d = %(a)s and e = %(run_date)s" in pyformat
    for kept in ("'5%%'", "':a'", "x::date", '"col:a"'):
        assert kept in pyformat
    body, names = compile_placeholders("select $$ :x $$ || $tag$ :y $tag$ || :z", "colon")
    assert names == ["z"]
    assert body == "select $$ :x $$ || $tag$ :y $tag$ || :z"


def test_the_run_date_is_the_one_given_else_a_run_key_that_is_a_date() -> None:
    assert run_date_for("2026-01-02", "2026-05-05") == "2026-01-02"
    assert run_date_for(None, "2026-05-05") == "2026-05-05"
    assert run_date_for(None, "k1") is None
    assert run_date_for(None, "2026-02-30") is None
    assert with_run_date({"ledger": {"url": "x"}}, None, "2026-05-05") == {
        "ledger": {"url": "x"},
        "source": {"run_date": "2026-05-05"},
    }
    assert with_run_date(None, None, "k1") is None


# -- DuckDB -----------------------------------------------------------------------------------


def test_duckdb_slices_come_in_order_with_a_running_row_index(warehouse: str) -> None:
    source = sql_source(warehouse, "select * from audience order by customer_id;", slice_rows=1_000)
    source.preflight("customer_id")
    schema = source.schema()
    assert schema[ROW_INDEX] == pl.UInt32
    assert schema["signup_day"] == pl.Date
    slices = list(source.iter_slices())
    assert [s.height for s in slices] == [1_000, 1_000, 500]
    frame = pl.concat(slices)
    assert frame[ROW_INDEX].to_list() == list(range(2_500))
    assert frame["customer_id"].to_list() == sorted(people(2_500)["customer_id"].to_list())
    assert frame.columns[0] == ROW_INDEX


def test_duckdb_parameters_are_bound_by_the_driver(warehouse: str) -> None:
    sql = "select * from audience where segment = :segment and last_name = :name and signup_day = :run_date"
    expected = people(2_500).filter(
        (pl.col("segment") == "active")
        & (pl.col("last_name") == "O'Brien")
        & (pl.col("signup_day") == date(2026, 3, 2))
    )
    got = read_all(sql_source(warehouse, sql, params={"segment": "active", "name": "O'Brien"}, run_date="2026-03-02"))
    assert got["customer_id"].to_list() == expected["customer_id"].to_list() == ["C0000007"]
    injected = sql_source(warehouse, "select * from audience where segment = :segment", params={"segment": INJECTION})
    injected.preflight("customer_id")
    assert list(injected.iter_slices()) == []


def test_duckdb_run_date_template_and_default(warehouse: str) -> None:
    sql = "select * from audience where signup_day = :day"
    day = read_all(sql_source(warehouse, sql, params={"day": "{run_date}"}, run_date="2026-03-03"))
    assert day.height == people(2_500).filter(pl.col("signup_day") == date(2026, 3, 3)).height > 0
    labelled = read_all(
        sql_source(
            warehouse,
            "select :label as label, * from audience limit 1",
            params={"label": "day-{run_date}"},
            run_date="2026-03-03",
        )
    )
    assert labelled["label"].to_list() == ["day-2026-03-03"]
    today = sql_source(warehouse, "select :run_date as d")
    assert read_all(today)["d"].to_list() == [today.run_date]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select * from no_such_table", "query failed: Catalog Error: Table with name no_such_table does not exist"),
        ("select * fromm audience", "query failed: Parser Error: syntax error"),
        ("select nope from audience", "query failed: Binder Error"),
    ],
)
def test_duckdb_unusable_queries_are_one_line_naming_the_database(warehouse: str, sql: str, expected: str) -> None:
    source = sql_source(warehouse, sql)
    with pytest.raises(SourceError) as caught:
        source.preflight("customer_id")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{warehouse}: ")
    assert expected in message


def test_a_missing_database_file_or_key_column_stops_before_reading(tmp_path: Path, warehouse: str) -> None:
    with pytest.raises(SourceError, match=r"cannot connect: no such database file .*nope\.duckdb"):
        sql_source(f"duckdb:///{tmp_path}/nope.duckdb", "select 1").preflight("customer_id")
    with pytest.raises(SourceError, match=r"key column 'id' not found \(columns: customer_id, product_sku"):
        sql_source(warehouse, "select * from audience").preflight("id")


def test_parameters_must_match_the_query(warehouse: str) -> None:
    with pytest.raises(SpecError, match=r"source.params.segmnet is not used by source.sql"):
        sql_source(warehouse, "select * from audience where segment = :segment", params={"segmnet": "x"})
    with pytest.raises(SpecError, match=r"source.sql uses :segment, which source.params does not give"):
        sql_source(warehouse, "select * from audience where segment = :segment")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"sql": "select 1", "uri": "duckdb:///x", "path": "a.csv"}, "give exactly one of 'path' (files) or 'sql'"),
        ({"sql": "select 1"}, "'sql' needs 'uri'"),
        ({"sql": "select 1", "uri": "mysql://h/db"}, "unknown database 'mysql'"),
        ({"sql": "select 1", "uri": "postgresql://u:hunter22@h/db"}, "keep the password out of the spec"),
        ({"path": "a.csv", "params": {"a": 1}}, "'uri', 'params' and 'password' go with 'sql'"),
    ],
)
def test_unusable_sql_specs_are_one_line(tmp_path: Path, source: dict[str, Any], expected: str) -> None:
    spec = responsys_spec("a.csv")
    spec["source"] = source
    with pytest.raises(SpecError) as caught:
        read_spec(write_spec(tmp_path / "spec.yaml", spec))
    assert expected in str(caught.value)
    assert "hunter22" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("responsys_credentials")
def test_volley_run_with_a_missing_table_exits_2_before_sending(tmp_path: Path, warehouse: str) -> None:
    spec = responsys_spec("unused")
    spec["source"] = {"sql": "select * from audiences where signup_day = :run_date", "uri": warehouse}
    result = runner.invoke(app, ["run", str(write_spec(tmp_path / "spec.yaml", spec)), "--run-date", "2026-03-01"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "warehouse.duckdb: query failed" in lines[0]  # (the test user name "volley" is masked in paths)
    assert "Table with name audiences does not exist" in lines[0]


@pytest.mark.usefixtures("responsys_credentials")
def test_a_dry_run_plans_a_duckdb_extract_for_the_run_date(tmp_path: Path, warehouse: str) -> None:
    spec = responsys_spec("unused")
    spec["source"] = {"sql": "select * from audience where signup_day = :run_date", "uri": warehouse}
    path = write_spec(tmp_path / "spec.yaml", spec)
    result = runner.invoke(app, ["run", str(path), "--dry-run", "--run-key", "2026-03-02"])
    assert result.exit_code == 0, result.output
    assert f"{people(2_500).filter(pl.col('signup_day') == date(2026, 3, 2)).height:,}" in result.output


# -- SQLite -----------------------------------------------------------------------------------


def test_sqlite_reads_text_in_ordered_slices_with_bound_parameters(sqlite_db: str) -> None:
    sql = "select * from audience where segment = :segment and signup_day >= :since order by n"
    source = sql_source(sqlite_db, sql, params={"segment": "active", "since": date(2026, 3, 2)}, slice_rows=1_000)
    source.preflight("customer_id")
    assert set(source.schema().values()) == {pl.UInt32, pl.String}
    frame = read_all(source)
    expected = (
        people(2_500)
        .with_row_index("n")
        .filter((pl.col("segment") == "active") & (pl.col("signup_day") >= date(2026, 3, 2)))
    )
    assert frame["customer_id"].to_list() == expected["customer_id"].to_list()
    assert frame["n"].to_list() == [str(n) for n in expected["n"]]
    assert frame[ROW_INDEX].to_list() == list(range(expected.height))
    quoted = read_all(sql_source(sqlite_db, "select * from audience where last_name = :n", params={"n": "O'Brien"}))
    assert quoted["customer_id"].to_list() == ["C0000007"]
    injected = sql_source(sqlite_db, "select * from audience where last_name = :n", params={"n": INJECTION})
    assert list(injected.iter_slices()) == []


def test_sqlite_missing_table_and_a_failure_mid_read(sqlite_db: str) -> None:
    with pytest.raises(SourceError, match=r"^sqlite:///.*: query failed: no such table: nope$"):
        sql_source(sqlite_db, "select * from nope").preflight("customer_id")
    failing = sql_source(
        sqlite_db,
        "select customer_id, case when n = 1500 then abs(-9223372036854775807 - 1) end as boom "
        "from audience",  # no ORDER BY: SQLite would compute every row before the first
        slice_rows=1_000,
    )
    failing.preflight("customer_id")
    slices = failing.iter_slices()
    assert next(slices).height == 1_000
    with pytest.raises(SourceError, match=r": read failed: integer overflow$"):
        next(slices)


# -- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def pg_table(postgres_uri: str) -> Iterator[str]:
    """A uniquely named audience table in the test database, dropped afterwards."""
    import psycopg

    table = f"volley_audience_{uuid.uuid4().hex[:10]}"
    frame = people(2_500)
    with psycopg.connect(postgres_uri) as con:
        con.execute(
            f"CREATE TABLE {table} (n integer, customer_id text, product_sku text, product_name text, "
            "signup_day date, segment text, last_name text, score numeric, ref uuid)"
        )
        with con.cursor().copy(
            f"COPY {table} (n, customer_id, product_sku, product_name, signup_day, segment, last_name, score, ref) "
            "FROM STDIN"
        ) as copy:
            for i, r in enumerate(frame.iter_rows(named=True)):
                copy.write_row(
                    (
                        i,
                        r["customer_id"],
                        r["product_sku"],
                        r["product_name"],
                        r["signup_day"],
                        r["segment"],
                        r["last_name"],
                        f"{i}.50",
                        uuid.UUID(int=i),
                    )
                )
    try:
        yield table
    finally:
        with psycopg.connect(postgres_uri, autocommit=True) as con:
            con.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
def test_postgres_streams_ordered_slices_with_bound_parameters(postgres_uri: str, pg_table: str) -> None:
    sql = f"select * from {pg_table} where segment = :segment and signup_day = :run_date order by n"
    source = sql_source(postgres_uri, sql, params={"segment": "active"}, run_date="2026-03-02", slice_rows=1_000)
    source.preflight("customer_id")
    schema = source.schema()
    assert (schema["n"], schema["signup_day"], schema["score"], schema["ref"]) == (
        pl.Int32,
        pl.Date,
        pl.String,
        pl.String,
    )
    frame = read_all(source)
    expected = (
        people(2_500)
        .with_row_index("n")
        .filter((pl.col("segment") == "active") & (pl.col("signup_day") == date(2026, 3, 2)))
    )
    assert frame["customer_id"].to_list() == expected["customer_id"].to_list()
    assert frame[ROW_INDEX].to_list() == list(range(expected.height))
    assert frame["score"][0] == f"{expected['n'][0]}.50"
    many = list(sql_source(postgres_uri, f"select * from {pg_table} order by n", slice_rows=1_000).iter_slices())
    assert [s.height for s in many] == [1_000, 1_000, 500]
    quoted = read_all(
        sql_source(postgres_uri, f"select * from {pg_table} where last_name = :n", params={"n": "O'Brien"})
    )
    assert quoted["customer_id"].to_list() == ["C0000007"]
    injected = sql_source(postgres_uri, f"select * from {pg_table} where last_name = :n", params={"n": INJECTION})
    assert list(injected.iter_slices()) == []
    percent = read_all(
        sql_source(postgres_uri, "select 'C1' as customer_id, '50%' as pct, :v::text as v", params={"v": "%s"})
    )
    assert percent.row(0, named=True) == {ROW_INDEX: 0, "customer_id": "C1", "pct": "50%", "v": "%s"}


@pytest.mark.postgres
def test_postgres_missing_table_and_bad_query_are_one_line(postgres_uri: str) -> None:
    with pytest.raises(SourceError) as caught:
        sql_source(postgres_uri, "select * from no_such_table_x").preflight("customer_id")
    assert str(caught.value) == f'{postgres_uri}: query failed: relation "no_such_table_x" does not exist'
    with pytest.raises(SourceError, match=r"query failed: syntax error at or near"):
        sql_source(postgres_uri, "select * fromm x").preflight("customer_id")


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_uri")
def test_postgres_connection_failure_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOLLEY_TEST_PG_PASSWORD", "hunter22-secret")
    monkeypatch.setenv("VOLLEY_TEST_PG_URI", "postgresql://postgres:uri-secret-42@127.0.0.1:1/test")
    refused = open_source(
        SourceSpec(
            sql="select 1", uri="postgresql://postgres@127.0.0.1:1/test", password={"env": "VOLLEY_TEST_PG_PASSWORD"}
        )
    )
    with pytest.raises(SourceError) as caught:
        refused.preflight("customer_id")
    message = str(caught.value)
    assert message.startswith("postgresql://postgres@127.0.0.1:1/test: cannot connect: connection failed")
    assert "\n" not in message
    assert "hunter22-secret" not in message
    from_env = open_source(SourceSpec(sql="select 1", uri={"env": "VOLLEY_TEST_PG_URI"}))
    assert from_env.description == "postgresql://postgres@127.0.0.1:1/test"
    with pytest.raises(SourceError) as caught:
        from_env.preflight("customer_id")
    assert "uri-secret-42" not in str(caught.value)
    assert "cannot connect" in str(caught.value)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.usefixtures("prefect_server", "responsys_credentials")
async def test_a_campaign_from_a_postgres_query_records_every_row(
    tmp_path: Path, postgres_uri: str, pg_table: str
) -> None:
    from flows.campaign import campaign_flow
    from sim.log import accepted_recipients, read_log
    from sim.testing import SimulatorProcess

    spec = responsys_spec("unused", name="pg-campaign")
    spec["source"] = {
        "sql": f"select customer_id, product_sku, product_name from {pg_table} "
        "where segment = :segment and signup_day <= :run_date order by n",
        "uri": postgres_uri,
        "params": {"segment": "lapsed"},
        "slice_rows": 1_000,
    }
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    expected = people(2_500).filter((pl.col("segment") == "lapsed") & (pl.col("signup_day") <= date(2026, 3, 2)))
    with SimulatorProcess() as sim:
        summary: Any = await campaign_flow(
            spec_path=str(spec_path), run_key="2026-03-02", base_url=sim.responsys_url, results_dir=str(tmp_path / "r")
        )
    assert isinstance(summary, dict), summary
    outcomes = pl.read_parquet(summary["outcome_path"]).sort("row_index")
    assert summary["rows"] == expected.height
    assert outcomes["row_index"].to_list() == list(range(expected.height))
    assert outcomes["recipient_key"].to_list() == expected["customer_id"].to_list()
    assert set(outcomes["status"]) == {"accepted"}
    triggered = accepted_recipients(read_log(sim.log_path))["key"]
    assert sorted(triggered) == sorted(expected["customer_id"])


@pytest.mark.usefixtures("responsys_credentials")
def test_the_sample_warehouse_campaign_reads_the_demo_warehouse(tmp_path: Path) -> None:
    """campaigns/responsys_warehouse_lapsed.yaml against the warehouse `make demo` builds."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    loader = importlib.util.spec_from_file_location("volley_demo_script", root / "scripts" / "demo.py")
    assert loader is not None
    assert loader.loader is not None
    demo = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(demo)
    target = tmp_path / "warehouse.duckdb"
    demo.build_warehouse(target)
    from volley.campaign import Campaign, dry_run

    overrides = {"source": {"uri": f"duckdb:///{target}", "run_date": "2026-03-01"}}
    campaign = Campaign.load(root / "campaigns" / "responsys_warehouse_lapsed.yaml", overrides=overrides)
    campaign.preflight()
    report = dry_run(campaign, "2026-03-01")
    assert 0 < report.rows < 1_000
    assert report.to_send >= report.rows - 5
