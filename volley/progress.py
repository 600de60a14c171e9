"""Progress events for whoever shows them (the CLI's progress bar); no-ops otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

__all__ = ["ProgressListener", "emit", "listen"]

Kind = Literal["planned", "settled", "sent"]
ProgressListener = Callable[[Kind, int], None]

_listeners: list[ProgressListener] = []


def listen(listener: ProgressListener) -> Callable[[], None]:
    """Register a listener; returns the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(kind: Kind, rows: int) -> None:
    """`planned`: rows added to the total; `settled`: rows decided without sending; `sent`: rows with an outcome."""
    for listener in list(_listeners):
        listener(kind, rows)
