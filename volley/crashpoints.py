"""Deliberate crashes for recovery tests: `VOLLEY_CRASH_AT=planning|dispatch:N|finalize`.

The process kills itself with SIGKILL (no cleanup, no flush) when it reaches the named
point: after the first slice is planned, when the Nth batch is about to be sent, or while
the outcome record is being compacted. Unset, this costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point"]

_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    target = os.environ.get("VOLLEY_CRASH_AT")
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
