"""WAL checkpoints run on their own thread, about once per interval while there
were commits, never per fsync; what they copy is in the database file itself."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from callboard.engine.entities import MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.journal import Journal
from callboard.engine.journal_writer import Checkpointer
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


def wal_database(path: Path, rows: int) -> sqlite3.Connection:
    """Commits left in the WAL, as the journal's writer leaves them."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (n INTEGER)")
    for n in range(rows):
        conn.execute("INSERT INTO t VALUES (?)", (n,))
    return conn


def rows_in_database_file(path: Path, tmp: Path) -> int:
    """Rows in the main file alone (without its WAL): what checkpoints copied."""
    copy = tmp / "copy.sqlite3"
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    except sqlite3.OperationalError:  # not even the table reached the file
        return 0
    finally:
        conn.close()


async def test_a_dirty_wal_is_checkpointed_on_the_checkpoint_thread(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = wal_database(path, 500)
    assert rows_in_database_file(path, tmp_path) == 0
    checkpointer = Checkpointer(str(path), interval=0.05)
    checkpointer.start()
    try:
        await eventually(lambda: checkpointer.turns >= 3)
        assert checkpointer.checkpoints == 0  # nothing synced yet: nothing to do
        checkpointer.dirty = True  # what the Syncer does after an fsync
        await eventually(lambda: checkpointer.checkpoints == 1)
        assert rows_in_database_file(path, tmp_path) == 500
        await eventually(lambda: checkpointer.dirty is False)
    finally:
        checkpointer.stop()
        conn.close()


async def test_an_idle_wal_is_left_alone_until_stop(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = wal_database(path, 50)
    checkpointer = Checkpointer(str(path), interval=0.02)
    checkpointer.start()
    try:
        await eventually(lambda: checkpointer.turns >= 10)  # many intervals: nothing was synced
        assert checkpointer.checkpoints == 0
        assert rows_in_database_file(path, tmp_path) == 0
    finally:
        checkpointer.stop()  # the last checkpoint runs at stop
        conn.close()
    assert checkpointer.checkpoints == 1
    assert rows_in_database_file(path, tmp_path) == 50


async def test_the_journal_checkpoints_off_the_fsync_thread(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(str(path))
    await journal.open()
    syncer = journal._syncer
    assert syncer is not None
    checkpointer = syncer.checkpointer
    assert checkpointer._thread.name == "journal-checkpoint" and checkpointer._thread.is_alive()
    for n in range(200):
        event = MessageReceived(
            bot_id="b",
            adapter="web",
            chat_type="private",
            chat_id="c",
            message_id=str(n),
            message_chain=MessageChain.of(str(n)),
            sender=User(id="u"),
            dedup_key=str(n),
        )
        assert await journal.append(event, event.session_key()) is not None
    await eventually(lambda: checkpointer.checkpoints >= 1, timeout=10)
    await journal.close()
    assert not checkpointer._thread.is_alive()
    copy = tmp_path / "copy.sqlite3"
    shutil.copyfile(path, copy)  # the main file alone holds every event after close
    assert sqlite3.connect(copy).execute("SELECT count(*) FROM events").fetchone()[0] == 200
