"""Batches and shards: the units the dispatcher sends and Prefect schedules."""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass

__all__ = ["Batch", "Shard", "batch_id_for"]


@dataclass(slots=True)
class Batch:
    """Up to one request's worth of recipients, with their payload fragments already encoded."""

    batch_id: str
    row_index: list[int]
    recipient_keys: list[str]
    payload: list[str]

    def __len__(self) -> int:
        return len(self.row_index)

    def halves(self) -> tuple[Batch, Batch]:
        """Two batches of (nearly) half the rows each, for a request the vendor found too large."""
        middle = len(self.row_index) // 2
        return (
            Batch(f"{self.batch_id}.1", self.row_index[:middle], self.recipient_keys[:middle], self.payload[:middle]),
            Batch(f"{self.batch_id}.2", self.row_index[middle:], self.recipient_keys[middle:], self.payload[middle:]),
        )


@dataclass(slots=True)
class Shard:
    """A run of consecutive batches: one Prefect task, one stretch of the dispatcher's queue."""

    shard_id: str
    batches: list[Batch]

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.batches)


def batch_id_for(run_key: str, row_index: list[int]) -> str:
    """Deterministic: the same run key and the same rows give the same id, on any machine."""
    digest = hashlib.blake2b(digest_size=6)
    digest.update(run_key.encode())
    digest.update(array("q", row_index).tobytes())
    return f"{row_index[0]:010d}-{digest.hexdigest()}"
