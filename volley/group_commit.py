"""Group commit: records that arrive while a write is under way go out together in the next one.

Every batch costs the ledger two durable records (its intent, its outcome). With a pool of
workers, many arrive at once; one transaction for all of them instead of one each keeps the
event loop free for sending. Each caller still returns only once its own record is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

R = TypeVar("R")


class GroupCommit(Generic[R]):
    """`await group.submit(record)` returns when `write_many` has committed a group holding it."""

    def __init__(
        self, write_many: Callable[[list[R]], Awaitable[None]], linger_seconds: float = 0.0, group_rows: int = 1
    ) -> None:
        """A group smaller than `group_rows` waits `linger_seconds` for more records before it is written."""
        self._write_many = write_many
        self.linger_seconds = linger_seconds
        self.group_rows = group_rows
        self._pending: list[tuple[R, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, record: R) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="volley-group-commit")
        await done

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let the other workers' records of this loop turn join the group
        if self.linger_seconds and len(self._pending) < self.group_rows:
            await asyncio.sleep(self.linger_seconds)
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await self._write_many([record for record, _ in group])
            except Exception as exc:  # every caller of the group learns its record is not on file
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)

    async def flush(self) -> None:
        """Wait for every record submitted so far to be written (or to have failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
