"""The durable journal on real SQLite, real PostgreSQL and PostgreSQL sharded
over two databases (every test runs on each, see conftest.py): dedup, group
commit, replay, receipts, state, stored output, retention, and survival of
kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from callboard.engine.clock import ManualClock
from callboard.engine.entities import MessageChain, User
from callboard.engine.events import MessageReceived, SessionKey
from callboard.engine.journal import Journal, JournalClosed, JournalUnusable
from callboard.engine.journal_sharded import ShardedJournal
from callboard.engine.journal_store import JournalStore
from tests.journal.conftest import MakeJournal

pytestmark = pytest.mark.timeout(60)


def message(n: int, chat: str = "c1", dedup: str | None = "auto") -> MessageReceived:
    return MessageReceived(
        bot_id="b",
        adapter="web",
        chat_type="private",
        chat_id=chat,
        message_id=f"m{n}",
        message_chain=MessageChain.of(f"text {n}"),
        sender=User(id="u"),
        dedup_key=f"k{n}" if dedup == "auto" else dedup,
    )


@pytest.fixture
async def journal(make_journal: MakeJournal) -> AsyncIterator[JournalStore]:
    j = make_journal()
    await j.open()
    yield j
    await j.close()


async def test_append_assigns_increasing_sequence_numbers(journal: JournalStore) -> None:
    seqs = [await journal.append(message(i), message(i).session_key()) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


async def test_dedup_key_makes_a_duplicate(journal: JournalStore) -> None:
    first = await journal.append(message(1), SessionKey("b", "private", "c1"))
    again = await journal.append(message(1), SessionKey("b", "private", "c1"))
    assert first is not None and again is None
    other_bot = msgspec.structs.replace(message(1), bot_id="other")
    assert await journal.append(other_bot, other_bot.session_key()) is not None  # keys are per bot
    no_key = message(2, dedup=None)
    assert await journal.append(no_key, no_key.session_key()) is not None
    assert await journal.append(no_key, no_key.session_key()) is not None  # no key, no dedup


async def test_dedup_window_is_pruned(make_journal: MakeJournal) -> None:
    clock = ManualClock()
    journal = make_journal("w", dedup_window_seconds=3600, clock=clock)
    await journal.open()
    try:
        assert await journal.append(message(1), message(1).session_key()) is not None
        assert await journal.append(message(1), message(1).session_key()) is None
        await clock.advance(3599)
        assert (await journal.prune())["dedup"] == 0  # still inside the window
        assert await journal.append(message(1), message(1).session_key()) is None
        await clock.advance(2)
        counts = await journal.prune()
        assert counts["dedup"] == 1
        assert await journal.append(message(1), message(1).session_key()) is not None
    finally:
        await journal.close()


async def test_group_commit_batches_concurrent_appends(journal: JournalStore) -> None:
    commits_before = journal.commits
    seqs = await asyncio.gather(*(journal.append(message(i), message(i).session_key()) for i in range(500)))
    assert len(set(seqs)) == 500
    commits = journal.commits - commits_before
    assert commits < 100, f"{commits} commits for 500 appends: not grouped"


async def test_pending_replay_in_order_and_done_marks(journal: JournalStore) -> None:
    seqs = [await journal.append(message(i), message(i).session_key()) for i in range(4)]
    journal.mark_done([seqs[1]])
    await journal.mark_done_now([seqs[3]], status="failed")
    pending = await journal.pending("b")
    assert [p.seq for p in pending] == [seqs[0], seqs[2]]
    assert [p.event.message_id for p in pending] == ["m0", "m2"]  # type: ignore[attr-defined]
    assert await journal.event_status(seqs[3]) == "failed"
    assert await journal.event_status(seqs[0]) == "pending"
    assert await journal.pending("nobody") == []


async def test_receipts_record_the_run(journal: JournalStore) -> None:
    seqs = [await journal.append(message(i), message(i).session_key()) for i in range(3)]
    run_id = seqs[-1]
    journal.record_run(run_id, seqs)
    journal.store_receipt("b:run:1", "b", run_id, "private:c1", "pm1")
    receipt = await journal.receipt("b:run:1")
    assert receipt is not None and receipt.message_id == "pm1" and receipt.status == "sent"
    assert await journal.receipt("b:run:2") is None
    pending = await journal.pending("b")
    assert {p.run_id for p in pending} == {run_id}  # replay rebuilds the same run


async def test_session_state_and_outbox(journal: JournalStore) -> None:
    key = SessionKey("b", "private", "c1")
    assert await journal.load_state("b", key) is None
    await journal.save_state("b", key, {"history": ["a", "b"], "turns": 2})
    assert await journal.load_state("b", key) == {"history": ["a", "b"], "turns": 2}
    assert (await journal.append_outbox("b", "c1", {"text": "x"}))[0] == 1
    assert await journal.append_outbox("b", "c1", {"text": "y"}, "key-y") == (
        2,
        {"text": "y", "seq": 2},
        True,
    )
    assert (await journal.append_outbox("b", "c2", {"text": "z"}))[0] == 1
    # the same idempotency key again: nothing new, the original comes back
    assert await journal.append_outbox("b", "c1", {"text": "y2"}, "key-y") == (
        2,
        {"text": "y", "seq": 2},
        False,
    )
    rows = await journal.read_outbox("b", "c1", since=1)
    assert rows == [(2, {"text": "y", "seq": 2})]


async def test_outbox_sequence_continues_after_reopen(make_journal: MakeJournal) -> None:
    for expected in (1, 2):
        journal = make_journal("o")
        await journal.open()
        assert (await journal.append_outbox("b", "c", {}))[0] == expected
        await journal.close()


async def test_retention_drops_only_old_done_events(make_journal: MakeJournal) -> None:
    clock = ManualClock()
    journal = make_journal("r", retention_seconds=7 * 86400, clock=clock)
    await journal.open()
    try:
        done = await journal.append(message(1), message(1).session_key())
        kept = await journal.append(message(2), message(2).session_key())
        assert done is not None and kept is not None
        await journal.mark_done_now([done])
        await clock.advance(7 * 86400 - 1)
        assert (await journal.prune())["events"] == 0  # done, but not old enough yet
        await clock.advance(2)
        counts = await journal.prune()
        assert counts["events"] == 1
        assert await journal.event_status(done) is None
        assert await journal.event_status(kept) == "pending"  # unfinished events are never pruned
    finally:
        await journal.close()


async def test_closed_journal_refuses(make_journal: MakeJournal) -> None:
    journal = make_journal("c")
    with pytest.raises(JournalClosed):
        await journal.append(message(1), message(1).session_key())


async def test_open_reports_a_bad_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    journal = Journal(str(blocker / "j.sqlite3"))
    with pytest.raises(JournalUnusable, match="cannot open or create it"):
        await journal.open()


WRITER = """
import asyncio, sys
from callboard.engine.journal import Journal
from callboard.engine.journal_pg import PgJournal
from callboard.engine.journal_sharded import ShardedJournal
from callboard.engine.entities import MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.loop import run

async def main():
    where = sys.argv[1]
    if " " in where:
        journal = ShardedJournal(where.split(), path="unused")
    elif where.startswith("postgresql://"):
        journal = PgJournal(where, path="unused")
    else:
        journal = Journal(where)
    await journal.open()
    n = 0
    while True:
        event = MessageReceived(bot_id="b", adapter="web", chat_type="private", chat_id=f"c{n % 10}",
            message_id=str(n), message_chain=MessageChain.of(str(n)), sender=User(id="u"), dedup_key=str(n))
        seq = await journal.append(event, event.session_key())
        print(f"acked {n} {seq}", flush=True)
        n += 1

run(main())
"""


async def test_acknowledged_appends_survive_kill_9(
    journal_target: Callable[[str], str], make_journal: MakeJournal
) -> None:
    path = journal_target("k")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, path],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    acked: list[int] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("acked"):
            acked.append(int(line.split()[1]))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(acked) >= 300
    journal = make_journal("k")
    await journal.open()
    try:
        rows = await journal.query("SELECT payload FROM events")
        stored = {int(__import__("orjson").loads(p)["message_id"]) for (p,) in rows}
        assert set(acked) <= stored  # every acknowledged append is there after kill -9
    finally:
        await journal.close()


async def test_prune_works_in_chunks(make_journal: MakeJournal, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock()
    journal = make_journal("p", retention_seconds=0.0, dedup_window_seconds=0.0, clock=clock)
    chunked = journal.shards[0] if isinstance(journal, ShardedJournal) else journal
    monkeypatch.setattr(type(chunked), "PRUNE_CHUNK", 7)
    await journal.open()
    try:
        seqs = [await journal.append(message(i), message(i).session_key()) for i in range(50)]
        await journal.mark_done_now([s for s in seqs if s is not None])
        journal.record_run(seqs[-1] or 0, [s for s in seqs if s is not None])
        await clock.advance(0.01)
        counts = await journal.prune()
        assert counts["events"] == 50 and counts["dedup"] == 50 and counts["run_members"] == 50
        assert all(n == 0 for (n,) in await journal.query("SELECT COUNT(*) FROM events"))  # every shard
    finally:
        await journal.close()


async def test_postgres_open_reports_an_unreachable_server_without_the_password(tmp_path: Path) -> None:
    from callboard.engine.journal_pg import PgJournal

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    journal = PgJournal(
        f"postgresql://u:hunter2secret@127.0.0.1:{port}/db", path=str(tmp_path / "x"), connect_timeout=1.0
    )
    with pytest.raises(JournalUnusable, match="cannot connect") as raised:
        await journal.open()
    assert "hunter2secret" not in str(raised.value) and "u:***@127.0.0.1" in str(raised.value)


async def test_two_journals_on_one_database_store_a_retried_event_once(
    backend: str, make_journal: MakeJournal
) -> None:
    """Two cluster nodes share the PostgreSQL journal: a platform retry that reaches
    the other node is a duplicate there too."""
    if backend == "sqlite":
        pytest.skip("one SQLite file is never shared by two engines")
    a, b = make_journal("shared"), make_journal("shared")
    await a.open()
    await b.open()
    try:
        results = await asyncio.gather(
            *(j.append(message(i), message(i).session_key()) for i in range(50) for j in (a, b))
        )
        stored = [r for r in results if r is not None]
        assert len(stored) == 50 and len(set(stored)) == 50
    finally:
        await a.close()
        await b.close()
