"""What earlier runs left under a run key: nothing, a run that stopped half way, or a completed run.

Read from the results tree: each run writes `<run key dir>/<run id>/summary.json`, with
`"complete": true` only once it finished and compacted its outcomes; a run that crashed
leaves part files and no summary, one that stopped early a summary with `"complete": false`.
This is the one place backfills ask; a send ledger may answer it later instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["RunKeyHistory", "RunKeyState", "run_key_history"]

RunKeyState = Literal["new", "partial", "complete"]


@dataclass(frozen=True)
class RunKeyHistory:
    state: RunKeyState
    runs: int  # run directories found under the run key
    completed: dict[str, Any] | None = None  # summary.json of the (latest) completed run


def run_key_history(run_key_dir: Path) -> RunKeyHistory:
    """`complete` when any run under the key completed; `partial` when runs exist but none did."""
    if not run_key_dir.is_dir():
        return RunKeyHistory("new", 0)
    runs = sorted(p for p in run_key_dir.iterdir() if p.is_dir())
    completed: dict[str, Any] | None = None
    for run_dir in runs:  # run ids start with their UTC start time: the last one wins
        summary = _read_summary(run_dir / "summary.json")
        if summary is not None and summary.get("complete") is True:
            completed = summary
    if completed is not None:
        return RunKeyHistory("complete", len(runs), completed)
    return RunKeyHistory("partial" if runs else "new", len(runs))


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
