"""The recipient keys met so far in a run, with the row each was first met at: on disk, not in memory.

For every slice the planner must tell which of its keys an earlier slice had (a repeated key is
`skipped`, naming the first row). Kept in memory, the keys would grow with the audience: 10 million
keys in a polars frame, joined against every slice, took gigabytes. Here they live in two anonymous
temporary files, read back in fixed-size pieces:

- the hashes: the 64-bit hash of every stored key (8 bytes each), in the order they were stored;
  a lookup reads them `chunk_keys` at a time to find the positions whose hash is one of the
  slice's (the OS page cache keeps the file; it is not the process's memory);
- the keys: one Arrow IPC block a slice, the keys first met in it and their first row, in the same
  order, read only for the positions whose hash matched, to compare the keys themselves.

A key repeats an earlier one only when the two strings are equal: keys that share a hash are told
apart, never skipped. Memory: one chunk of hashes (16 MiB) beside the slice's own keys, whatever
the size of the audience; disk: about 18 bytes a key (11-character keys, their blocks compressed).
The files have no name (`tempfile.TemporaryFile`): the system frees them when they are closed or
the process ends, even killed, so nothing is ever left behind. (That is why this is not a DuckDB
table, which would do the lookup as well: DuckDB needs a named file, which a killed run leaves.)
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.compute  # polars imports it for the first Arrow array it is given (below): 28 ms in a run's first slices

from volley.connector import RECIPIENT_KEY

__all__ = ["FIRST_ROW", "KEY", "SeenKeys"]

KEY = RECIPIENT_KEY
FIRST_ROW = "first_row"
_HASH = "__key_hash"
_HASH_BYTES = 8
_SCHEMA = {KEY: pl.String, FIRST_ROW: pl.Int64}


def _hash_keys(keys: pl.Series) -> pl.Series:
    return keys.hash(seed=0x5EED)


@dataclass(frozen=True, slots=True)
class _Block:
    first: int  # position of its first key among the stored hashes
    offset: int  # where it is in the keys file
    size: int


class SeenKeys:
    """Recipient keys already met, with their first row, in anonymous temporary files."""

    def __init__(
        self,
        chunk_keys: int = 1 << 21,
        hash_keys: Callable[[pl.Series], pl.Series] = _hash_keys,
        directory: str | Path | None = None,
    ) -> None:
        self.chunk_keys = chunk_keys
        self._hash_keys = hash_keys  # a parameter so tests can force collisions
        self._directory = directory  # where the (nameless) files are; default: the system's
        self._files: tuple[IO[bytes], IO[bytes]] | None = None  # hashes, keys: opened with the first key
        self._release: weakref.finalize[[tuple[IO[bytes], IO[bytes]]], SeenKeys] | None = None
        self._blocks: list[_Block] = []
        self._stored = 0
        self._closed = False

    def __len__(self) -> int:
        return self._stored

    def first_rows(self, keys: pl.DataFrame) -> pl.DataFrame:
        """`keys`: distinct, non-empty keys (KEY) with their first row in this slice (FIRST_ROW).

        Returns the keys met before this call with the row they were first met at, and stores the
        others with theirs.
        """
        if self._closed:
            raise RuntimeError("SeenKeys is closed")
        if keys.height == 0:
            return pl.DataFrame(schema=_SCHEMA)
        keys = keys.select(pl.col(KEY), pl.col(FIRST_ROW).cast(pl.Int64))
        keys = keys.with_columns(self._hash_keys(keys[KEY]).cast(pl.UInt64).alias(_HASH))
        earlier = self._look_up(keys)
        self._store(keys.join(earlier.select(KEY), on=KEY, how="anti") if earlier.height else keys)
        return earlier

    def close(self) -> None:
        """Free the files; the keys are forgotten and this object can no longer be used."""
        self._closed = True
        if self._release is not None:
            self._release()

    def _look_up(self, keys: pl.DataFrame) -> pl.DataFrame:
        if self._files is None:
            return pl.DataFrame(schema=_SCHEMA)
        hashes, stored_keys = self._files
        wanted = keys[_HASH].implode()
        hits: list[pl.Series] = []
        buffer = memoryview(bytearray(min(self.chunk_keys, self._stored) * _HASH_BYTES))
        hashes.seek(0)
        start = 0
        while start < self._stored:
            count = min(self.chunk_keys, self._stored - start)
            _read_into(hashes, buffer[: count * _HASH_BYTES])
            data = pa.py_buffer(buffer[: count * _HASH_BYTES])
            chunk = pl.Series(_HASH, pa.Array.from_buffers(pa.uint64(), count, [None, data]))
            positions = chunk.is_in(wanted).arg_true()  # half what a semi-join took (measured: 21 -> 12 ms for 900k)
            if positions.len():
                hits.append(positions.cast(pl.Int64) + start)
            start += count
        if not hits:
            return pl.DataFrame(schema=_SCHEMA)
        positions = pl.concat(hits)
        blocks = pl.Series([b.first for b in self._blocks], dtype=pl.Int64).search_sorted(positions, side="right")
        assert isinstance(blocks, pl.Series)
        found = pl.DataFrame({"position": positions, "block": blocks.cast(pl.Int64) - 1})
        candidates = []
        for (index,), group in found.group_by("block"):
            assert isinstance(index, int)
            block = self._blocks[index]
            stored_keys.seek(block.offset)
            data = stored_keys.read(block.size)
            if len(data) != block.size:
                raise OSError("the seen-keys file is shorter than what was written to it")
            candidates.append(pl.read_ipc(data)[(group["position"] - block.first).to_list()])
        # Equal hashes are candidates only: a key is met again when the strings are equal.
        return keys.select(KEY).join(pl.concat(candidates), on=KEY, how="inner").select(KEY, FIRST_ROW)

    def _store(self, new: pl.DataFrame) -> None:
        if new.height == 0:
            return
        if self._files is None:
            self._files = (
                tempfile.TemporaryFile(prefix="volley-seen-hashes-", dir=self._directory),  # noqa: SIM115
                tempfile.TemporaryFile(prefix="volley-seen-keys-", dir=self._directory),  # noqa: SIM115
            )
            self._release = weakref.finalize(self, _close, self._files)  # when garbage collected, quietly
        hashes, stored_keys = self._files
        block = new.select(KEY, FIRST_ROW).write_ipc(None, compression="lz4").getvalue()
        offset = self._blocks[-1].offset + self._blocks[-1].size if self._blocks else 0
        stored_keys.seek(offset)  # over whatever an earlier, failed call left
        stored_keys.write(block)
        values = new[_HASH].rechunk().to_arrow()
        data = values.buffers()[1]
        assert data is not None
        hashes.seek(self._stored * _HASH_BYTES)
        hashes.write(data.slice(values.offset * _HASH_BYTES, len(values) * _HASH_BYTES))
        hashes.flush()
        stored_keys.flush()
        self._blocks.append(_Block(self._stored, offset, len(block)))
        self._stored += new.height


def _close(files: tuple[IO[bytes], ...]) -> None:
    for handle in files:
        handle.close()


def _read_into(handle: IO[bytes], view: memoryview) -> None:
    filled = 0
    while filled < len(view):
        n = handle.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            raise OSError("the seen-keys file is shorter than what was written to it")
        filled += n
