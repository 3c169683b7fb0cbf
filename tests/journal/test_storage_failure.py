"""The journal on a storage that fails and heals: new writes refused at once,
background writes held in order, a probe on the engine clock with backoff,
everything written once the storage is back.

The failure is SQLite's own: ``PRAGMA query_only`` on the journal's connection
makes every write fail with SQLITE_READONLY, as a read-only remount does, and
runs without root (tests/reliability/test_full_disk.py fills a real tmpfs)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.engine.clock import ManualClock
from callboard.engine.journal import Journal, StorageUnavailable
from tests.journal.test_journal import message

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[tuple[Journal, ManualClock]]:
    clock = ManualClock()
    j = Journal(str(tmp_path / "j.sqlite3"), clock=clock)
    await j.open()
    yield j, clock
    await j.close()


def _conn(journal: Journal) -> sqlite3.Connection:
    conn = journal._conn  # the cap is per connection: it must be the journal's own
    assert conn is not None
    return conn


def fail(journal: Journal) -> None:
    _conn(journal).execute("PRAGMA query_only=1")


def heal(journal: Journal) -> None:
    _conn(journal).execute("PRAGMA query_only=0")


async def test_failing_storage_refuses_holds_and_recovers(journal: tuple[Journal, ManualClock]) -> None:
    j, clock = journal
    first = await j.append(message(100_000), message(100_000).session_key())
    assert first is not None
    fail(j)
    with pytest.raises(StorageUnavailable):
        await j.append(message(1), message(1).session_key())
    assert j.storage_problem is not None and "readonly" in j.storage_problem
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
    assert len(due) == 1
    await clock.advance(due[0] - clock.now())
    assert j.storage_problem is not None
    later = clock.pending()
    assert len(later) == 1 and later[0] - clock.now() > due[0] * 0.9  # the next wait is not shorter

    # the storage heals: the next probe writes the held marks and new work is accepted
    heal(j)
    await clock.advance(later[0] - clock.now())
    assert j.storage_problem is None
    await j.wait_writable()
    await j.flush()
    assert await j.event_status(first) == "done"
    assert await j.append(message(300_000), message(300_000).session_key()) is not None
    await j.write_probe()


async def test_held_writes_keep_their_order(journal: tuple[Journal, ManualClock]) -> None:
    j, clock = journal
    seq = await j.append(message(1), message(1).session_key())
    assert seq is not None
    fail(j)
    with pytest.raises(StorageUnavailable):
        await j.append(message(2), message(2).session_key())
    j.mark_done([seq], "failed")  # queued first...
    j.mark_done([seq], "done")  # ...then superseded: order decides
    heal(j)
    await clock.advance(60)
    await j.flush()
    assert await j.event_status(seq) == "done"
