"""Audience sources: files (CSV, Parquet, NDJSON; a path or a glob) read lazily in slices.

Every problem with a file stops the run before anything is sent, with one line that
names the file (and the line, where there is one).
"""

from __future__ import annotations

import codecs
import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import polars as pl

from volley.errors import SourceError
from volley.spec import SourceSpec

__all__ = ["ROW_INDEX", "AudienceSource", "FileSource", "open_source"]

ROW_INDEX = "__volley_row_index"

_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
_CHUNK = 8 * 1024 * 1024


class AudienceSource(Protocol):
    """What the planner needs of a source."""

    description: str

    def preflight(self, key: str) -> None:
        """Check the whole source is readable and holds the key column; raise SourceError."""

    def schema(self) -> pl.Schema:
        """Column names and types, with ROW_INDEX."""

    def iter_slices(self) -> Iterator[pl.DataFrame]:
        """Yield the audience in order, in slices, each with a 0-based ROW_INDEX column."""


def open_source(spec: SourceSpec) -> AudienceSource:
    if spec.sql is not None:
        from volley.warehouse import SqlSource

        return SqlSource(spec)
    return FileSource(spec)


class FileSource:
    """One file or a glob of files of one format, read as a single audience in file-name order."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        assert spec.path is not None, "a file source needs source.path"
        self.files = _resolve(spec.path)
        self.description = ", ".join(str(f) for f in self.files)
        self.format = spec.format or _infer_format(self.files[0])

    def _scan_one(self, path: Path) -> pl.LazyFrame:
        if self.format == "csv":
            # Audience columns stay text: inference would turn "00123" into 123.
            return pl.scan_csv(
                path,
                separator=self.spec.separator,
                infer_schema=False,
                encoding="utf8",
                missing_columns="raise",
            )
        if self.format == "parquet":
            return pl.scan_parquet(path)
        return pl.scan_ndjson(path, infer_schema_length=None)

    def _scan(self) -> pl.LazyFrame:
        frames = [self._scan_one(path) for path in self.files]
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
        return frame.with_row_index(ROW_INDEX)

    def preflight(self, key: str) -> None:
        for path in self.files:
            if path.stat().st_size == 0:
                raise SourceError(f"{path}: file is empty")
            if self.format in ("csv", "ndjson"):
                _check_utf8(path)
            try:
                single = self._scan_one(path)
                columns = single.collect_schema().names()
                first = single.head(1).collect()
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise SourceError(f"{path}: cannot read as {self.format}: {_first_line(exc)}") from None
            if key not in columns:
                shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
                raise SourceError(f"{path}: key column {key!r} not found (columns: {shown})")
            if first.height == 0:
                raise SourceError(f"{path}: no rows (the file holds a header only)")
        if len(self.files) > 1:
            try:
                self._scan().head(1).collect()
            except pl.exceptions.PolarsError as exc:
                raise SourceError(f"{self.spec.path}: the files do not share one schema: {_first_line(exc)}") from None

    def schema(self) -> pl.Schema:
        return self._scan().collect_schema()

    def iter_slices(self) -> Iterator[pl.DataFrame]:
        try:
            yield from self._scan().collect_batches(chunk_size=self.spec.slice_rows, maintain_order=True)
        except pl.exceptions.PolarsError as exc:
            raise SourceError(f"{self.description}: read failed: {_first_line(exc)}") from None


def _resolve(pattern: str) -> list[Path]:
    if glob.has_magic(pattern):
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches:
            raise SourceError(f"{pattern}: no file matches")
        return matches
    path = Path(pattern)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return [path]


def _infer_format(path: Path) -> str:
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(f"{path}: cannot tell the format from the suffix; set source.format")
    return fmt


def _check_utf8(path: Path) -> None:
    """Stream the file through a strict UTF-8 decoder; name the line of the first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    lines_before = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                buffer = bytes(exc.object)
                line = lines_before + buffer.count(b"\n", 0, exc.start) + 1
                raise SourceError(
                    f"{path}: line {line}: not valid UTF-8 (byte 0x{buffer[exc.start]:02x}); "
                    "re-export the file as UTF-8"
                ) from None
            lines_before += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise SourceError(f"{path}: ends inside a UTF-8 character; re-export the file as UTF-8") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
