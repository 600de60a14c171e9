"""The dlt peer: a `@dlt.destination(batch_size=200)` that posts each batch to Responsys.

This is how one would push an audience with dlt: a resource reading the Parquet
(Arrow record batches), the default pipeline (extract, normalize, load) and a custom
destination that receives 200 rows at a time and posts them, one request per call,
after one login. Timed: `pipeline.run(...)`, end to end.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.audience import AUDIENCE_COLUMNS
from bench.rei import body_for, login, trigger_headers, trigger_url

__all__ = ["DltResult", "measure_dlt"]

BATCH_ROWS = 200


@dataclass
class DltResult:
    recipients: int
    requests: int
    seconds: float
    failed_requests: int
    loader_file_format: str

    @property
    def recipients_per_second(self) -> float:
        return self.recipients / self.seconds if self.seconds > 0 else 0.0


class _Poster:
    """One sync client, one login, shared by dlt's loader threads."""

    def __init__(self, responsys_url: str, user: str, password: str) -> None:
        self.client = httpx.Client(timeout=30.0)
        self.url = trigger_url(responsys_url)
        self._login = (responsys_url, user, password)
        self._headers: dict[str, str] | None = None
        self._lock = threading.Lock()
        self.requests = 0
        self.recipients = 0
        self.failed = 0

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._headers is None:
                self._headers = trigger_headers(login(self.client, *self._login))
            return self._headers

    def post(self, rows: list[dict[str, Any]]) -> None:
        response = self.client.post(self.url, content=body_for(rows), headers=self.headers())
        with self._lock:
            self.requests += 1
            self.recipients += len(rows)
            if response.status_code != 200:
                self.failed += 1


def measure_dlt(audience: Path, responsys_url: str, user: str, password: str, work_dir: Path) -> DltResult:
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = str(work_dir / "dlt-data")
    import dlt
    import pyarrow.parquet as pq

    poster = _Poster(responsys_url, user, password)

    @dlt.resource(name="audience", write_disposition="append")
    def audience_rows() -> Iterator[Any]:
        with pq.ParquetFile(audience) as reader:
            yield from reader.iter_batches(batch_size=50_000, columns=list(AUDIENCE_COLUMNS))

    @dlt.destination(batch_size=BATCH_ROWS, loader_file_format="parquet", name="responsys_rei")
    def responsys_rei(items: Any, table: Any) -> None:
        poster.post(items.to_pylist())

    pipeline = dlt.pipeline(
        pipeline_name="volley_bench_dlt",
        destination=responsys_rei,
        pipelines_dir=str(work_dir / "dlt-pipelines"),
    )
    try:
        start = time.perf_counter()
        pipeline.run(audience_rows())
        seconds = time.perf_counter() - start
    finally:
        poster.client.close()
    return DltResult(poster.recipients, poster.requests, seconds, poster.failed, "parquet")
