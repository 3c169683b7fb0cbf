"""The SQLite journal's append-only layout: no secondary indexes on the hot tables,
dedup and pending lookups kept in memory (rebuilt on open, undone when a batch
rolls back), the earlier layout migrated on open, and stored output that is
read and pushed only once its fsync has returned."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callboard.engine import journal_writer
from callboard.engine.clock import ManualClock
from callboard.engine.events import encode_event
from callboard.engine.journal import Journal
from callboard.engine.journal_writer import APPEND, DONE, Op, Writer
from tests.journal.test_journal import message

pytestmark = pytest.mark.timeout(60)

#: the layout before the append-only one (events with done columns and indexes, dedup by key)
OLD_LAYOUT = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, bot TEXT NOT NULL, session TEXT NOT NULL, type TEXT NOT NULL,
    payload BLOB NOT NULL, received_at REAL NOT NULL, done_at REAL, status TEXT
);
CREATE INDEX events_pending ON events(bot, seq) WHERE done_at IS NULL;
CREATE INDEX events_done ON events(done_at) WHERE done_at IS NOT NULL;
CREATE TABLE dedup (
    bot TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (bot, key)
) WITHOUT ROWID;
CREATE INDEX dedup_at ON dedup(at);
CREATE TABLE outbox (
    bot TEXT NOT NULL, chat TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL, at REAL NOT NULL,
    ikey TEXT, PRIMARY KEY (bot, chat, seq)
) WITHOUT ROWID;
CREATE INDEX outbox_at ON outbox(at);
CREATE UNIQUE INDEX outbox_by_key ON outbox(bot, ikey);
CREATE TABLE receipts (
    key TEXT PRIMARY KEY, bot TEXT NOT NULL, run_id INTEGER NOT NULL, chat TEXT NOT NULL, message_id TEXT,
    status TEXT NOT NULL, error TEXT, at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX receipts_at ON receipts(at);
"""


async def test_hot_tables_have_no_secondary_indexes(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.sqlite3"))
    await journal.open()
    try:
        rows = await journal.query(
            "SELECT name FROM sqlite_master WHERE type='index' "
            "AND tbl_name IN ('event_log', 'done_marks', 'dedup', 'receipts')"
        )
        assert rows == []
    finally:
        await journal.close()


async def test_dedup_and_pending_are_rebuilt_on_open_within_the_window(tmp_path: Path) -> None:
    clock = ManualClock()
    path = str(tmp_path / "j.sqlite3")
    journal = Journal(path, clock=clock, dedup_window_seconds=100.0, retention_seconds=1000.0)
    await journal.open()
    seqs = [await journal.append(message(i), message(i).session_key()) for i in range(4)]
    await journal.mark_done_now([s for s in seqs[:2] if s is not None])
    await journal.close()

    journal = Journal(path, clock=clock, dedup_window_seconds=100.0, retention_seconds=1000.0)
    await journal.open()
    try:
        assert await journal.append(message(0), message(0).session_key()) is None  # key known again
        assert [p.seq for p in await journal.pending("b")] == seqs[2:]
        assert await journal.event_status(seqs[0] or 0) == "done"
        assert await journal.query("SELECT COUNT(*) FROM events WHERE done_at IS NULL") == [(2,)]
    finally:
        await journal.close()

    await clock.advance(101.0)  # past the window: a reopened journal no longer knows the keys
    journal = Journal(path, clock=clock, dedup_window_seconds=100.0, retention_seconds=1000.0)
    await journal.open()
    try:
        assert await journal.append(message(1), message(1).session_key()) is not None
    finally:
        await journal.close()


async def test_outbox_keys_are_kept_while_an_older_event_is_pending(tmp_path: Path) -> None:
    clock = ManualClock()
    path = str(tmp_path / "j.sqlite3")
    journal = Journal(path, clock=clock, dedup_window_seconds=10.0)
    await journal.open()
    pending = await journal.append(message(1), message(1).session_key())
    await clock.advance(100.0)
    await journal.append_outbox("b", "c", {"text": "x"}, "run-1")
    await journal.close()

    journal = Journal(path, clock=clock, dedup_window_seconds=10.0)
    await journal.open()
    try:  # a replay of the pending event's run finds its earlier send, after a restart too
        assert (await journal.append_outbox("b", "c", {"text": "x"}, "run-1"))[2] is False
        await journal.mark_done_now([pending or 0])
        await clock.advance(100.0)
        await journal.prune()  # nothing pending any more: keys past the margin are forgotten
        assert ("b", "run-1") not in journal._writer.outbox_keys
    finally:
        await journal.close()


async def test_receipts_are_found_from_memory_one_row_per_key(tmp_path: Path) -> None:
    clock = ManualClock()
    path = str(tmp_path / "j.sqlite3")

    def make() -> Journal:
        return Journal(path, clock=clock, dedup_window_seconds=10.0, retention_seconds=1000.0)

    journal = make()
    await journal.open()
    journal.store_receipt("b:5:0:1", "b", 5, "private:c", "m1")
    journal.store_receipt("b:6:0:1", "b", 6, "private:c", None, status="failed", error="timeout")
    journal.store_receipt("failed:b:6:0", "b", 6, "private:c", None, status="failed", error="x")
    await journal.flush()
    journal.store_receipt("b:6:0:1", "b", 6, "private:c", "m2")  # a retry sent it after all
    await journal.flush()
    assert await journal.query("SELECT key, status FROM receipts ORDER BY id") == [
        ("b:5:0:1", "sent"),
        ("b:6:0:1", "sent"),  # updated in its row, not a second row
        ("failed:b:6:0", "failed"),
    ]
    await journal.close()

    journal = make()
    await journal.open()  # rebuilt from the table
    try:
        found = await journal.receipt("b:6:0:1")
        assert found is not None and (found.status, found.message_id) == ("sent", "m2")
        assert await journal.receipt("b:7:0:1") is None
        await clock.advance(100.0)  # nothing pending: no replay can ask for the plain sends any more
        await journal.prune()
        assert await journal.receipt("b:5:0:1") is None
        # a failed run's receipts stay findable (an admin retry skips what it already sent)
        assert (await journal.receipt("b:6:0:1")) == found
        assert (await journal.receipt("failed:b:6:0")) is not None
    finally:
        await journal.close()
    journal = make()
    await journal.open()
    try:
        assert (await journal.receipt("b:6:0:1")) == found
        await clock.advance(1000.0)  # past retention: the rows and their keys go
        assert (await journal.prune())["receipts"] == 3
        assert await journal.receipt("b:6:0:1") is None
    finally:
        await journal.close()


async def test_prune_forgets_dedup_keys_in_memory_too(tmp_path: Path) -> None:
    clock = ManualClock()
    journal = Journal(str(tmp_path / "j.sqlite3"), clock=clock, dedup_window_seconds=10.0)
    await journal.open()
    try:
        assert await journal.append(message(1), message(1).session_key()) is not None
        assert await journal.append(message(1), message(1).session_key()) is None
        await clock.advance(11.0)
        counts = await journal.prune()
        assert counts["dedup"] == 1
        assert await journal.append(message(1), message(1).session_key()) is not None
    finally:
        await journal.close()


class _CommitFails:
    """A connection whose COMMIT fails as a full disk would (the rest is the real one)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction


def test_a_rolled_back_batch_leaves_nothing_in_the_lookups(tmp_path: Path) -> None:
    writer = Writer(str(tmp_path / "j.sqlite3"))
    conn = writer.connect()
    try:
        writer.apply(conn, [Op(APPEND, ("b", "k0", "s", "t", b"{}"), None)])
        (open_seq,) = writer.open_events
        batch = [Op(APPEND, ("b", "k1", "s", "t", b"{}"), None), Op(DONE, ([(1.0, "done", open_seq)],), None)]
        writer.apply(_CommitFails(conn), batch)  # type: ignore[arg-type]
        assert writer.failure is not None
        assert ("b", "k1") not in writer.dedup  # else its redelivery would be dropped as a duplicate
        assert list(writer.open_events) == [open_seq]  # still pending, the done mark was rolled back
        writer.apply(conn, batch)
        assert writer.failure is None and ("b", "k1") in writer.dedup
        assert list(writer.open_events) == [open_seq + 1]
    finally:
        conn.close()


async def test_old_layout_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_LAYOUT)
    now = 1000.0
    conn.executemany(
        "INSERT INTO events(seq, bot, session, type, payload, received_at, done_at, status) "
        "VALUES (?, 'b', ?, 'message.received', ?, ?, ?, ?)",
        [
            (1, message(1).session_key().name, encode_event(message(1)), now, now, "done"),
            (2, message(2).session_key().name, encode_event(message(2)), now, None, None),
        ],
    )
    conn.executemany("INSERT INTO dedup(bot, key, at) VALUES ('b', ?, ?)", [("k1", now), ("k2", now)])
    conn.executemany(
        "INSERT INTO outbox(bot, chat, seq, payload, at, ikey) VALUES ('b', 'c', ?, ?, ?, ?)",
        [(1, b'{"text": "a", "seq": 1}', now, "r1"), (2, b'{"text": "b", "seq": 2}', now, None)],
    )
    conn.execute(
        "INSERT INTO receipts VALUES ('b:2:0:1', 'b', 2, 'private:c1', 'm1', 'sent', NULL, ?)", (now,)
    )
    conn.commit()
    conn.close()

    clock = ManualClock()
    await clock.advance(now + 1 - clock.wall())
    journal = Journal(str(path), clock=clock)
    await journal.open()
    try:
        assert [p.seq for p in await journal.pending("b")] == [2]
        assert await journal.event_status(1) == "done"
        assert await journal.append(message(2), message(2).session_key()) is None  # its key survived
        assert await journal.append(message(3), message(3).session_key()) == 3
        indexes = await journal.query(
            "SELECT name FROM sqlite_master WHERE type='index' "
            "AND tbl_name IN ('event_log', 'done_marks', 'dedup', 'outbox', 'receipts')"
        )
        assert indexes == [("outbox_by_chat",)]
        receipt = await journal.receipt("b:2:0:1")  # a pending event's run asks for its send
        assert receipt is not None and (receipt.run_id, receipt.message_id) == (2, "m1")
        assert await journal.append_outbox("b", "c", {"text": "a"}, "r1") == (
            1,
            {"text": "a", "seq": 1},
            False,
        )
        assert (await journal.append_outbox("b", "c", {"text": "c"}))[0] == 3
        assert [seq for seq, _ in await journal.read_outbox("b", "c")] == [1, 2, 3]
    finally:
        await journal.close()


@pytest.fixture
def fsync_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every fsync waits until the gate opens (the disk is slow)."""
    gate = threading.Event()
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        gate.wait(30)
        real(fd)

    monkeypatch.setattr(journal_writer.os, "fsync", slow_fsync)
    yield gate
    gate.set()


async def test_stored_output_is_readable_and_pushed_only_once_durable(
    tmp_path: Path, fsync_gate: threading.Event
) -> None:
    journal = Journal(str(tmp_path / "j.sqlite3"))
    await journal.open()
    try:
        first = journal.append_outbox("b", "c", {"text": "one"}, "r1")
        second = journal.append_outbox("b", "c", {"text": "two"}, "r2")
        order: list[int] = []
        first.add_done_callback(lambda _: order.append(1))
        second.add_done_callback(lambda _: order.append(2))
        reading = asyncio.ensure_future(journal.read_outbox("b", "c"))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()  # committed, the fsync has not returned
        assert not reading.done()  # a subscriber never reads a frame before it is durable
        fsync_gate.set()
        assert (await asyncio.wait_for(second, 10))[0] == 2
        await asyncio.sleep(0)
        assert order == [1, 2]  # pushes keep the commit order
        assert [seq for seq, _ in await asyncio.wait_for(reading, 10)] == [1, 2]
        assert (await journal.append_outbox("b", "c", {"text": "one"}, "r1"))[::2] == (1, False)
    finally:
        fsync_gate.set()
        await journal.close()


async def test_a_chats_outbox_seq_comes_from_memory_and_a_rollback_takes_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chat's last outbox seq is loaded on open (a chat's first reply after a start
    reads no table), and a batch that rolls back after numbering a reply gives its seq
    back: a chat's seqs stay dense."""
    path = str(tmp_path / "o.sqlite3")
    journal = Journal(path)
    await journal.open()
    assert (await journal.append_outbox("b", "c1", {"text": "one"}))[0] == 1
    await journal.close()

    journal = Journal(path)
    await journal.open()
    try:
        writer = journal._writer
        assert writer._outbox_seq == {("b", "c1"): 1}
        numbered = writer._outbox

        def numbered_then_failed(*args: Any) -> None:
            numbered(*args)
            raise RuntimeError("the batch fails after the reply was numbered")

        monkeypatch.setattr(writer, "_outbox", numbered_then_failed)
        with pytest.raises(RuntimeError):
            await journal.append_outbox("b", "c1", {"text": "lost"})
        monkeypatch.undo()
        assert (await journal.append_outbox("b", "c1", {"text": "two"}))[0] == 2
        assert [(seq, body["text"]) for seq, body in await journal.read_outbox("b", "c1")] == [
            (1, "one"),
            (2, "two"),
        ]
    finally:
        await journal.close()
