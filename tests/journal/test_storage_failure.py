"""The journal on a storage that fails and heals: new writes refused at once,
background writes held in order, a probe on the engine clock with backoff,
everything written once the storage is back.

The failure is SQLite's own: ``PRAGMA query_only`` on the journal's connection
makes every write fail with SQLITE_READONLY, as a read-only remount does, and
runs without root (tests/reliability/test_full_disk.py fills a real tmpfs).
On PostgreSQL the database is made read-only and the journal's sessions are
cut (what a failover to a read-only standby looks like): the pool reconnects
and every write fails with SQLSTATE 25006 until it is healed. A sharded
journal has every shard broken (each probes on its own)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from callboard.engine.clock import ManualClock
from callboard.engine.journal import Journal, StorageUnavailable
from callboard.engine.journal_store import JournalStore
from tests.journal.conftest import MakeJournal
from tests.journal.test_journal import message

pytestmark = pytest.mark.timeout(60)


class Storage:
    """Breaks and heals the storage under one journal, as its backend allows."""

    def __init__(self, journal: JournalStore, urls: list[str]) -> None:
        self.journal = journal
        self.urls = urls
        #: what the storage problem says
        self.word = "readonly" if not urls else "read-only"
        #: probes that run while it is broken (one per database)
        self.probes = max(1, len(urls))

    def _conn(self) -> sqlite3.Connection:
        assert isinstance(self.journal, Journal)
        conn = self.journal._conn  # the cap is per connection: it must be the journal's own
        assert conn is not None
        return conn

    def _pg(self, value: str) -> None:
        """The databases read-only (or not) for new sessions, and the journal's
        sessions cut, as a failover to a read-only standby does."""
        for url in self.urls:
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}'.encode())
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )

    def fail(self) -> None:
        if not self.urls:
            self._conn().execute("PRAGMA query_only=1")
        else:
            self._pg("on")

    def heal(self) -> None:
        if not self.urls:
            self._conn().execute("PRAGMA query_only=0")
        else:
            self._pg("off")

    async def settled(self) -> None:
        """Until a probe that a clock advance started has finished (PostgreSQL
        probes are async; SQLite's run inside the timer)."""
        settled = getattr(self.journal, "settled", None)
        if settled is not None:
            await settled()


@pytest.fixture
async def journal(
    make_journal: MakeJournal, journal_target: Callable[[str], str]
) -> AsyncIterator[tuple[JournalStore, ManualClock, Storage]]:
    clock = ManualClock()
    j = make_journal(clock=clock)
    await j.open()
    target = journal_target("j")
    yield j, clock, Storage(j, target.split() if target.startswith("postgresql://") else [])
    await j.close()


async def test_failing_storage_refuses_holds_and_recovers(
    journal: tuple[JournalStore, ManualClock, Storage],
) -> None:
    j, clock, storage = journal
    first = await j.append(message(100_000), message(100_000).session_key())
    assert first is not None
    storage.fail()
    with pytest.raises(StorageUnavailable):
        await j.append(message(1), message(1).session_key())
    assert j.storage_problem is not None and storage.word in j.storage_problem
    errors = j.storage_errors

    # new work is refused at once, without touching the disk
    with pytest.raises(StorageUnavailable):
        await j.append(message(200_000), message(200_000).session_key())
    with pytest.raises(StorageUnavailable):
        await j.append_outbox("b", "c1", {"op": "message", "text": "x"})
    assert j.storage_errors > errors
    with pytest.raises(StorageUnavailable):
        await j.write_probe()

    # done marks are held, not lost
    j.mark_done([first], "done")
    assert await j.event_status(first) == "pending"

    # the probe backs off on the engine clock while the storage stays full
    due = clock.pending()
    assert len(due) == storage.probes
    await clock.advance(max(due) - clock.now())
    await storage.settled()
    assert j.storage_problem is not None
    later = clock.pending()
    assert len(later) == storage.probes
    assert min(later) - clock.now() > max(due) * 0.9  # the next wait is not shorter

    # the storage heals: the next probe writes the held marks and new work is accepted
    storage.heal()
    await clock.advance(max(later) - clock.now())
    await storage.settled()
    assert j.storage_problem is None
    await j.wait_writable()
    await j.flush()
    assert await j.event_status(first) == "done"
    assert await j.append(message(300_000), message(300_000).session_key()) is not None
    await j.write_probe()


async def test_held_writes_keep_their_order(journal: tuple[JournalStore, ManualClock, Storage]) -> None:
    j, clock, storage = journal
    seq = await j.append(message(1), message(1).session_key())
    assert seq is not None
    storage.fail()
    with pytest.raises(StorageUnavailable):
        await j.append(message(2), message(2).session_key())
    j.mark_done([seq], "failed")  # queued first...
    j.mark_done([seq], "done")  # ...then superseded: order decides
    storage.heal()
    await clock.advance(60)
    await storage.settled()
    await j.flush()
    assert await j.event_status(seq) == "done"
