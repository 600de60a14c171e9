"""The simulator's own record of what it did: NDJSON, one line per request.

Line format (keys always present)::

    {"ts": 1732370000.123, "vendor": "responsys", "request_id": "abc",
     "result": "accepted", "fault": null, "processed": true,
     "recipients": [{"key": "8", "status": "accepted"}]}

``result`` is accepted | rejected | error | throttled | withheld; ``fault`` is
null | "5xx" | "timeout" | "reset" | "throttle"; ``processed`` true means the
vendor applied the request, so its accepted recipients count as triggered
(true for withheld requests that were applied before the answer was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, TypeAlias

import orjson

if TYPE_CHECKING:  # polars is imported lazily: the server never needs it
    import polars as pl

Result: TypeAlias = Literal["accepted", "rejected", "error", "throttled", "withheld"]
RecipientStatus: TypeAlias = Literal["accepted", "rejected"]
RecipientEntry: TypeAlias = dict[str, str]
"""``{"key": str, "status": "accepted" | "rejected"}``"""


_FLUSH_BYTES = 4 * 1024 * 1024


class SimLog:
    """Buffered NDJSON writer shared by all vendors of one simulator.

    Lines are kept in memory and written by a background task at least every
    ``flush_interval`` seconds (and whenever more than 4 MB is pending), and on
    ``close``. The file is truncated when opened. With ``path`` None records
    are dropped (counters elsewhere still work).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        flush_interval: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self._clock = clock
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._file: IO[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self.lines_written = 0

    def open(self) -> None:
        if self.path is not None and self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")

    async def start(self) -> None:
        """Open the file and start the periodic flusher (call inside the loop)."""
        self.open()
        if self._file is not None and self._task is None:
            self._task = asyncio.create_task(self._flush_periodically(), name="sim-log-flush")

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            self.flush()

    def record(
        self,
        *,
        vendor: str,
        request_id: str,
        result: Result,
        fault: str | None = None,
        processed: bool = False,
        recipients: Sequence[RecipientEntry] = (),
    ) -> None:
        """Append one request line (cheap: serialises, never touches the disk)."""
        if self._file is None:
            return
        line = orjson.dumps(
            {
                "ts": self._clock(),
                "vendor": vendor,
                "request_id": request_id,
                "result": result,
                "fault": fault,
                "processed": processed,
                "recipients": recipients,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._file is None or not self._pending:
            return
        lines = self._pending
        self._pending = []
        self._pending_bytes = 0
        self._file.write(b"".join(lines))
        self._file.flush()
        self.lines_written += len(lines)

    async def close(self) -> None:
        """Stop the flusher, write everything pending and close the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------- readers


def log_schema() -> dict[str, pl.DataType]:
    """Column types of ``read_log``."""
    import polars as pl

    return {
        "ts": pl.Float64(),
        "vendor": pl.String(),
        "request_id": pl.String(),
        "result": pl.String(),
        "fault": pl.String(),
        "processed": pl.Boolean(),
        "recipients": pl.List(pl.Struct({"key": pl.String(), "status": pl.String()})),
    }


def read_log(path: str | Path) -> pl.DataFrame:
    """One row per request line (columns ts, vendor, request_id, result, fault,
    processed, recipients); an empty frame for a missing or empty file."""
    import polars as pl

    source = Path(path)
    if not source.exists() or source.stat().st_size == 0:
        return pl.DataFrame(schema=log_schema())
    return pl.read_ndjson(source, schema=log_schema())


def _as_frame(source: str | Path | pl.DataFrame) -> pl.DataFrame:
    return read_log(source) if isinstance(source, (str, Path)) else source


def _recipient_rows(frame: pl.DataFrame) -> pl.DataFrame:

    return (
        frame.select("vendor", "request_id", "result", "processed", "recipients")
        .explode("recipients", keep_nulls=False)
        .unnest("recipients")
    )


def accepted_recipients(source: str | Path | pl.DataFrame) -> pl.DataFrame:
    """Recipients the simulator actually triggered: columns vendor, key, request_id.

    One row per recipient with status accepted in a processed request,
    including requests whose answer was withheld after being applied. A
    recipient triggered twice (a resend after a lost answer) appears twice.
    """
    import polars as pl

    return (
        _recipient_rows(_as_frame(source))
        .filter(pl.col("processed") & (pl.col("status") == "accepted"))
        .select("vendor", "key", "request_id")
    )


def withheld_requests(source: str | Path | pl.DataFrame) -> pl.DataFrame:
    """Every recipient of every request answered by a timeout or reset fault.

    Columns vendor, request_id, key, processed (True when the request was
    applied before the answer was withheld).
    """
    import polars as pl

    return (
        _recipient_rows(_as_frame(source))
        .filter(pl.col("result") == "withheld")
        .select("vendor", "request_id", "key", "processed")
    )
