"""The outcome record: complete part files, compaction, and the one-row-per-source-row invariant."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from volley.batches import Batch
from volley.outcomes import (
    OUTCOME_SCHEMA,
    BatchOutcome,
    InvariantError,
    OutcomeWriter,
    RowResults,
    RunIdentity,
    Status,
    check_invariant,
    read_outcomes,
)

RUN = RunIdentity("run-1", "2026-11-23", "campaign", "responsys")


def writer(tmp_path: Path, flush_rows: int = 1_000) -> OutcomeWriter:
    return OutcomeWriter(tmp_path / "run-1", RUN, flush_rows=flush_rows, flush_seconds=3600)


def sent(rows: int, status: Status = Status.ACCEPTED) -> BatchOutcome:
    now = datetime.now(UTC)
    return BatchOutcome(RowResults.uniform(rows, status, vendor_ref="v"), 1, 200, now, now)


def test_rows_from_planning_and_dispatch_compact_into_one_sorted_file(tmp_path: Path) -> None:
    out = writer(tmp_path)
    out.write_batch(Batch.of("b1", [2, 3], ["c", "d"], ["{}"] * 2), sent(2))
    out.write_frame(pl.DataFrame({"row_index": [1, 0], "recipient_key": ["b", "a"], "status": ["invalid", "skipped"]}))
    path = out.finalize(expected_rows=4)
    frame = pl.read_parquet(path)
    assert frame.schema == pl.Schema(OUTCOME_SCHEMA)
    assert frame["row_index"].to_list() == [0, 1, 2, 3]
    assert frame["status"].to_list() == ["skipped", "invalid", "accepted", "accepted"]
    assert frame["run_key"].unique().to_list() == ["2026-11-23"]
    assert frame.filter(pl.col("status") == "accepted")["attempts"].to_list() == [1, 1]
    assert not out.parts_dir.exists()
    assert out.counts == {"accepted": 2, "invalid": 1, "skipped": 1}


def test_each_row_keeps_its_own_result_whether_the_batch_is_uniform_or_not(tmp_path: Path) -> None:
    out = writer(tmp_path)
    now = datetime.now(UTC)
    mixed = RowResults(
        ["accepted", "rejected", "accepted"],
        [None, "RECIPIENT_NOT_FOUND", None],
        [None, "no such recipient", None],
        [11, None, 13],  # integer ids (Responsys's), beside other batches' text: all recorded as text
        [None, '{"why": 1}', None],
    )
    out.write_batch(Batch.of("b0", [0, 1], ["a", "b"], ["{}"] * 2), sent(2))
    out.write_batch(Batch.of("b1", [2, 3, 4], ["c", "d", "e"], ["{}"] * 3), BatchOutcome(mixed, 2, 200, now, now))
    failed = RowResults.uniform(1, Status.FAILED, "HTTP_503", "down")
    out.write_batch(Batch.of("b2", [5], ["f"], ["{}"]), BatchOutcome(failed, 6, 503, now, now))
    rows = pl.read_parquet(out.finalize(expected_rows=6)).select(
        "recipient_key", "batch_id", "status", "attempts", "error_code", "error_message", "vendor_ref", "details"
    )
    assert rows.rows() == [
        ("a", "b0", "accepted", 1, None, None, "v", None),
        ("b", "b0", "accepted", 1, None, None, "v", None),
        ("c", "b1", "accepted", 2, None, None, "11", None),
        ("d", "b1", "rejected", 2, "RECIPIENT_NOT_FOUND", "no such recipient", None, '{"why": 1}'),
        ("e", "b1", "accepted", 2, None, None, "13", None),
        ("f", "b2", "failed", 6, "HTTP_503", "down", None, None),
    ]


def test_the_record_reads_as_plain_strings_int16_and_utc_times_without_polars(tmp_path: Path) -> None:
    out = writer(tmp_path)
    out.write_batch(Batch.of("b0", [0, 1], ["a", "é"], ["{}"] * 2), sent(2))
    path = out.finalize(expected_rows=2)
    schema = pq.read_schema(path)  # what pyarrow, DuckDB or Spark see: no Arrow string views
    assert schema.field("recipient_key").type == pa.string()
    assert schema.field("run_id").type == pa.string()  # written from a dictionary of the run's one value
    assert schema.field("attempts").type == pa.int16()
    assert schema.field("submitted_at").type == pa.timestamp("us", tz="UTC")
    table = pq.read_table(path)
    assert table.column("recipient_key").to_pylist() == ["a", "é"]
    identity = table.select(["run_id", "run_key", "campaign", "vendor"]).to_pylist()
    assert identity == [{"run_id": "run-1", "run_key": "2026-11-23", "campaign": "campaign", "vendor": "responsys"}] * 2


def test_parts_are_written_whole_as_batches_finish(tmp_path: Path) -> None:
    out = writer(tmp_path, flush_rows=3)
    out.write_batch(Batch.of("b1", [0, 1], ["a", "b"], ["{}"] * 2), sent(2))
    assert not out.flush_due
    out.write_batch(Batch.of("b2", [2, 3], ["c", "d"], ["{}"] * 2), sent(2))
    assert out.flush_due
    pending = out.detach()
    out.write_batch(Batch.of("b3", [4], ["e"], ["{}"] * 1), sent(1))  # the buffer goes on while the part is written
    out.write_part(pending)
    parts = list(out.parts_dir.glob("*.parquet"))
    assert len(parts) == 1
    assert not list(out.parts_dir.glob("*.tmp"))
    # what a crash leaves behind is readable as it is
    assert read_outcomes(tmp_path / "run-1")["row_index"].to_list() == [0, 1, 2, 3]
    assert out.finalize(expected_rows=5) == out.path


@pytest.mark.parametrize(
    ("row_index", "expected"),
    [
        ([0, 1, 1], "3 rows, 2 distinct"),
        ([0, 1], "2 rows"),
        ([1, 2, 3], r"in \[1, 3\]"),
        ([0, 2, 2], "3 rows, 2 distinct"),
        ([0, None, 2], "3 rows, 2 distinct row_index and 1 null"),
        ([2, 0, 0], "3 rows, 2 distinct"),
    ],
)
def test_the_invariant_catches_lost_and_doubled_rows(row_index: list[int | None], expected: str) -> None:
    with pytest.raises(InvariantError, match=expected):
        check_invariant(pl.DataFrame({"row_index": row_index}, schema={"row_index": pl.Int64}), expected_rows=3)


@pytest.mark.parametrize("row_index", [[0, 1, 2], [2, 0, 1], [1, 0, 2]])
def test_the_invariant_holds_for_every_index_once_in_any_order(row_index: list[int]) -> None:
    check_invariant(pl.DataFrame({"row_index": row_index}), expected_rows=3)


def test_finalize_refuses_a_record_that_breaks_the_invariant(tmp_path: Path) -> None:
    out = writer(tmp_path)
    out.write_batch(Batch.of("b1", [0, 1], ["a", "b"], ["{}"] * 2), sent(2))
    with pytest.raises(InvariantError):
        out.finalize(expected_rows=3)


def test_read_outcomes_covers_finished_and_unfinished_runs(tmp_path: Path) -> None:
    done = OutcomeWriter(tmp_path / "k" / "run-a", RUN)
    done.write_batch(Batch.of("b", [0], ["a"], ["{}"] * 1), sent(1))
    done.finalize(1)
    crashed = OutcomeWriter(tmp_path / "k" / "run-b", RUN)
    crashed.write_batch(Batch.of("b", [0], ["a"], ["{}"] * 1), sent(1, Status.IN_DOUBT))
    crashed.flush()
    assert sorted(read_outcomes(tmp_path / "k")["status"].to_list()) == ["accepted", "in_doubt"]


def test_compaction_sorts_pass_by_pass_and_keeps_every_row(tmp_path: Path) -> None:
    out = writer(tmp_path, flush_rows=4)
    out.compact_rows = 3  # several passes over the parts
    order = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]
    for index in order:
        out.write_batch(Batch.of(f"b{index}", [index], [f"k{index}"], ["{}"] * 1), sent(1))
        if out.flush_due:
            out.write_part(out.detach())
    path = out.finalize(expected_rows=10)
    frame = pl.read_parquet(path)
    assert frame["row_index"].to_list() == list(range(10))
    assert frame["recipient_key"].to_list() == [f"k{i}" for i in range(10)]
    assert frame.schema == pl.Schema(OUTCOME_SCHEMA)


def test_compaction_keeps_a_stray_row_so_the_invariant_refuses_it(tmp_path: Path) -> None:
    out = writer(tmp_path)
    out.compact_rows = 2
    out.write_batch(Batch.of("b", [0, 1, 2, 7], ["a", "b", "c", "stray"], ["{}"] * 4), sent(4))
    with pytest.raises(InvariantError):
        out.finalize(expected_rows=3)


def test_stretches_complete_during_the_run_are_compacted_before_finalize(tmp_path: Path) -> None:
    out = writer(tmp_path, flush_rows=2)
    out.compact_rows = 2
    out.write_batch(Batch.of("b1", [1], ["k1"], ["{}"]), sent(1))
    out.write_batch(Batch.of("b0", [0], ["k0"], ["{}"]), sent(1))
    out.write_part(out.detach())
    compacted = out.path.with_suffix(".parquet.tmp")
    assert not compacted.exists(), "nothing is compacted before compact_from_now"
    out.compact_from_now()
    assert compacted.exists(), "rows 0-1 are in parts: their stretch is written at once"
    for index in [3, 4]:
        out.write_batch(Batch.of(f"b{index}", [index], [f"k{index}"], ["{}"]), sent(1))
    out.write_part(out.detach())
    out.write_batch(Batch.of("b2", [2], ["k2"], ["{}"]), sent(1))
    path = out.finalize(expected_rows=5)
    assert pl.read_parquet(path)["row_index"].to_list() == [0, 1, 2, 3, 4]
    assert not compacted.exists()


def test_once_active_a_stretch_is_compacted_from_the_rows_kept_in_memory(tmp_path: Path) -> None:
    out = writer(tmp_path, flush_rows=2)
    out.compact_rows = 2
    out.compact_from_now()
    out.write_batch(Batch.of("b0", [0], ["k0"], ["{}"]), sent(1))
    out.write_part(out.detach())
    (first_part,) = out.parts_dir.glob("part-*.parquet")
    first_part.write_bytes(b"not parquet")  # the stretch must not need the file again
    out.write_batch(Batch.of("b1", [1], ["k1"], ["{}"]), sent(1))
    out.write_part(out.detach())
    assert pl.read_parquet(out.finalize(expected_rows=2))["recipient_key"].to_list() == ["k0", "k1"]


def test_a_row_of_a_stretch_already_compacted_is_judged_on_every_part(tmp_path: Path) -> None:
    out = writer(tmp_path, flush_rows=2)
    out.compact_rows = 2
    out.compact_from_now()
    for indexes in ([0, 1], [2, 3], [1]):  # row 1 twice: the second after its stretch was written
        out.write_batch(Batch.of("b", indexes, [f"k{i}" for i in indexes], ["{}"] * len(indexes)), sent(len(indexes)))
        out.write_part(out.detach())
    with pytest.raises(InvariantError, match="5 rows, 4 distinct"):
        out.finalize(expected_rows=4)


def test_a_run_stopped_early_leaves_parts_and_no_compacted_file(tmp_path: Path) -> None:
    out = writer(tmp_path, flush_rows=2)
    out.compact_rows = 2
    out.compact_from_now()
    out.write_batch(Batch.of("b", [0, 1], ["a", "b"], ["{}"] * 2), sent(2))
    out.flush()
    assert out.path.with_suffix(".parquet.tmp").exists()
    out.stop_compacting()
    assert not out.path.with_suffix(".parquet.tmp").exists()
    assert read_outcomes(tmp_path / "run-1")["row_index"].to_list() == [0, 1]
