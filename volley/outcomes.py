"""The outcome record: one row per source row, written to Parquet as batches finish.

Part files are written whole and renamed into place, so a crash leaves only complete,
readable parts; `finalize` compacts them into `outcomes.parquet` and checks the invariant.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from volley.batches import Batch
from volley.crashpoints import crash_point

__all__ = [
    "OUTCOME_SCHEMA",
    "BatchOutcome",
    "InvariantError",
    "OutcomeWriter",
    "RowResults",
    "RunIdentity",
    "Status",
    "check_invariant",
    "read_outcomes",
]


class Status(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    IN_DOUBT = "in_doubt"


OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "run_key": pl.String(),
    "campaign": pl.String(),
    "vendor": pl.String(),
    "row_index": pl.Int64(),
    "recipient_key": pl.String(),
    "batch_id": pl.String(),
    "status": pl.String(),
    "attempts": pl.Int16(),
    "http_status": pl.Int16(),
    "error_code": pl.String(),
    "error_message": pl.String(),
    "vendor_ref": pl.String(),
    "details": pl.String(),
    "submitted_at": pl.Datetime("us", "UTC"),
    "completed_at": pl.Datetime("us", "UTC"),
}
# Dictionary pages where values repeat (the run's identity, statuses, batch ids, error texts) and
# statistics where readers filter (row indexes, times, statuses): recipient keys and vendor refs are
# nearly all distinct, so a dictionary or min/max of them costs and serves nothing. Measured on a
# 1M-row record: the writer's CPU 0.88 -> 0.49 s, the file 23.5 -> 19.1 MB.
_DICTIONARY_COLUMNS = [
    "run_id", "run_key", "campaign", "vendor", "batch_id", "status", "error_code", "error_message", "details",
]  # fmt: skip
_STATISTICS_COLUMNS = [
    "run_id", "row_index", "batch_id", "status", "attempts", "http_status", "submitted_at", "completed_at",
]  # fmt: skip
_PER_ROW = ("status", "error_code", "error_message", "vendor_ref", "details")  # beside each batch's rows
_PER_BATCH = ("batch_id", "attempts", "http_status", "submitted_at", "completed_at")
# Per-row results that are usually one value for the whole batch (every row accepted): kept once a
# batch then, and per row only for batches where they vary. Per row, they were three quarters of a
# part's conversion from Python lists (5.7 of 7.5 ms for 50k rows, measured).
_MOSTLY_UNIFORM = ("status", "error_code", "error_message", "details")
_ONE = "__one"  # the batch's value, where it is one for every row
_VARIES = "__varies"  # whether it varies within the batch (then it is among the per-row values)
_UNIFORM_COLUMNS = (*(f"{n}{_ONE}" for n in _MOSTLY_UNIFORM), *(f"{n}{_VARIES}" for n in _MOSTLY_UNIFORM))


class InvariantError(AssertionError):
    """The outcome record does not hold exactly one row per source row."""


@dataclass(frozen=True, slots=True)
class RunIdentity:
    run_id: str
    run_key: str
    campaign: str
    vendor: str

    def columns(self) -> dict[str, str]:
        """The record's identity columns (the first four of OUTCOME_SCHEMA, named as these fields) and their values."""
        return {"run_id": self.run_id, "run_key": self.run_key, "campaign": self.campaign, "vendor": self.vendor}


@dataclass(slots=True)
class RowResults:
    """A connector's reading of one answer: one entry per row of the batch, in batch order."""

    status: list[str]
    error_code: list[str | None]
    error_message: list[str | None]
    vendor_ref: list[str | int | None]  # an integer id (Responsys recipientId) is recorded as its text
    details: list[str | None] | None = None

    @classmethod
    def uniform(
        cls,
        rows: int,
        status: Status,
        error_code: str | None = None,
        error_message: str | None = None,
        vendor_ref: str | None = None,
    ) -> RowResults:
        return cls([status.value] * rows, [error_code] * rows, [error_message] * rows, [vendor_ref] * rows)


@dataclass(slots=True)
class BatchOutcome:
    """What became of one batch after the dispatcher is done with it."""

    results: RowResults
    attempts: int
    http_status: int | None
    submitted_at: datetime | None
    completed_at: datetime


@dataclass
class _Pending:
    """Rows taken out of the writer's buffer, to be written as part `number`."""

    number: int
    frames: list[pl.DataFrame]
    sent_rows: list[pl.DataFrame]
    columns: dict[str, list[Any]]


@dataclass
class OutcomeWriter:
    """Buffers outcome rows and writes them as complete Parquet part files.

    Buffering is thread-safe (the planner writes from its thread, the dispatcher from the
    loop), and a part can be written off the event loop: `detach()` on the loop, then
    `write_part()` in a thread.
    """

    run_dir: Path
    run: RunIdentity
    flush_rows: int = 50_000
    flush_seconds: float = 5.0
    compact_rows: int = 100_000  # row indexes sorted at a time when compacting (see _compact)
    _columns: dict[str, list[Any]] = field(default_factory=dict, init=False)
    _frames: list[pl.DataFrame] = field(default_factory=list, init=False)
    _sent_rows: list[pl.DataFrame] = field(default_factory=list, init=False)
    _buffered: int = field(default=0, init=False)
    _parts: int = field(default=0, init=False)
    _last_flush: float = field(default_factory=time.monotonic, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _compactor: _StretchCompactor | None = field(default=None, init=False)
    counts: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._parts = len(list(self.parts_dir.glob("part-*.parquet")))
        self._columns = self._empty_columns()

    @property
    def parts_dir(self) -> Path:
        return self.run_dir / "outcomes"

    @property
    def path(self) -> Path:
        return self.run_dir / "outcomes.parquet"

    @property
    def _compacted_path(self) -> Path:
        return self.path.with_suffix(".parquet.tmp")

    @property
    def _stretches(self) -> _StretchCompactor:
        with self._lock:
            if self._compactor is None:
                self._compactor = _StretchCompactor(self._compacted_path, self.run, self.compact_rows)
            return self._compactor

    @staticmethod
    def _empty_columns() -> dict[str, list[Any]]:
        return {name: [] for name in (*_PER_ROW, *_PER_BATCH, "rows", *_UNIFORM_COLUMNS)}

    @property
    def flush_due(self) -> bool:
        return self._buffered >= self.flush_rows or (
            self._buffered > 0 and time.monotonic() - self._last_flush >= self.flush_seconds
        )

    def write_frame(self, frame: pl.DataFrame) -> None:
        """Rows decided before dispatch (invalid, skipped): any subset of the outcome columns."""
        if frame.height == 0:
            return
        with self._lock:
            self._frames.append(frame)
            self._buffered += frame.height

    def write_batch(self, batch: Batch, outcome: BatchOutcome) -> None:
        """One batch's outcome; what is the same for the whole batch is kept once, not per row."""
        rows = len(batch)
        results = outcome.results
        with self._lock:
            self._sent_rows.append(batch.rows)
            cols = self._columns
            mostly_uniform: tuple[tuple[str, list[Any] | None], ...] = (
                ("status", results.status),
                ("error_code", results.error_code),
                ("error_message", results.error_message),
                ("details", results.details),
            )
            for name, values in mostly_uniform:
                values = values or [None]  # no details at all: one null for the batch
                varies = values.count(values[0]) != len(values)
                cols[f"{name}{_ONE}"].append(None if varies else values[0])
                cols[f"{name}{_VARIES}"].append(varies)
                if varies:
                    cols[name].extend(values)
            cols["vendor_ref"].extend(results.vendor_ref)
            cols["batch_id"].append(batch.batch_id)
            cols["attempts"].append(outcome.attempts)
            cols["http_status"].append(outcome.http_status)
            cols["submitted_at"].append(outcome.submitted_at)
            cols["completed_at"].append(outcome.completed_at)
            cols["rows"].append(rows)
            self._buffered += rows

    def detach(self) -> _Pending | None:
        """Take everything buffered, to be written as the next part."""
        with self._lock:
            self._last_flush = time.monotonic()
            if self._buffered == 0:
                return None
            pending = _Pending(self._parts, self._frames, self._sent_rows, self._columns)
            self._parts += 1
            self._frames, self._sent_rows, self._columns, self._buffered = [], [], self._empty_columns(), 0
        return pending

    def write_part(self, pending: _Pending | None) -> None:
        """Write detached rows as one part file, whole or not at all (temporary file, fsync, rename)."""
        if pending is None:
            return
        frames = [self._conform(f) for f in pending.frames]
        if pending.sent_rows:
            frames.append(self._conform(_sent_frame(pending.sent_rows, pending.columns)))
        part = pl.concat(frames, how="vertical")
        target = self.parts_dir / f"part-{pending.number:05d}.parquet"
        temporary = target.with_suffix(".parquet.tmp")
        pq.write_table(_arrow_table(part, self.run), temporary, **_PARQUET_OPTIONS)
        with temporary.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        counts = part.group_by("status").len().iter_rows()
        with self._lock:
            for status, n in counts:
                self.counts[status] = self.counts.get(status, 0) + n
        self._stretches.note(target, part)

    def flush(self) -> None:
        """Write everything buffered now, on this thread."""
        self.write_part(self.detach())

    def compact_from_now(self) -> None:
        """Write complete stretches of outcomes.parquet from now on, not all at `finalize`: for the
        end of a run, once planning is done and its thread is free (earlier, the compaction only
        took CPU the sends needed: measured, a 1M-row run no faster and 60-80 MiB heavier)."""
        self._stretches.activate()

    def stop_compacting(self) -> None:
        """The run will not be finalized (it stopped early): drop what was compacted so far."""
        self._stretches.discard()

    def _identity_columns(self) -> list[pl.Expr]:
        return [pl.lit(value).alias(name) for name, value in self.run.columns().items()]

    def _conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.with_columns(self._identity_columns())
        return frame.select(
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in OUTCOME_SCHEMA.items()
        )

    def finalize(self, expected_rows: int) -> Path:
        """Compact the parts into outcomes.parquet (sorted by row_index) and check the invariant.

        Most of the file is written while the last batches go out (`compact_from_now`); when that
        cannot vouch for it, or its file breaks the invariant, every part is compacted again before
        judging.
        """
        self.flush()
        parts = sorted(self.parts_dir.glob("part-*.parquet"))
        temporary = self._compacted_path
        try:
            if not self._stretches.finish():
                raise InvariantError("compacted during the run: not every row")
            check_invariant(pl.scan_parquet(temporary), expected_rows)
        except InvariantError:
            _compact(parts, temporary, self.run, self.compact_rows)
            try:
                check_invariant(pl.scan_parquet(temporary), expected_rows)
            except InvariantError:
                temporary.unlink()
                raise
        crash_point("finalize")
        os.replace(temporary, self.path)
        for part in parts:
            part.unlink()
        self.parts_dir.rmdir()
        return self.path


# How the record and its parts are written. Polars' string views go to the file as they are, and
# without Arrow's schema beside Parquet's a reader sees plain strings (and int16, UTC timestamps:
# Parquet says those itself), not a string_view type older readers refuse. Converting each stretch
# to Arrow's large strings first took 0.36 s of CPU for 1M rows, writing the views 0.21 s; lz4
# rather than snappy, 0.22 -> 0.20 s and a file 4% smaller; a 50k-row part, 15 ms of CPU with
# polars' writer, 11 ms with these settings (measured).
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "use_dictionary": _DICTIONARY_COLUMNS,
    "write_statistics": _STATISTICS_COLUMNS,
    "store_schema": False,
}


def _outcome_writer(target: Path, run: RunIdentity) -> pq.ParquetWriter:
    arrow_schema = _arrow_table(pl.DataFrame(schema=pl.Schema(OUTCOME_SCHEMA)), run).schema
    return pq.ParquetWriter(target, arrow_schema, **_PARQUET_OPTIONS)


_COMPAT = pl.CompatLevel.newest()


def _arrow_table(frame: pl.DataFrame, run: RunIdentity) -> pa.Table:
    """Outcome rows of `run` as the Parquet writer takes them: its identity columns (one value in
    every row) as dictionaries of that value, so that the writer writes the value once and an index
    a row, rather than hashing every row's copy to build the same dictionary: a 1M-row run's parts
    and record took 1.08 s of CPU to write before, 0.87 s after (measured interleaved). Parquet holds
    the same dictionary-encoded string column either way."""
    identity = run.columns()
    table = frame.drop(identity.keys()).to_arrow(compat_level=_COMPAT)
    first_value = pa.repeat(pa.scalar(0, pa.int32()), table.num_rows)
    for position, (name, value) in enumerate(identity.items()):
        column = pa.DictionaryArray.from_arrays(first_value, pa.array([value], pa.string()))
        table = table.add_column(position, name, column)
    return table


def _sorted_stretch(scan: pl.LazyFrame, stretch: pl.Expr, run: RunIdentity) -> pa.Table:
    return _arrow_table(scan.filter(stretch).sort("row_index").collect(), run)


@dataclass(slots=True)
class _NotedPart:
    """A part file the compactor has counted: where it is, its row-index range and, once the
    compactor is active, its rows (kept until every stretch they fall in is written)."""

    path: Path
    low: int
    high: int
    frame: pl.DataFrame | None


class _StretchCompactor:
    """Writes outcomes.parquet while the run goes on, once activated: the rows of row indexes
    [k*n, (k+1)*n), sorted, as soon as every one of them is in a part file, stretch after stretch
    in order. Rows finish nearly in row order, so at the end of a run only the last stretch or two
    are left to write: `finalize` took 0.06 s of a 1M-row run instead of 0.38-0.45 s. The run took
    about 2% less time per second of the simulator's CPU (which the host's drift moves alike),
    shorter in 6 of 7 alternating pairs; its peak RSS stayed within 20 MiB (measured).

    A stretch is read from the parts whose row-index range meets it: from memory when the compactor
    was active as they were written (it keeps their rows until their stretches are written: once
    planning is done, those of the batches still out), else from those part files only, not from
    every part file of the run (1M rows in 20 parts, every stretch written: 0.51-0.58 s reading
    every file, 0.48-0.49 s the meeting ones, measured apart).

    It counts rows, it does not check them: a row of a stretch already written, a null row index
    or a stretch over `n` rows spoils it, and `finish` says so. The invariant is still checked on
    the file it leaves.
    """

    def __init__(self, target: Path, run: RunIdentity, rows_per_stretch: int) -> None:
        self.target = target
        self.run = run
        self.rows = rows_per_stretch
        self._counts: dict[int, int] = {}
        self._parts: list[_NotedPart] = []
        self._next = 0
        self._writer: pq.ParquetWriter | None = None
        self._spoiled = False
        self._active = False
        self._lock = threading.Lock()

    def note(self, path: Path, part: pl.DataFrame) -> None:
        """Count a part's rows (just written to `path`) by stretch; once active, write every stretch now complete."""
        row_index = part["row_index"]
        stretches = (row_index // self.rows).value_counts()
        low, high = row_index.min(), row_index.max()  # null only where every row index is
        with self._lock:
            for stretch, rows in stretches.iter_rows():
                if stretch is None or stretch < self._next:
                    self._spoiled = True
                else:
                    self._counts[stretch] = self._counts.get(stretch, 0) + rows
                    self._spoiled |= self._counts[stretch] > self.rows
            if self._spoiled or not isinstance(low, int) or not isinstance(high, int):
                return
            self._parts.append(_NotedPart(path, low, high, part if self._active else None))
            self._write_complete()

    def activate(self) -> None:
        with self._lock:
            self._active = True
            self._write_complete()

    def _write_complete(self) -> None:
        while self._active and not self._spoiled and self._counts.get(self._next) == self.rows:
            self._write(self._next)

    def finish(self) -> bool:
        """Write the stretches left and close the file; False (and no file) when it was spoiled."""
        with self._lock:
            if self._spoiled:
                self._close(keep=False)
                return False
            for stretch in range(self._next, max(self._counts, default=-1) + 1):
                self._write(stretch)
            if self._writer is None:
                self._writer = _outcome_writer(self.target, self.run)  # no rows at all: an empty file
            self._close(keep=True)
            return True

    def discard(self) -> None:
        with self._lock:
            self._spoiled = True
            self._close(keep=False)

    def _write(self, stretch: int) -> None:
        start, end = stretch * self.rows, (stretch + 1) * self.rows
        meeting = [part for part in self._parts if part.low < end and part.high >= start]
        in_range = pl.col("row_index").is_between(start, end, closed="left")
        if all(part.frame is not None for part in meeting):
            frames = [part.frame for part in meeting if part.frame is not None]
            rows = pl.concat(frames).lazy() if frames else pl.DataFrame(schema=pl.Schema(OUTCOME_SCHEMA)).lazy()
        else:
            rows = pl.scan_parquet([part.path for part in meeting])
        table = _sorted_stretch(rows, in_range, self.run)
        if self._writer is None:
            self._writer = _outcome_writer(self.target, self.run)
        self._writer.write_table(table)
        self._next = stretch + 1
        self._parts = [part for part in self._parts if part.high >= end]  # the others are written out

    def _close(self, keep: bool) -> None:
        self._parts = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not keep:
            self.target.unlink(missing_ok=True)


def _compact(parts: list[Path], target: Path, run: RunIdentity, rows_per_pass: int) -> None:
    """The parts as one Parquet file sorted by row_index, `rows_per_pass` row indexes at a time:
    memory stays that of one pass whatever the run's size. Measured on shuffled parts: one sort of
    everything peaked at 525 MiB for 1M rows and 1,497 MiB for 4M; passes of 100k rows at 282 and
    291 MiB, taking 1.15 s and 4.4 s (larger passes peaked higher: 687 MiB at 500k). Parts hold
    nearby row indexes, so their statistics let each pass skip most of them. Every row goes in,
    wherever its row_index lies: the invariant is checked on what was written."""
    if not parts:
        pl.DataFrame(schema=pl.Schema(OUTCOME_SCHEMA)).write_parquet(target)
        return
    scan = pl.scan_parquet(parts)
    low, high = scan.select(low=pl.col("row_index").min(), high=pl.col("row_index").max()).collect().row(0)
    with _outcome_writer(target, run) as writer:
        if low is None:  # only null row indexes, if anything: the invariant check will say so
            writer.write_table(_arrow_table(scan.collect(), run))
            return
        stretches = [pl.col("row_index").is_null()]
        stretches += [
            pl.col("row_index").is_between(start, start + rows_per_pass, closed="left")
            for start in range(low, high + 1, rows_per_pass)
        ]

        def read(stretch: pl.Expr) -> pa.Table:
            return _sorted_stretch(scan, stretch, run)

        # The next pass is read and sorted while this one is written (both release the GIL): at the
        # end of a run the other core is idle. 1M rows in 20 shuffled parts: 0.98 -> 0.72 s, same peak RSS.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="volley-compact") as reader:
            upcoming = reader.submit(read, stretches[0])
            for following in [*stretches[1:], None]:
                rows = upcoming.result()
                if following is not None:
                    upcoming = reader.submit(read, following)
                if rows.num_rows:
                    writer.write_table(rows)


def _sent_frame(sent_rows: list[pl.DataFrame], cols: dict[str, list[Any]]) -> pl.DataFrame:
    """The batches' rows, their per-row results beside them, per-batch columns repeated for each row."""
    # One select after the concat: a select per batch frame measured 140 us each (34 ms a 50k-row part).
    rows = pl.concat(sent_rows, how="vertical", rechunk=False).select("row_index", "recipient_key")
    schema: dict[str, pl.DataType] = {n: OUTCOME_SCHEMA[n] for n in _PER_BATCH}
    schema |= {f"{n}{_ONE}": OUTCOME_SCHEMA[n] for n in _MOSTLY_UNIFORM}
    schema |= {f"{n}{_VARIES}": pl.Boolean() for n in _MOSTLY_UNIFORM}
    per_batch = pl.DataFrame(
        {name: cols[name] for name in (*_PER_BATCH, *_UNIFORM_COLUMNS, "rows")}, schema=schema | {"rows": pl.Int64()}
    )
    batch_of_row = pl.int_range(per_batch.height, eager=True).repeat_by(per_batch["rows"]).explode()
    expanded = per_batch.select(*_PER_BATCH, *_UNIFORM_COLUMNS)[batch_of_row]
    # Text, or integer ids (Responsys's recipientIds): cast to text here, in one go.
    vendor_ref = pl.Series("vendor_ref", cols["vendor_ref"], strict=False).cast(OUTCOME_SCHEMA["vendor_ref"])
    results = [vendor_ref]
    for name in _MOSTLY_UNIFORM:
        one, varies = expanded[f"{name}{_ONE}"], expanded[f"{name}{_VARIES}"]
        if not cols[name]:
            results.append(one.alias(name))
            continue
        per_row = pl.Series(cols[name], dtype=OUTCOME_SCHEMA[name])
        position = (varies.cast(pl.Int64).cum_sum() - 1).clip(0)
        results.append(pl.select(pl.when(varies).then(per_row.gather(position)).otherwise(one)).to_series().alias(name))
    return pl.concat([rows, pl.DataFrame(results), expanded.select(_PER_BATCH)], how="horizontal")


def check_invariant(frame: pl.DataFrame | pl.LazyFrame, expected_rows: int) -> None:
    """Every row_index from 0 to n-1 exactly once.

    A record sorted by row_index (as compaction writes it) holds it when it has n rows, no null
    index, starts at 0 and steps by one: checked that way first (9 against 30-50 ms for 1M rows,
    the last thing a run does); anything else is judged by counting its distinct indexes.
    """
    row_index = pl.col("row_index")
    stats = (
        frame.lazy()
        .select(
            pl.len().alias("rows"),
            row_index.null_count().alias("nulls"),
            row_index.min().alias("low"),
            row_index.max().alias("high"),
            (row_index.diff() == 1).all().alias("steps_of_one"),
        )
        .collect()
        .row(0, named=True)
    )
    if expected_rows == 0 and stats["rows"] == 0:
        return
    bounds = stats["rows"] == expected_rows and stats["low"] == 0 and stats["high"] == expected_rows - 1
    if bounds and stats["nulls"] == 0 and stats["steps_of_one"]:
        return
    unique = frame.lazy().select(row_index.drop_nulls().n_unique()).collect().item()
    if bounds and stats["nulls"] == 0 and unique == expected_rows:  # unsorted, but every index once
        return
    nulls = f" and {stats['nulls']} null" if stats["nulls"] else ""
    raise InvariantError(
        f"outcome invariant broken: {stats['rows']} rows, {unique} distinct row_index{nulls} "
        f"in [{stats['low']}, {stats['high']}], expected exactly 0..{expected_rows - 1}"
    )


def read_outcomes(path: Path) -> pl.DataFrame:
    """Outcomes of a run directory (finished or not), a results tree, or one Parquet file."""
    if path.is_file():
        return pl.read_parquet(path)
    files = sorted(path.rglob("outcomes.parquet")) + sorted(path.rglob("outcomes/part-*.parquet"))
    if not files:
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")
