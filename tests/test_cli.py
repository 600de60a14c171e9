"""The command line contract: exit 2 with one line for unusable input, dry runs send nothing."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tests.support import audience, responsys_spec, write_spec
from volley.cli import app

runner = CliRunner()


def one_line_error(result_output: str) -> str:
    lines = [line for line in result_output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result_output
    assert "Traceback" not in result_output
    return lines[0]


@pytest.mark.usefixtures("responsys_credentials")
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file is empty"),
        (b"id,product_sku,product_name\n1,a,b\n", "key column 'customer_id' not found"),
        (b"customer_id,product_sku,product_name\nC1,a,b\nC2,\xff,b\n", "line 3: not valid UTF-8"),
        (b"customer_id,product_name\nC1,b\n", "column 'product_sku' named in vendor_params is not in the audience"),
    ],
)
def test_unusable_sources_exit_2_naming_the_file(tmp_path: Path, content: bytes, expected: str) -> None:
    source = tmp_path / "audience.csv"
    source.write_bytes(content)
    spec = write_spec(tmp_path / "spec.yaml", responsys_spec(source))
    result = runner.invoke(app, ["run", str(spec)])
    assert result.exit_code == 2
    line = one_line_error(result.output)
    assert str(source) in line
    assert expected in line


def test_an_unusable_spec_exits_2_with_the_field_path(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nvendor: responsys\nkey: id\n")
    result = runner.invoke(app, ["run", str(spec)])
    assert result.exit_code == 2
    assert "source: Field required" in one_line_error(result.output)


@pytest.mark.usefixtures("responsys_credentials")
def test_dry_run_counts_and_plans_without_sending(tmp_path: Path) -> None:
    source = tmp_path / "audience.parquet"
    frame = audience(1_050)
    pl.concat([frame, frame.head(3)]).write_parquet(source)
    spec = responsys_spec(source, limits={"requests_per_second": 2})
    result = runner.invoke(app, ["run", str(write_spec(tmp_path / "spec.yaml", spec)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: nothing sent" in result.output
    assert "skipped: duplicate_key" in result.output
    assert "1,050" in result.output  # to send
    assert "3.0 s at 2.0/s" in result.output  # 6 requests at 2 a second
    assert not (tmp_path / "results").exists()


def test_report_summarizes_a_results_tree(tmp_path: Path) -> None:
    run_dir = tmp_path / "results" / "c" / "k" / "r1"
    run_dir.mkdir(parents=True)
    pl.DataFrame(
        {
            "campaign": ["c"] * 3,
            "run_key": ["k"] * 3,
            "run_id": ["r1"] * 3,
            "row_index": [0, 1, 2],
            "status": ["accepted", "rejected", "rejected"],
            "error_code": [None, "NO_RECIPIENT_FOUND", "NO_RECIPIENT_FOUND"],
        }
    ).write_parquet(run_dir / "outcomes.parquet")
    result = runner.invoke(app, ["report", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "NO_RECIPIENT_FOUND" in result.output
    assert "3 outcome rows in 1 run(s)" in result.output


def test_report_on_nothing_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no such file or directory" in one_line_error(result.output)
