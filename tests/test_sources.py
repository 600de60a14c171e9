"""File sources: every bad file stops the run before anything is sent, with one line naming it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.support import audience
from volley.errors import SourceError
from volley.sources import ROW_INDEX, FileSource
from volley.spec import SourceSpec


def source(path: Path | str, **options: object) -> FileSource:
    return FileSource(SourceSpec(path=str(path), slice_rows=1000, **options))


def read_all(src: FileSource) -> pl.DataFrame:
    return pl.concat(list(src.iter_slices()))


def test_csv_is_read_as_text_in_order_with_a_row_index(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("customer_id,zip\n1,00123\n2,04567\n", encoding="utf-8")
    src = source(path)
    src.preflight("customer_id")
    frame = read_all(src)
    assert frame[ROW_INDEX].to_list() == [0, 1]
    assert frame["zip"].to_list() == ["00123", "04567"], "leading zeros survive: CSV columns stay text"


def test_slices_keep_row_order_across_many_slices(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    audience(5_500).write_parquet(path)
    slices = list(source(path).iter_slices())
    assert len(slices) >= 5
    frame = pl.concat(slices)
    assert frame[ROW_INDEX].to_list() == list(range(5_500))
    assert frame["customer_id"].to_list() == audience(5_500)["customer_id"].to_list()


def test_glob_reads_files_in_name_order_as_one_audience(tmp_path: Path) -> None:
    audience(3, start=10).write_ndjson(tmp_path / "part-2.ndjson")
    audience(2).write_ndjson(tmp_path / "part-1.ndjson")
    src = source(tmp_path / "part-*.ndjson")
    src.preflight("customer_id")
    frame = read_all(src)
    assert frame["customer_id"].to_list() == ["C0000000", "C0000001", "C0000010", "C0000011", "C0000012"]
    assert frame[ROW_INDEX].to_list() == [0, 1, 2, 3, 4]


def test_a_bom_does_not_hide_the_key_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfcustomer_id,name\nC1,Ana\n")
    src = source(path)
    src.preflight("customer_id")
    assert read_all(src)["customer_id"].to_list() == ["C1"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file is empty"),
        (b"customer_id,name\n", "no rows (the file holds a header only)"),
        (b"id,name\n1,Ana\n", "key column 'customer_id' not found (columns: id, name)"),
        (b"customer_id,name\nC1,Ana\nC2,Ren\xe9e\n", "line 3: not valid UTF-8 (byte 0xe9)"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "audience.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError) as caught:
        source(path).preflight("customer_id")
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected in message
    assert "\n" not in message


def test_missing_file_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no such file"):
        source(tmp_path / "nope.csv")
    with pytest.raises(SourceError, match=r"no file matches"):
        source(tmp_path / "*.parquet")


def test_unknown_suffix_asks_for_a_format(tmp_path: Path) -> None:
    path = tmp_path / "audience.dat"
    path.write_text("customer_id\n1\n")
    with pytest.raises(SourceError, match=r"set source\.format"):
        source(path)
    assert source(path, format="csv").format == "csv"


def test_corrupt_parquet_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"broken.parquet: cannot read as parquet"):
        source(path).preflight("customer_id")
