"""The send ledger: what earlier runs under a run key sent, and one process per run key."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from volley.errors import InputError
from volley.group_commit import GroupCommit
from volley.ledger import (
    UNANSWERED,
    Ledger,
    PostgresLedger,
    RunKeyBusyError,
    SendRow,
    SqliteLedger,
    keys_json,
    open_ledger,
)
from volley.outcomes import RunIdentity

LedgerFactory = Callable[[], Ledger]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LedgerFactory]:
    opened: list[Ledger] = []

    def make() -> Ledger:
        if request.param == "sqlite":
            ledger: Ledger = SqliteLedger(tmp_path / "ledger.sqlite")
        else:
            ledger = PostgresLedger(request.getfixturevalue("postgres_uri"))
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        await ledger.close()


def identity(run_id: str, campaign: str) -> RunIdentity:
    return RunIdentity(run_id, "2026-11-23", campaign, "responsys")


def statuses(history: pl.DataFrame) -> dict[str, str]:
    return dict(history.select("recipient_key", "status").iter_rows())


async def test_an_outcome_leaves_out_the_keys_of_its_intent_and_the_history_reads_them_back(
    make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    campaign = f"c-{uuid.uuid4().hex[:8]}"
    ledger = make_ledger()
    first, second = identity("r1", campaign), identity("r2", campaign)
    await ledger.claim(first)
    await ledger.intend(first, "b1", keys_json(["a", "b"]))
    await ledger.settle(first, "b1", keys_json(["a", "b"]), ["accepted", "rejected"])
    await ledger.intend(first, "b2", keys_json(["c", "d"]))
    await ledger.settle(first, "b2.1", keys_json(["c"]), ["accepted"])  # a split half: no intent of its own
    await ledger.settle(first, "b2.2", keys_json(["d"]), ["failed"])
    await ledger.finish(first, complete=True)
    await ledger.claim(second)
    await ledger.intend(second, "b1", keys_json(["b"]))  # the same batch id in another run
    await ledger.settle(second, "b1", keys_json(["b"]), ["in_doubt"])
    await ledger.settle(second, "look-up", keys_json(["d"]), ["accepted"])  # settled with no intent
    await ledger.finish(second, complete=True)

    reader = make_ledger()  # another process's view: only what was stored
    history = await reader.history(campaign, "2026-11-23")
    assert statuses(history) == {"a": "accepted", "b": "in_doubt", "c": "accepted", "d": "accepted"}
    if isinstance(ledger, SqliteLedger):
        with sqlite3.connect(ledger.path) as db:
            stored = db.execute(
                "SELECT run_id, batch_id, recipient_keys FROM volley_sends WHERE campaign = ? AND kind = 'outcome'",
                (campaign,),
            ).fetchall()
        assert sorted(stored) == [
            ("r1", "b1", ""),
            ("r1", "b2.1", '["c"]'),
            ("r1", "b2.2", '["d"]'),
            ("r2", "b1", ""),
            ("r2", "look-up", '["d"]'),
        ]


async def test_an_outcome_keeps_its_keys_when_its_intent_did_not_reach_the_ledger(tmp_path: Path) -> None:
    class FailingOnce(SqliteLedger):
        failed = False

        async def _write_sends(self, rows: list[SendRow]) -> None:
            if not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("disk I/O error")
            await super()._write_sends(rows)

    ledger = FailingOnce(tmp_path / "ledger.sqlite")
    run = identity("r1", "c")
    await ledger.claim(run)
    with pytest.raises(sqlite3.OperationalError):
        await ledger.intend(run, "b1", keys_json(["a", "b"]))
    await ledger.settle(run, "b1", keys_json(["a", "b"]), ["failed", "failed"])  # not sent: the run stopped
    await ledger.finish(run, complete=False)
    await ledger.close()
    reader = SqliteLedger(tmp_path / "ledger.sqlite")
    assert statuses(await reader.history("c", "2026-11-23")) == {"a": "failed", "b": "failed"}
    await reader.close()


async def test_the_log_is_checkpointed_off_the_loop_as_it_grows(tmp_path: Path) -> None:
    def checkpointed_sends(path: Path) -> int:
        # `immutable` reads the database file alone, not the write-ahead log: only checkpointed pages.
        db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return int(db.execute("SELECT count(*) FROM volley_sends").fetchone()[0]) if "volley_sends" in tables else 0
        finally:
            db.close()

    path = tmp_path / "ledger.sqlite"
    ledger = SqliteLedger(path, checkpoint_bytes=10_000)
    run = identity("r1", "c")
    await ledger.claim(run)
    keys = keys_json([f"customer-{n:06d}" for n in range(200)])  # about 4 kB a record
    await ledger.intend(run, "b1", keys)
    await ledger._checkpointed()
    assert checkpointed_sends(path) == 0  # SQLite's own checkpoint, inside a commit, is off
    for n in range(2, 4):  # the third record takes the log past checkpoint_bytes
        await ledger.intend(run, f"b{n}", keys)
    await ledger._checkpointed()
    assert checkpointed_sends(path) == 3
    await ledger.finish(run, complete=True)
    await ledger.close()
    assert not path.with_name("ledger.sqlite-wal").exists()  # the last connection took the rest


async def test_history_gives_the_latest_status_per_recipient(make_ledger: LedgerFactory) -> None:
    campaign = f"c-{uuid.uuid4().hex[:8]}"
    ledger = make_ledger()
    first = identity("r1", campaign)
    await ledger.claim(first)
    await ledger.intend(first, "b1", keys_json(["a", "b", "c"]))
    await ledger.settle(first, "b1", keys_json(["a", "b", "c"]), ["accepted", "rejected", "in_doubt"])
    await ledger.intend(first, "b2", keys_json(["d", "e"]))  # the run dies here: b2 never answered
    await ledger.intend(first, "b3", keys_json(["f", "g"]))
    await ledger.settle(first, "b3.1", keys_json(["f"]), ["failed"])  # half of a split batch answered
    assert not await ledger.completed(campaign, "2026-11-23")
    await ledger.finish(first, complete=False)

    second = identity("r2", campaign)
    await ledger.claim(second)
    await ledger.intend(second, "b9", keys_json(["b", "d"]))
    await ledger.settle(second, "b9", keys_json(["b", "d"]), ["accepted", "accepted"])
    await ledger.finish(second, complete=True)

    history = await ledger.history(campaign, "2026-11-23")
    assert statuses(history) == {
        "a": "accepted",
        "b": "accepted",
        "c": "in_doubt",
        "d": "accepted",
        "e": "unanswered",
        "f": "failed",
        "g": "unanswered",
    }
    assert dict(history.select("recipient_key", "run_id").iter_rows())["e"] == "r1"
    starts = await ledger.run_starts(campaign, "2026-11-23")
    assert set(starts) == {"r1", "r2"}
    assert starts["r1"] <= starts["r2"]
    assert all(moment.tzinfo is not None for moment in starts.values())
    assert await ledger.run_starts(campaign, "another-key") == {}
    assert await ledger.completed(campaign, "2026-11-23")
    assert (await ledger.history(campaign, "another-key")).height == 0


async def test_one_process_holds_a_run_key_at_a_time(make_ledger: LedgerFactory) -> None:
    campaign = f"c-{uuid.uuid4().hex[:8]}"
    holder, other = make_ledger(), make_ledger()
    await holder.claim(identity("r1", campaign))
    with pytest.raises(RunKeyBusyError, match="is held by"):
        await other.claim(identity("r2", campaign))
    await other.claim(RunIdentity("r3", "another-day", campaign, "responsys"))
    await holder.finish(identity("r1", campaign), complete=True)
    await other.claim(identity("r2", campaign))


def test_ledger_urls(tmp_path: Path) -> None:
    assert isinstance(open_ledger(None, tmp_path / "l.sqlite"), SqliteLedger)
    assert isinstance(open_ledger(f"sqlite:///{tmp_path}/x.sqlite", tmp_path / "l.sqlite"), SqliteLedger)
    assert isinstance(open_ledger("postgresql://u@h/db", tmp_path / "l.sqlite", "pw"), PostgresLedger)
    with pytest.raises(InputError, match=r"ledger URL mysql://u:\*\*\*@h/db"):
        open_ledger("mysql://u:secret@h/db", tmp_path / "l.sqlite")


@pytest.mark.postgres
async def test_an_unreachable_postgres_ledger_is_a_one_line_error_without_the_password() -> None:
    ledger = PostgresLedger("postgresql://volley@127.0.0.1:1/test", password="pw-very-secret")
    with pytest.raises(InputError) as caught:
        await ledger.claim(identity("r1", "c"))
    message = str(caught.value)
    assert message.startswith("ledger postgresql://volley@127.0.0.1:1/test: ")
    assert "pw-very-secret" not in message
    assert "\n" not in message


async def test_concurrent_records_share_a_transaction_and_each_waits_for_its_own(
    make_ledger: LedgerFactory,
) -> None:
    ledger = make_ledger()
    run = identity("r-group", f"group-{uuid.uuid4().hex[:8]}")
    await ledger.claim(run)
    writes: list[int] = []
    write_sends = ledger._write_sends

    async def counted(rows: list[Any]) -> None:
        writes.append(len(rows))
        await write_sends(rows)

    ledger._sends = GroupCommit(counted)
    await asyncio.gather(*(ledger.intend(run, f"b{i}", keys_json([f"k{i}"])) for i in range(40)))
    assert sum(writes) == 40
    assert len(writes) < 40  # records that arrived while one write was out went together
    history = await ledger.history(run.campaign, run.run_key)
    assert statuses(history) == {f"k{i}": UNANSWERED for i in range(40)}


async def test_a_failed_write_fails_every_record_of_its_group_and_not_the_next() -> None:
    calls: list[list[str]] = []

    async def write(rows: list[str]) -> None:
        calls.append(rows)
        await asyncio.sleep(0)
        if "bad" in rows:
            raise OSError("disk full")

    group: GroupCommit[str] = GroupCommit(write)
    first = await asyncio.gather(group.submit("bad"), group.submit("also-in-group"), return_exceptions=True)
    assert [type(r) for r in first] == [OSError, OSError]
    await group.submit("later")
    await group.flush()
    assert calls == [["bad", "also-in-group"], ["later"]]


async def test_a_small_group_lingers_for_records_that_come_a_little_later() -> None:
    writes: list[list[str]] = []

    async def write(rows: list[str]) -> None:
        writes.append(rows)

    async def later(record: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await group.submit(record)

    group: GroupCommit[str] = GroupCommit(write, linger_seconds=0.5, group_rows=3)
    await asyncio.gather(group.submit("first"), later("second", 0.01), later("third", 0.02))
    assert writes == [["first", "second", "third"]]

    writes.clear()
    full: GroupCommit[str] = GroupCommit(write, linger_seconds=3600, group_rows=3)
    await asyncio.wait_for(asyncio.gather(*(full.submit(f"r{n}") for n in range(3))), timeout=10)  # no lingering
    assert writes == [["r0", "r1", "r2"]]
