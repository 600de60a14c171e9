"""Run summaries: counts per status, what was sent, how long it took; `summary.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from volley.outcomes import Status

__all__ = ["RunSummary", "status_counts", "top_errors"]


@dataclass
class RunSummary:
    run_id: str
    run_key: str
    campaign: str
    vendor: str
    rows: int
    counts: dict[str, int]
    outcome_path: str
    elapsed_seconds: float
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    batches: int = 0
    aborted: str | None = None
    complete: bool = True
    flow_run_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recipients_per_second(self) -> float:
        sent = sum(self.counts.get(s.value, 0) for s in (Status.ACCEPTED, Status.REJECTED, Status.IN_DOUBT))
        return sent / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recipients_per_second"] = round(self.recipients_per_second, 1)
        return data

    def write(self, directory: Path) -> Path:
        path = directory / "summary.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def markdown(self) -> str:
        lines = [
            f"# Volley run `{self.campaign}` ({self.vendor})",
            "",
            f"- run key: `{self.run_key}`, run id: `{self.run_id}`",
            f"- rows: {self.rows:,}; requests: {self.requests:,}; retries: {self.retries:,}; "
            f"throttled: {self.throttled:,}",
            f"- elapsed: {self.elapsed_seconds:.1f} s ({self.recipients_per_second:,.0f} recipients/s)",
            f"- outcomes: `{self.outcome_path}`",
        ]
        if self.aborted:
            lines.append(f"- **stopped early**: {self.aborted}")
        lines += ["", "| status | rows |", "|---|---:|"]
        lines += [f"| {status} | {n:,} |" for status, n in sorted(self.counts.items())]
        if self.errors:
            lines += ["", "| status | error code | rows |", "|---|---|---:|"]
            lines += [f"| {e['status']} | {e['error_code']} | {e['rows']:,} |" for e in self.errors]
        return "\n".join(lines)


def status_counts(outcomes: pl.DataFrame | pl.LazyFrame) -> dict[str, int]:
    counts = {status.value: 0 for status in Status}
    for status, rows in outcomes.lazy().group_by("status").len().collect().iter_rows():
        counts[str(status)] = int(rows)
    return counts


def top_errors(outcomes: pl.DataFrame | pl.LazyFrame, limit: int = 10) -> list[dict[str, Any]]:
    return (
        outcomes.lazy()
        .filter(pl.col("error_code").is_not_null())
        .group_by("status", "error_code")
        .len("rows")
        .sort(["rows", "error_code"], descending=[True, False])
        .head(limit)
        .collect()
        .to_dicts()
    )
