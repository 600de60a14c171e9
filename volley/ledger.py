"""The send ledger: intent before a batch goes out, outcome when its answer comes.

It is what makes re-runs and crash recovery safe. For one campaign and run key it tells
which recipients were accepted, refused, given up on, or sent with no answer recorded
(in flight when the run died: `in_doubt`). One process at a time holds a run key.

The embedded default is SQLite in WAL mode beside the outcomes (a SIGKILL loses nothing
committed: WAL frames are written before `commit` returns). PostgreSQL by URL serves runs
shared between machines; there the run-key claim is a session advisory lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from volley.errors import InputError
from volley.group_commit import GroupCommit
from volley.outcomes import RunIdentity, Status
from volley.secrets import redact

__all__ = ["Ledger", "PostgresLedger", "RunKeyBusyError", "SqliteLedger", "keys_json", "open_ledger"]

log = logging.getLogger("volley.ledger")

# Records arrive one or two a loop turn (pyreqwest hands answers back one by one), so a group
# waits 2 ms for others unless it has 16. Measured on a 1M-recipient run (10,000 records):
# 5,250 transactions took 0.41 s of the loop's CPU and held it 0.67-0.76 s (the GIL is given
# up inside SQLite and taken back behind the planner); 1,480 took 0.20-0.26 s and held it
# 0.29-0.33 s. 8 ms kept records from the vendor too long: the workers wait for their intent.
_LINGER_SECONDS = 0.002
_GROUP_ROWS = 16

SAME_AS_INTENT = ""  # an outcome's recipient_keys: those of its run's intent with the same batch id
UNANSWERED = "unanswered"  # intent recorded, no outcome: the run stopped while the batch was out
_LETTER = {Status.ACCEPTED: "A", Status.REJECTED: "R", Status.FAILED: "F", Status.IN_DOUBT: "D"}
_STATUS = {letter: status.value for status, letter in _LETTER.items()}
HISTORY_SCHEMA = {"recipient_key": pl.String, "status": pl.String, "run_id": pl.String}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volley_runs (
    campaign TEXT NOT NULL,
    run_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign, run_key, run_id)
);
CREATE TABLE IF NOT EXISTS volley_sends (
    seq {serial},
    campaign TEXT NOT NULL,
    run_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient_keys TEXT NOT NULL,
    statuses TEXT,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS volley_sends_by_run_key ON volley_sends (campaign, run_key, seq);
"""


class RunKeyBusyError(InputError):
    """Another process is running this campaign under this run key."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _started(rows: Sequence[tuple[Any, ...]]) -> dict[str, datetime]:
    return {str(run_id): datetime.fromisoformat(str(started)) for run_id, started in rows}


_INSERT_SEND = (
    "INSERT INTO volley_sends (campaign, run_key, run_id, batch_id, kind, recipient_keys, statuses, recorded_at)"
    " VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0}, {0})"
)
SendRow = tuple[str, str, str, str, str, str, str | None, str]


def _send_row(run: RunIdentity, batch_id: str, kind: str, keys_json: str, letters: str | None) -> SendRow:
    return (run.campaign, run.run_key, run.run_id, batch_id, kind, keys_json, letters, _now())


def keys_json(keys: Sequence[str]) -> str:
    """Recipient keys as the ledger records them: a JSON array (`Batch.keys_json` for a batch)."""
    return orjson.dumps(list(keys)).decode()


class Ledger(ABC):
    """What every ledger backend offers; all methods are coroutines for the flow's loop.

    Intents and outcomes are group-committed: each call returns once its own record is
    durable, and the records of concurrent calls share one transaction.
    """

    def __init__(self) -> None:
        self._sends: GroupCommit[SendRow] = GroupCommit(self._write_sends, _LINGER_SECONDS, _GROUP_ROWS)
        self._intended: dict[tuple[str, str], str] = {}  # (run id, batch id) -> keys, until settled

    @abstractmethod
    async def claim(self, run: RunIdentity) -> None:
        """Hold the run key for this process (refuse if another holds it) and record the run."""

    @abstractmethod
    async def history(self, campaign: str, run_key: str) -> pl.DataFrame:
        """Latest status per recipient key sent under the run key (HISTORY_SCHEMA)."""

    @abstractmethod
    async def run_starts(self, campaign: str, run_key: str) -> dict[str, datetime]:
        """When each run under the run key started (run id -> UTC time)."""

    async def intend(self, run: RunIdentity, batch_id: str, keys: str) -> None:
        """Durably record that a batch is about to be sent (`keys`: its recipient keys, `keys_json`)."""
        await self._sends.submit(_send_row(run, batch_id, "intent", keys, None))
        self._intended[(run.run_id, batch_id)] = keys  # on record: its outcome may leave the keys out

    async def settle(self, run: RunIdentity, batch_id: str, keys: str, statuses: Sequence[str]) -> None:
        """Durably record the per-recipient outcome of a batch (or of part of one), `keys` as for `intend`.

        The outcome of a whole batch whose intent this ledger recorded leaves its keys out (stored as
        "", read back from the intent): half the bytes a batch costs the ledger.
        """
        if self._intended.pop((run.run_id, batch_id), None) == keys:
            keys = SAME_AS_INTENT
        await self._sends.submit(_send_row(run, batch_id, "outcome", keys, _letters(statuses)))

    @abstractmethod
    async def _write_sends(self, rows: list[SendRow]) -> None:
        """Insert the rows into volley_sends in one transaction."""

    @abstractmethod
    async def finish(self, run: RunIdentity, complete: bool) -> None:
        """Record the end of the run and release the run key."""

    @abstractmethod
    async def completed(self, campaign: str, run_key: str) -> bool:
        """Whether some run of the campaign finished under this run key."""

    @abstractmethod
    async def close(self) -> None: ...


_LETTER_OF = {status.value: letter for status, letter in _LETTER.items()}


def _letters(statuses: Sequence[str]) -> str:
    if statuses and statuses.count(statuses[0]) == len(statuses):  # the usual batch: 6 -> 0.2 us on the loop
        return _LETTER_OF[statuses[0]] * len(statuses)
    return "".join(map(_LETTER_OF.__getitem__, statuses))


def history_frame(rows: Sequence[tuple[Any, ...]]) -> pl.DataFrame:
    """(seq, run_id, batch_id, kind, recipient_keys JSON, statuses) rows to the latest status per key."""
    if not rows:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    sends = pl.DataFrame(
        rows,
        schema={
            "seq": pl.Int64,
            "run_id": pl.String,
            "batch_id": pl.String,
            "kind": pl.String,
            "keys": pl.String,
            "statuses": pl.String,
        },
        orient="row",
    )
    intents = sends.filter(pl.col("kind") == "intent")
    outcomes = sends.filter(pl.col("kind") == "outcome")
    if (outcomes["keys"] == SAME_AS_INTENT).any():
        intent_keys = intents.select("run_id", "batch_id", pl.col("keys").alias("intent_keys")).unique(
            ["run_id", "batch_id"], keep="last"
        )
        outcomes = (
            outcomes.join(intent_keys, on=["run_id", "batch_id"], how="left")
            .with_columns(
                pl.when(pl.col("keys") == SAME_AS_INTENT)
                .then(pl.col("intent_keys"))
                .otherwise(pl.col("keys"))
                .alias("keys")
            )
            .drop("intent_keys")
            .filter(pl.col("keys").is_not_null())  # no intent to read them from: nothing to say of them
        )
    decode = pl.col("keys").str.json_decode(pl.List(pl.String))
    intents, outcomes = intents.with_columns(decode), outcomes.with_columns(decode)
    settled = (
        outcomes.with_columns(pl.col("statuses").str.split(""))
        .explode("keys", "statuses")
        .select("seq", "run_id", pl.col("keys").alias("recipient_key"), pl.col("statuses").replace_strict(_STATUS))
    )
    unanswered = (
        intents.explode("keys")
        .select("seq", "run_id", pl.col("keys").alias("recipient_key"))
        .join(settled.select("run_id", "recipient_key"), on=["run_id", "recipient_key"], how="anti")
        .with_columns(pl.lit(UNANSWERED).alias("statuses"))
    )
    return (
        pl.concat([settled, unanswered.select(settled.columns)], how="vertical")
        .sort("seq")
        .group_by("recipient_key", maintain_order=True)
        .last()
        .select("recipient_key", pl.col("statuses").alias("status"), "run_id")
    )


class SqliteLedger(Ledger):
    """The embedded ledger: one SQLite file, a lock file per run key.

    Committed pages go to the write-ahead log; a checkpoint copies them into the database file.
    SQLite would run it inside the commit that takes the log past 1,000 pages, on the event loop
    (measured apart: a 1M-row run's 10,000 records, in groups of 8, cost the loop 0.21-0.28 s of
    CPU with it, 0.11-0.19 s without). Here a worker thread runs it, from a connection of its own,
    after every `checkpoint_bytes` of records: a passive checkpoint, which never holds up a commit.
    """

    def __init__(self, path: Path, checkpoint_bytes: int = 4 << 20) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
        self._locks: dict[tuple[str, str], IO[str]] = {}
        self.checkpoint_bytes = checkpoint_bytes
        self._unchecked_bytes = 0
        self._checkpoint: asyncio.Task[None] | None = None

    def _lock_path(self, campaign: str, run_key: str) -> Path:
        return self.path.parent / "locks" / f"{campaign}--{run_key}.lock"

    async def claim(self, run: RunIdentity) -> None:
        lock_path = self._lock_path(run.campaign, run.run_key)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunKeyBusyError(
                f"run key {run.run_key} of {run.campaign} is held by {holder}; wait for it or use another run key"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} (run {run.run_id})\n")
        handle.flush()
        self._locks[(run.campaign, run.run_key)] = handle
        self._db.execute(
            "INSERT INTO volley_runs (campaign, run_key, run_id, started_at) VALUES (?, ?, ?, ?)",
            (run.campaign, run.run_key, run.run_id, _now()),
        )

    async def history(self, campaign: str, run_key: str) -> pl.DataFrame:
        rows = self._db.execute(
            "SELECT seq, run_id, batch_id, kind, recipient_keys, statuses FROM volley_sends"
            " WHERE campaign = ? AND run_key = ? ORDER BY seq",
            (campaign, run_key),
        ).fetchall()
        return history_frame(rows)

    async def run_starts(self, campaign: str, run_key: str) -> dict[str, datetime]:
        rows = self._db.execute(
            "SELECT run_id, started_at FROM volley_runs WHERE campaign = ? AND run_key = ?", (campaign, run_key)
        ).fetchall()
        return _started(rows)

    async def _write_sends(self, rows: list[SendRow]) -> None:
        # On the loop, not in a thread: handing each group to a thread made the loop wait for the
        # GIL behind the planning thread (measured: a 300k run took 12 s instead of 7).
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(_INSERT_SEND.format("?"), rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._unchecked_bytes += sum(len(row[5]) + len(row[3]) + 64 for row in rows)
        if self._unchecked_bytes >= self.checkpoint_bytes and (self._checkpoint is None or self._checkpoint.done()):
            self._unchecked_bytes = 0
            self._checkpoint = asyncio.create_task(asyncio.to_thread(self._checkpoint_log), name="volley-checkpoint")

    def _checkpoint_log(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                db.close()
        except sqlite3.Error:  # the log only grows until the next one: nothing recorded is at stake
            log.warning("ledger checkpoint failed; the next one will take it up", exc_info=True)

    async def _checkpointed(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint

    async def finish(self, run: RunIdentity, complete: bool) -> None:
        await self._sends.flush()
        self._db.execute(
            "UPDATE volley_runs SET finished_at = ?, complete = ? WHERE campaign = ? AND run_key = ? AND run_id = ?",
            (_now(), int(complete), run.campaign, run.run_key, run.run_id),
        )
        handle = self._locks.pop((run.campaign, run.run_key), None)
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    async def completed(self, campaign: str, run_key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM volley_runs WHERE campaign = ? AND run_key = ? AND complete = 1 LIMIT 1",
            (campaign, run_key),
        ).fetchone()
        return row is not None

    async def close(self) -> None:
        await self._sends.flush()
        await self._checkpointed()  # closing the last connection checkpoints what is left
        for handle in self._locks.values():
            handle.close()
        self._locks.clear()
        self._db.close()


class PostgresLedger(Ledger):
    """A ledger shared between machines; the run-key claim is a session advisory lock."""

    def __init__(self, url: str, password: str | None = None) -> None:
        super().__init__()
        self.url = url
        self._password = password
        self._db: Any = None

    async def _connection(self) -> Any:
        if self._db is None:
            import psycopg

            try:
                conninfo = psycopg.conninfo.make_conninfo(self.url, password=self._password)
                self._db = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(f"ledger {_safe_url(self.url)}: {redact(first)}") from None
            async with self._db.cursor() as cursor:
                await cursor.execute("SELECT pg_advisory_lock(hashtext('volley-ledger-schema'))")
                for statement in _SCHEMA.format(serial="BIGSERIAL PRIMARY KEY").split(";"):
                    if statement.strip():
                        await cursor.execute(statement)
                await cursor.execute("SELECT pg_advisory_unlock(hashtext('volley-ledger-schema'))")
        return self._db

    @staticmethod
    def _lock_id(campaign: str, run_key: str) -> int:
        digest = hashlib.blake2b(f"{campaign}\x1f{run_key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def claim(self, run: RunIdentity) -> None:
        db = await self._connection()
        async with db.cursor() as cursor:
            await cursor.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_id(run.campaign, run.run_key),))
            (locked,) = await cursor.fetchone()
            if not locked:
                raise RunKeyBusyError(
                    f"run key {run.run_key} of {run.campaign} is held by another process on the shared ledger; "
                    "wait for it or use another run key"
                )
            await cursor.execute(
                "INSERT INTO volley_runs (campaign, run_key, run_id, started_at) VALUES (%s, %s, %s, %s)",
                (run.campaign, run.run_key, run.run_id, _now()),
            )

    async def history(self, campaign: str, run_key: str) -> pl.DataFrame:
        db = await self._connection()
        async with db.cursor() as cursor:
            await cursor.execute(
                "SELECT seq, run_id, batch_id, kind, recipient_keys, statuses FROM volley_sends"
                " WHERE campaign = %s AND run_key = %s ORDER BY seq",
                (campaign, run_key),
            )
            rows = await cursor.fetchall()
        return history_frame(rows)

    async def run_starts(self, campaign: str, run_key: str) -> dict[str, datetime]:
        db = await self._connection()
        async with db.cursor() as cursor:
            await cursor.execute(
                "SELECT run_id, started_at FROM volley_runs WHERE campaign = %s AND run_key = %s", (campaign, run_key)
            )
            rows = await cursor.fetchall()
        return _started(rows)

    async def _write_sends(self, rows: list[SendRow]) -> None:
        db = await self._connection()
        async with db.transaction(), db.cursor() as cursor:
            await cursor.executemany(_INSERT_SEND.format("%s"), rows)

    async def finish(self, run: RunIdentity, complete: bool) -> None:
        await self._sends.flush()
        db = await self._connection()
        async with db.cursor() as cursor:
            await cursor.execute(
                "UPDATE volley_runs SET finished_at = %s, complete = %s"
                " WHERE campaign = %s AND run_key = %s AND run_id = %s",
                (_now(), int(complete), run.campaign, run.run_key, run.run_id),
            )
            await cursor.execute("SELECT pg_advisory_unlock(%s)", (self._lock_id(run.campaign, run.run_key),))

    async def completed(self, campaign: str, run_key: str) -> bool:
        db = await self._connection()
        async with db.cursor() as cursor:
            await cursor.execute(
                "SELECT 1 FROM volley_runs WHERE campaign = %s AND run_key = %s AND complete = 1 LIMIT 1",
                (campaign, run_key),
            )
            return await cursor.fetchone() is not None

    async def close(self) -> None:
        await self._sends.flush()
        if self._db is not None:
            await self._db.close()
            self._db = None


def _safe_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_ledger(url: str | None, default_path: Path, password: str | None = None) -> Ledger:
    """`postgresql://...` for a shared ledger; otherwise SQLite at `default_path` (or a sqlite:/// URL)."""
    if url is None:
        return SqliteLedger(default_path)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(url, password)
    if url.startswith("sqlite:///"):
        return SqliteLedger(Path(url.removeprefix("sqlite:///")))
    raise InputError(f"ledger URL {_safe_url(url)}: expected postgresql://... or sqlite:///PATH")
