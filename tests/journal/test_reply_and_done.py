"""A run that only replied: its stored reply and its events' done mark commit in one
transaction, on SQLite and PostgreSQL, so after a crash or a failed write either
both are stored or neither is (then the event is replayed and its reply stored
once). The reply's writer does not wait for the commit (pipelined web replies);
the done mark's caller hears at commit, not at fsync.

The sharded journal keeps a chat's output and its sessions' done marks on one
shard (both placed by bot and chat id), so the same holds there."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from callboard.engine import journal_writer
from callboard.engine.clock import ManualClock
from callboard.engine.journal import Journal, StorageUnavailable
from callboard.engine.journal_pg import PgJournal
from callboard.engine.journal_store import JournalStore
from callboard.engine.journal_writer import OUTBOX, Op
from tests.journal.conftest import MakeJournal
from tests.journal.test_journal import message
from tests.journal.test_storage_failure import Storage

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


async def _outbox(journal: JournalStore) -> list[tuple[int, str]]:
    return [(seq, payload["text"]) for seq, payload in await journal.read_outbox("b", "c1")]


async def test_the_done_mark_commits_with_the_reply(make_journal: MakeJournal) -> None:
    journal = make_journal()
    await journal.open()
    try:
        seq = await journal.append(message(1), message(1).session_key())
        assert seq is not None
        assert journal.mark_done([seq], "unrouted") is None  # no output waiting: a background write
        other = await journal.append(message(2), message(2).session_key())
        assert other is not None
        commits = journal.commits
        reply = journal.append_outbox("b", "c1", {"text": "hi"}, "b:2:0:0")  # not awaited: pipelined
        committed = journal.mark_done([other])
        assert committed is not None
        await asyncio.wait_for(committed, 10)
        assert journal.commits == commits + 1  # one transaction for both
        assert (await asyncio.wait_for(reply, 10))[0] == 1
        assert await journal.event_status(other) == "done"
        assert await _outbox(journal) == [(1, "hi")]
    finally:
        await journal.close()


async def test_a_failed_transaction_stores_neither_and_holds_no_done_mark(
    make_journal: MakeJournal, journal_target: Callable[[str], str]
) -> None:
    clock = ManualClock()
    journal = make_journal(clock=clock)
    await journal.open()
    target = journal_target("j")
    storage = Storage(journal, target.split() if target.startswith("postgresql://") else [])
    try:
        seq = await journal.append(message(1), message(1).session_key())
        assert seq is not None
        storage.fail()
        reply = journal.append_outbox("b", "c1", {"text": "hi"}, "b:1:0:0")
        committed = journal.mark_done([seq])
        assert committed is not None
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(committed, 10)
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(reply, 10)
        storage.heal()
        await clock.advance(60)  # the probe finds the storage writable (and writes what it held)
        await storage.settled()
        await journal.wait_writable()
        await journal.flush()
        assert await journal.event_status(seq) == "pending"  # the mark was not held: replayed
        assert await _outbox(journal) == []
        # the replay stores the reply (once) and the mark, together again
        journal.append_outbox("b", "c1", {"text": "hi"}, "b:1:0:0")
        again = journal.mark_done([seq])
        assert again is not None
        await asyncio.wait_for(again, 10)
        assert await journal.event_status(seq) == "done"
        assert await _outbox(journal) == [(1, "hi")]
    finally:
        storage.heal()
        await journal.close()


async def test_the_done_mark_resolves_at_commit_before_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(str(tmp_path / "j.sqlite3"))
    await journal.open()
    gate = threading.Event()
    try:
        seq = await journal.append(message(1), message(1).session_key())
        assert seq is not None
        real = os.fsync
        monkeypatch.setattr(journal_writer.os, "fsync", lambda fd: (gate.wait(30), real(fd)))  # a slow disk
        reply = journal.append_outbox("b", "c1", {"text": "hi"}, "b:1:0:0")
        committed = journal.mark_done([seq])
        assert committed is not None
        await asyncio.wait_for(committed, 5)  # at commit: the session takes its next event
        assert not reply.done()  # the reply is pushed only once the fsync has returned
        gate.set()
        assert (await asyncio.wait_for(reply, 10))[0] == 1
    finally:
        gate.set()
        await journal.close()


async def test_a_cancelled_waiter_does_not_stop_the_batch(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.sqlite3"))
    await journal.open()
    try:
        seqs = [await journal.append(message(n), message(n).session_key()) for n in (1, 2)]
        assert None not in seqs
        journal.append_outbox("b", "c1", {"text": "one"}, "r1")
        cancelled = journal.mark_done([seqs[0]])  # e.g. an interrupted run
        other = journal.mark_done([seqs[1]])
        assert cancelled is not None and other is not None
        cancelled.cancel()
        await asyncio.wait_for(other, 5)
        await journal.flush()
        assert await journal.event_status(seqs[0]) == "done"  # the batch committed whole
    finally:
        await journal.close()


CRASHER = """
import asyncio, os, signal, sys
from callboard.engine import journal_writer
from callboard.engine.journal import Journal
from callboard.engine.entities import MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.loop import run

path, when = sys.argv[1], sys.argv[2]
bulk, apply = journal_writer.Writer._bulk, journal_writer.Writer.apply

def bulk_then_die(self, conn, ops, results):
    bulk(self, conn, ops, results)
    kinds = {op.kind for op in ops}
    if when == "before-commit" and {journal_writer.OUTBOX, journal_writer.DONE} <= kinds:
        os.kill(os.getpid(), signal.SIGKILL)  # both rows written, the transaction not committed

def apply_then_die(self, conn, batch):
    results = apply(self, conn, batch)
    if when == "after-commit" and {op.kind for op in batch} >= {journal_writer.OUTBOX, journal_writer.DONE}:
        os.kill(os.getpid(), signal.SIGKILL)  # committed, the fsync not yet asked for
    return results

journal_writer.Writer._bulk = bulk_then_die
journal_writer.Writer.apply = apply_then_die

async def main():
    journal = Journal(path)
    await journal.open()
    event = MessageReceived(bot_id="b", adapter="web", chat_type="private", chat_id="c1",
        message_id="1", message_chain=MessageChain.of("hello"), sender=User(id="u"), dedup_key="1")
    seq = await journal.append(event, event.session_key())
    print("appended", seq, flush=True)
    journal.append_outbox("b", "c1", {"text": "hi"}, "b:1:0:0")
    await journal.mark_done([seq])
    print("survived", flush=True)

run(main())
"""


@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
async def test_kill_9_at_the_commit_keeps_both_or_neither(tmp_path: Path, when: str) -> None:
    path = str(tmp_path / "k.sqlite3")
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, path, when],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "appended 1" in proc.stdout and "survived" not in proc.stdout
    journal = Journal(path)
    await journal.open()
    try:
        status = await journal.event_status(1)
        outbox = await _outbox(journal)
        if when == "before-commit":
            assert (status, outbox) == ("pending", [])  # neither: the event is replayed
            (pending,) = await journal.pending("b")
            assert pending.seq == 1
        else:
            assert (status, outbox) == ("done", [(1, "hi")])  # both
            assert await journal.pending("b") == []
        # a replay stores the reply under its key once, whichever happened
        stored = await journal.append_outbox("b", "c1", {"text": "hi"}, "b:1:0:0")
        assert stored[0] == 1
        assert await _outbox(journal) == [(1, "hi")]
    finally:
        await journal.close()


async def test_postgres_a_mark_and_output_queued_while_a_reply_commits_fail_with_it(
    make_journal: MakeJournal, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL's batches run while the next one is queued")
    clock = ManualClock()
    journal = make_journal(clock=clock)
    assert isinstance(journal, PgJournal)
    await journal.open()
    apply = PgJournal._apply

    async def reply_batch_fails(self: PgJournal, conn: Any, batch: list[Op], probe: bool = False) -> Any:
        if any(op.kind == OUTBOX for op in batch):  # the connection drops under this batch only
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await apply(self, conn, batch, probe)

    try:
        seq = await journal.append(message(1), message(1).session_key())
        assert seq is not None
        monkeypatch.setattr(PgJournal, "_apply", reply_batch_fails)
        reply = journal.append_outbox("b", "c1", {"text": "hi"}, "b:1:0:0")
        for _ in range(100):  # until the reply's batch is on its way to the server
            if journal._outbox_running:
                break
            await asyncio.sleep(0)
        assert journal._outbox_running
        committed = journal.mark_done([seq])  # the next batch, tied to the running one
        assert committed is not None
        # the session did not wait for that commit and replied again: never stored before the first
        later = journal.append_outbox("b", "c1", {"text": "later"}, "b:2:0:0")
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(reply, 10)
        with pytest.raises(StorageUnavailable):  # though its own batch could have committed
            await asyncio.wait_for(committed, 10)
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(later, 10)
        monkeypatch.setattr(PgJournal, "_apply", apply)
        await clock.advance(60)  # the probe finds the server writable again
        await journal.settled()
        await journal.wait_writable()
        await journal.flush()
        assert await journal.event_status(seq) == "pending"  # replayed, its reply stored then
        assert await _outbox(journal) == []
    finally:
        await journal.close()
