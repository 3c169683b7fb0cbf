"""The journal's storage side: the schema, batch application, and the sync thread.

Operations are applied on the event loop's thread in one transaction per
batch; SQLite itself never waits for the disk (``synchronous=OFF``). Durability
comes from ``Syncer``, a thread that only calls ``fsync`` on the WAL file: a
caller's future resolves once an fsync that covers its batch has returned.
WAL checkpoints run on a thread of their own (``Checkpointer``, through its own
connection, which does sync) about once a second while there are new commits,
so an fsync never waits behind a checkpoint, and a page rewritten by many
commits is copied into the database once per checkpoint, not once per fsync. Many batches
share one fsync (group commit), and because the sync thread does no Python
work to speak of, it never fights the event loop for the GIL, which the
earlier design (every statement on a writer thread) did at every statement.

The hot tables are append-only rowid tables without secondary indexes, so a
commit touches the tail of each B-tree and no randomly keyed index:
``event_log`` (events, by seq), ``done_marks`` (one row per handled event,
by seq; ``events`` is a view joining the two, with the old ``done_at`` and
``status`` columns) and ``dedup`` (keys in arrival order). Stored bot output
(``outbox``) is a rowid table too, with one index, (bot, chat, seq), for a
reconnecting client's backlog, and so are ``receipts`` (no index: a new key
appends a row, a key stored before is updated in its row, found by row id).
Which dedup keys were seen, which events are still pending, which outbox
idempotency keys and which receipt keys exist is kept in memory by ``Writer``
(rebuilt from those tables on open: the dedup keys within the window, the
outbox and receipt keys since the oldest pending event, plus the receipts of
runs with a failure record, which an admin retry may ask for at any age; a
rolled-back batch's changes are undone), so no append, done mark, outbox write
or receipt reads the database to decide. A journal of an earlier layout is
migrated on open.

The hot operations (append, done marks, run records, receipts, stored output)
are applied in bulk: one ``executemany`` per kind per batch. Anything else is
a ``Call`` (a function of the connection) and acts as a barrier: the bulk
writes queued before it are applied first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from callboard.engine.audit import AUDIT_COLUMNS, AuditEntry
from callboard.engine.events import Event, SessionKey, encode_event

log = logging.getLogger("callboard.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS event_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    bot TEXT NOT NULL,
    session TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS done_marks (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS events AS
    SELECT l.seq AS seq, l.bot AS bot, l.session AS session, l.type AS type, l.payload AS payload,
           l.received_at AS received_at, d.at AS done_at, d.status AS status
    FROM event_log l LEFT JOIN done_marks d ON d.seq = l.seq;
CREATE TABLE IF NOT EXISTS dedup (
    bot TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    bot TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    chat TEXT NOT NULL,
    message_id TEXT,
    status TEXT NOT NULL,
    error TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_members (
    seq INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS session_state (
    bot TEXT NOT NULL,
    session TEXT NOT NULL,
    state BLOB NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (bot, session)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    bot TEXT NOT NULL,
    chat TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    at REAL NOT NULL,
    ikey TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_chat ON outbox(bot, chat, seq);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sandbox_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    bot TEXT NOT NULL,
    tenant TEXT,
    scope TEXT NOT NULL,
    session TEXT,
    handler TEXT,
    user_id TEXT,
    tool TEXT NOT NULL,
    target TEXT NOT NULL,
    exit_code INTEGER,
    status TEXT NOT NULL,
    duration REAL NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_audit_at ON sandbox_audit(at);
"""

# operation kinds
APPEND = 1  # (bot, dedup_key | None, session, type, payload)
DONE = 2  # (rows of (done_at, status, seq))
RUN = 3  # (rows of (seq, run_id))
RECEIPT = 4  # (key, bot, run_id, chat, message_id, status, error)
OUTBOX = 5  # (bot, chat, payload dict, idempotency key | None)
CALL = 6  # (function of the connection,)
AUDIT = 7  # (an AuditEntry's row: see engine.audit.AUDIT_COLUMNS)

AUDIT_INSERT = (
    f"INSERT INTO sandbox_audit(at, {', '.join(AUDIT_COLUMNS)}) VALUES (%s{', %s' * len(AUDIT_COLUMNS)})"
)

_CHUNK = 400  # row values per IN (...) query, well under SQLite's variable limit

Future = asyncio.Future[Any]


class Op:
    __slots__ = ("args", "future", "kind")

    def __init__(self, kind: int, args: tuple[Any, ...], future: Future | None) -> None:
        self.kind = kind
        self.args = args
        self.future = future


class QueuedWrites:
    """The writes both journals (SQLite, PostgreSQL) queue the same way, each an
    ``Op`` for the next batch; a journal supplies ``_op`` (queue it, and a future
    when ``wait``) and ``wall`` (the time stored with it)."""

    def wall(self) -> float:
        raise NotImplementedError

    def _op(self, kind: int, args: tuple[Any, ...], wait: bool) -> asyncio.Future[Any]:
        raise NotImplementedError

    def append(self, event: Event, session: SessionKey) -> asyncio.Future[int | None]:
        """Store ``event``; resolves to its sequence number once committed, or to
        None if its dedup key was seen before. Keys are forgotten by ``prune``
        once older than the dedup window, so the window is at least
        ``dedup_window_seconds``."""
        payload = encode_event(event)
        return self._op(APPEND, (event.bot_id, event.dedup_key, session.name, event.type, payload), True)

    async def mark_done_now(self, seqs: Sequence[int], status: str = "done") -> None:
        now = self.wall()
        await self._op(DONE, ([(now, status, seq) for seq in seqs],), True)

    def record_run(self, run_id: int, seqs: Sequence[int]) -> None:
        """Remember which events make up a handler run, before it sends anything.

        Operations commit in the order they are queued, so by the time any send
        of the run is durable, so is this: a replay rebuilds exactly this run and
        its receipt keys match."""
        self._op(RUN, ([(seq, run_id) for seq in seqs],), False)

    def store_receipt(
        self,
        key: str,
        bot: str,
        run_id: int,
        chat: str,
        message_id: str | None,
        status: str = "sent",
        error: str | None = None,
    ) -> None:
        """Record an outbound send (or its final failure) under its receipt key.

        Not awaited: it commits before anything queued after it, in particular
        the run's done marks, and waiting would not shrink the window between
        the platform accepting a send and the receipt being durable."""
        self._op(RECEIPT, (key, bot, run_id, chat, message_id, status, error), False)

    def append_audit(self, entry: AuditEntry) -> None:
        """Record one sandbox call (not awaited; committed with the next batch)."""
        self._op(AUDIT, entry.row(), False)

    def append_outbox(
        self, bot: str, chat: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> asyncio.Future[tuple[int, dict[str, Any], bool]]:
        """Store one outbound item for ``chat`` under the next per-chat sequence
        number (written into ``payload["seq"]``). With an ``idempotency_key``
        already stored, nothing is added and the earlier item comes back.
        Resolves to (seq, stored payload, created)."""
        return self._op(OUTBOX, (bot, chat, payload, idempotency_key), True)


class Writer:
    """Applies batches of operations to the connection (on the loop's thread)."""

    def __init__(self, path: str, wall: Callable[[], float] = time.time) -> None:
        self.path = path
        #: wall-clock seconds for stored timestamps (the journal's clock)
        self.wall = wall
        self.commits = 0
        self.operations = 0
        self._next_seq = 1
        self._outbox_seq: dict[tuple[str, str], int] = {}
        self._next_outbox_id = 1
        #: (bot, idempotency key) -> (outbox row id, when stored), oldest first: the
        #: repeat lookup, in memory; kept as long as an event that could repeat it is pending
        self.outbox_keys: dict[tuple[str, str], tuple[int, float]] = {}
        self._undo_outbox: list[tuple[str, str]] = []
        #: (bot, chat) -> its outbox seq before the batch being applied
        self._undo_outbox_seq: dict[tuple[str, str], int] = {}
        self._next_receipt_id = 1
        #: receipt key -> (row id, when first stored, run id), oldest first: the receipt
        #: lookup, in memory, kept as long as a pending event's run could ask for it
        self.receipt_keys: dict[str, tuple[int, float, int]] = {}
        #: runs with a failure record (a failed send, a failed or retried run): an admin
        #: retry may ask for their receipts at any age, so these stay until pruned
        self.kept_runs: set[int] = set()
        #: the receipts of those runs past the horizon: key -> (row id, when first stored)
        self.kept_receipts: dict[str, tuple[int, float]] = {}
        self._undo_receipts: list[str] = []
        #: how far back dedup keys are rebuilt into memory on open (the journal's window)
        self.dedup_window = 86400.0
        #: (bot, dedup key) -> when stored, oldest first: the dedup lookup, in memory
        self.dedup: dict[tuple[str, str], float] = {}
        #: seq -> (bot, session name) of every event not marked done: the pending lookup
        self.open_events: dict[int, tuple[str, str]] = {}
        # what the batch being applied changed in those two, undone if it rolls back
        self._undo_keys: list[tuple[str, str]] = []
        self._undo_opened: list[int] = []
        self._undo_closed: list[tuple[int, tuple[str, str]]] = []
        #: why the last ``apply`` rolled back (None when it committed)
        self.failure: BaseException | None = None

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # the Syncer makes commits durable
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer does, off the loop
        _migrate(conn)
        _migrate_outbox(conn)
        _migrate_receipts(conn)
        conn.executescript(SCHEMA)
        self._load_counters(conn)
        # every chat's last outbox seq, so no reply (a chat's first after a start) reads the table
        self._outbox_seq = {
            (bot, chat): seq
            for bot, chat, seq in conn.execute("SELECT bot, chat, MAX(seq) FROM outbox GROUP BY bot, chat")
        }
        self._load_lookups(conn)
        return conn

    def _load_counters(self, conn: sqlite3.Connection) -> None:
        top = conn.execute("SELECT MAX(seq) FROM event_log").fetchone()[0] or 0
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='event_log'").fetchone()
        self._next_seq = max(top, row[0] if row else 0) + 1
        self._next_outbox_id = (conn.execute("SELECT MAX(id) FROM outbox").fetchone()[0] or 0) + 1
        self._next_receipt_id = (conn.execute("SELECT MAX(id) FROM receipts").fetchone()[0] or 0) + 1

    def _load_lookups(self, conn: sqlite3.Connection) -> None:
        """The in-memory dedup keys (those within the window), pending events, outbox
        idempotency keys and receipt keys, from the tables, on open."""
        horizon = self.wall() - self.dedup_window
        self.dedup = {
            (bot, key): at
            for bot, key, at in conn.execute(
                "SELECT bot, key, at FROM dedup WHERE at >= ? ORDER BY rowid", (horizon,)
            )
        }
        self.open_events = {
            seq: (bot, session)
            for seq, bot, session in conn.execute(
                "SELECT seq, bot, session FROM event_log l "
                "WHERE NOT EXISTS (SELECT 1 FROM done_marks d WHERE d.seq = l.seq) ORDER BY seq"
            )
        }
        key_horizon = self.outbox_key_horizon(self.oldest_pending(conn))
        self.outbox_keys = {
            (bot, ikey): (row_id, at)
            for row_id, bot, ikey, at in conn.execute(
                "SELECT id, bot, ikey, at FROM outbox WHERE ikey IS NOT NULL AND at >= ? ORDER BY id",
                (key_horizon,),
            )
        }
        self.reload_kept_runs(conn)
        self.receipt_keys, self.kept_receipts = {}, {}
        for row_id, key, run, at in conn.execute("SELECT id, key, run_id, at FROM receipts ORDER BY id"):
            if at >= key_horizon:
                self.receipt_keys[key] = (row_id, at, run)
            elif run in self.kept_runs:
                self.kept_receipts[key] = (row_id, at)

    def reload_kept_runs(self, conn: sqlite3.Connection) -> None:
        """Runs with a failure record among the receipts (on open, and after a prune)."""
        self.kept_runs = {
            run for (run,) in conn.execute("SELECT DISTINCT run_id FROM receipts WHERE status != 'sent'")
        }

    def oldest_pending(self, conn: sqlite3.Connection) -> float | None:
        """When the oldest event still pending was stored (None when none is)."""
        first = next(iter(self.open_events), None)
        if first is None:
            return None
        row = conn.execute("SELECT received_at FROM event_log WHERE seq=?", (first,)).fetchone()
        return float(row[0]) if row is not None else None

    def outbox_key_horizon(self, oldest_pending: float | None) -> float:
        """Idempotency keys stored before this are never asked for again: a repeated
        send belongs to a replayed run, whose events are pending and were received
        before it first sent (a dedup window of margin, for clock steps)."""
        now = self.wall()
        return min(now, oldest_pending if oldest_pending is not None else now) - self.dedup_window

    def forget_outbox_keys(self, horizon: float) -> None:
        keys = self.outbox_keys
        while keys:
            key = next(iter(keys))
            if keys[key][1] >= horizon:
                return
            del keys[key]

    def forget_receipt_keys(self, horizon: float, retention_horizon: float) -> None:
        """Drop in-memory receipt keys stored before ``horizon`` (the outbox keys'),
        keeping those of runs with a failure record until retention prunes their rows."""
        keys = self.receipt_keys
        while keys:
            key = next(iter(keys))
            row_id, at, run = keys[key]
            if at >= horizon:
                break
            del keys[key]
            if run in self.kept_runs:
                self.kept_receipts[key] = (row_id, at)
        kept = self.kept_receipts
        while kept:
            key = next(iter(kept))
            if kept[key][1] >= retention_horizon:
                break
            del kept[key]

    def receipt_row(self, key: str) -> int | None:
        """The row id of ``key``'s receipt, when one may be asked for (see ``receipt_keys``)."""
        known = self.receipt_keys.get(key)
        if known is not None:
            return known[0]
        kept = self.kept_receipts.get(key)
        return kept[0] if kept is not None else None

    def forget_dedup(self, horizon: float) -> None:
        """Drop in-memory dedup keys stored before ``horizon`` (they are oldest first)."""
        dedup = self.dedup
        while dedup:
            key = next(iter(dedup))
            if dedup[key] >= horizon:
                return
            del dedup[key]

    # ------------------------------------------------------------------ one batch

    def apply(
        self, conn: sqlite3.Connection, batch: list[Op]
    ) -> list[tuple[Future, Any, BaseException | None]]:
        results: list[tuple[Future | None, Any, BaseException | None]] = []
        self.failure = None
        self._undo_keys, self._undo_opened, self._undo_closed, self._undo_outbox = [], [], [], []
        self._undo_receipts = []
        self._undo_outbox_seq = {}
        try:
            self._begin(conn, batch)
            start = 0
            for index, op in enumerate(batch):
                if op.kind == CALL:
                    self._bulk(conn, batch[start:index], results)
                    results.append(self._call(conn, op))
                    start = index + 1
            self._bulk(conn, batch[start:], results)
            conn.execute("COMMIT")
        except Exception as exc:
            self.failure = exc
            if is_storage_error(exc):
                log.error("journal batch of %d operations rolled back: storage failing: %s", len(batch), exc)
            else:
                log.exception("journal batch of %d operations failed; rolled back", len(batch))
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._load_counters(conn)
            self._undo_lookups()
            return [(op.future, None, exc) for op in batch if op.future is not None]
        self.commits += 1
        self.operations += len(batch)
        for future, _, error in results:
            if future is None and error is not None:
                log.error("journal background operation failed: %r", error)
        return [(f, v, e) for f, v, e in results if f is not None]

    def _undo_lookups(self) -> None:
        """Take the rolled-back batch's appends and done marks out of the in-memory
        lookups again (without reading the storage, which may be what failed)."""
        for pair in self._undo_keys:
            self.dedup.pop(pair, None)
        for seq in self._undo_opened:
            self.open_events.pop(seq, None)
        for seq, owner in self._undo_closed:
            self.open_events[seq] = owner
        for pair in self._undo_outbox:
            self.outbox_keys.pop(pair, None)
        for key in self._undo_receipts:
            self.receipt_keys.pop(key, None)
        self._outbox_seq.update(self._undo_outbox_seq)

    @staticmethod
    def _begin(conn: sqlite3.Connection, batch: list[Op]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if not is_storage_error(exc) or any(op.kind != CALL for op in batch):
                raise
            conn.execute("BEGIN")  # a read-only storage still answers the calls that only read

    def _call(self, conn: sqlite3.Connection, op: Op) -> tuple[Future | None, Any, BaseException | None]:
        conn.execute("SAVEPOINT call")
        try:
            value = op.args[0](conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO call")
            conn.execute("RELEASE call")
            return op.future, None, exc
        conn.execute("RELEASE call")
        return op.future, value, None

    def _bulk(
        self,
        conn: sqlite3.Connection,
        ops: list[Op],
        results: list[tuple[Future | None, Any, BaseException | None]],
    ) -> None:
        if not ops:
            return
        now = self.wall()
        appends = [op for op in ops if op.kind == APPEND]
        if appends:
            self._appends(conn, appends, now, results)
        runs = [row for op in ops if op.kind == RUN for row in op.args[0]]
        if runs:
            conn.executemany("INSERT OR IGNORE INTO run_members(seq, run_id) VALUES (?, ?)", runs)
        outbox = [op for op in ops if op.kind == OUTBOX]
        if outbox:
            self._outbox(conn, outbox, now, results)
        receipts = [op.args for op in ops if op.kind == RECEIPT]
        if receipts:
            self._receipts(conn, receipts, now)
        done = [row for op in ops if op.kind == DONE for row in op.args[0]]
        if done:
            conn.executemany("INSERT OR REPLACE INTO done_marks(at, status, seq) VALUES (?, ?, ?)", done)
            open_events = self.open_events
            closed = self._undo_closed
            for row in done:
                owner = open_events.pop(row[2], None)
                if owner is not None:
                    closed.append((row[2], owner))
        audit = [(now, *op.args) for op in ops if op.kind == AUDIT]
        if audit:
            conn.executemany(AUDIT_INSERT.replace("%s", "?"), audit)
        results.extend((op.future, None, None) for op in ops if op.kind in (RUN, RECEIPT, DONE, AUDIT))

    def _appends(
        self,
        conn: sqlite3.Connection,
        ops: list[Op],
        now: float,
        results: list[tuple[Future | None, Any, BaseException | None]],
    ) -> None:
        seen = self.dedup
        open_events = self.open_events
        events = []
        dedup = []
        for op in ops:
            bot, key, session, kind, payload = op.args
            if key is not None:
                if (bot, key) in seen:
                    results.append((op.future, None, None))
                    continue
                seen[(bot, key)] = now
                dedup.append((bot, key, now))
            seq = self._next_seq
            self._next_seq += 1
            events.append((seq, bot, session, kind, payload, now))
            open_events[seq] = (bot, session)
            results.append((op.future, seq, None))
        self._undo_keys += [(bot, key) for bot, key, _ in dedup]
        self._undo_opened += [row[0] for row in events]
        if events:
            conn.executemany(
                "INSERT INTO event_log(seq, bot, session, type, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                events,
            )
        if dedup:
            conn.executemany("INSERT INTO dedup(bot, key, at) VALUES (?, ?, ?)", dedup)

    def _receipts(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], now: float) -> None:
        """Append new receipts; a key stored before is updated in its row (found in
        memory, so one key keeps one row and no index on the key is needed)."""
        inserts = []
        updates = []
        known = self.receipt_keys
        for key, bot, run_id, chat, message_id, status, error in rows:
            if status != "sent":
                self.kept_runs.add(run_id)
            row_id = self.receipt_row(key)
            if row_id is not None:
                updates.append((bot, run_id, chat, message_id, status, error, now, row_id))
                continue
            row_id = self._next_receipt_id
            self._next_receipt_id += 1
            known[key] = (row_id, now, run_id)
            self._undo_receipts.append(key)
            inserts.append((row_id, key, bot, run_id, chat, message_id, status, error, now))
        if inserts:
            conn.executemany(
                "INSERT INTO receipts(id, key, bot, run_id, chat, message_id, status, error, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
        if updates:
            conn.executemany(
                "UPDATE receipts SET bot=?, run_id=?, chat=?, message_id=?, status=?, error=?, at=? "
                "WHERE id=?",
                updates,
            )

    def _outbox(
        self,
        conn: sqlite3.Connection,
        ops: list[Op],
        now: float,
        results: list[tuple[Future | None, Any, BaseException | None]],
    ) -> None:
        known = self.outbox_keys
        repeats = {
            known[(op.args[0], op.args[3])][0]: (op.args[0], op.args[3])
            for op in ops
            if op.args[3] is not None and (op.args[0], op.args[3]) in known
        }
        stored: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        ids = list(repeats)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT id, seq, payload FROM outbox WHERE id IN ({marks})"
            for row_id, earlier_seq, body in conn.execute(query, chunk):
                stored[repeats[row_id]] = (earlier_seq, orjson.loads(body))
        inserts = []
        for op in ops:
            bot, chat, payload, ikey = op.args
            earlier = stored.get((bot, ikey)) if ikey is not None else None
            if earlier is not None:
                results.append((op.future, (earlier[0], earlier[1], False), None))
                continue
            counter = (bot, chat)
            seq = self._outbox_seq.get(counter, 0)
            self._undo_outbox_seq.setdefault(counter, seq)
            seq += 1
            self._outbox_seq[counter] = seq
            body = {**payload, "seq": seq}
            row_id = self._next_outbox_id
            self._next_outbox_id += 1
            if ikey is not None:
                stored[(bot, ikey)] = (seq, body)
                known[(bot, ikey)] = (row_id, now)
                self._undo_outbox.append((bot, ikey))
            inserts.append((row_id, bot, chat, seq, orjson.dumps(body), now, ikey))
            results.append((op.future, (seq, body, True), None))
        if inserts:
            conn.executemany(
                "INSERT INTO outbox(id, bot, chat, seq, payload, at, ikey) VALUES (?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )


#: SQLite primary result codes that mean "the storage cannot write now" (disk full,
#: I/O error, read-only file or mount, cannot open, locked too long, out of memory)
_STORAGE_CODES = frozenset(
    getattr(sqlite3, name)
    for name in (
        "SQLITE_FULL",
        "SQLITE_IOERR",
        "SQLITE_READONLY",
        "SQLITE_CANTOPEN",
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_NOMEM",
        "SQLITE_PROTOCOL",
    )
)


def _migrate_outbox(conn: sqlite3.Connection) -> None:
    """The earlier outbox (keyed by (bot, chat, seq), indexed by time and key) becomes
    a rowid table in storage order with one index, by chat."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(outbox)")]
    if not columns or "id" in columns:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE outbox RENAME TO outbox_before")
        conn.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, bot TEXT NOT NULL, chat TEXT NOT NULL, "
            "seq INTEGER NOT NULL, payload BLOB NOT NULL, at REAL NOT NULL, ikey TEXT)"
        )
        conn.execute(
            "INSERT INTO outbox(bot, chat, seq, payload, at, ikey) "
            "SELECT bot, chat, seq, payload, at, ikey FROM outbox_before ORDER BY at, bot, chat, seq"
        )
        conn.execute("DROP TABLE outbox_before")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate_receipts(conn: sqlite3.Connection) -> None:
    """The earlier receipts (keyed by ``key``, indexed by time) become a rowid table in
    storage order without indexes (keys are found in memory, see ``Writer``)."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(receipts)")]
    if not columns or "id" in columns:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE receipts RENAME TO receipts_before")
        conn.execute(
            "CREATE TABLE receipts (id INTEGER PRIMARY KEY, key TEXT NOT NULL, bot TEXT NOT NULL, "
            "run_id INTEGER NOT NULL, chat TEXT NOT NULL, message_id TEXT, status TEXT NOT NULL, "
            "error TEXT, at REAL NOT NULL)"
        )
        conn.execute(
            "INSERT INTO receipts(key, bot, run_id, chat, message_id, status, error, at) "
            "SELECT key, bot, run_id, chat, message_id, status, error, at FROM receipts_before "
            "ORDER BY at, key"
        )
        conn.execute("DROP TABLE receipts_before")  # and its index by time
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate(conn: sqlite3.Connection) -> None:
    """A journal of the earlier layout (``events`` a table with its done columns and
    indexes, ``dedup`` keyed by (bot, key)) becomes the append-only one, in one
    transaction; the old columns stay in ``event_log``, unused."""
    kind = conn.execute("SELECT type FROM sqlite_master WHERE name='events'").fetchone()
    if kind is None or kind[0] != "table":
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for index in ("events_pending", "events_done", "dedup_at"):
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        conn.execute(
            "CREATE TABLE done_marks (seq INTEGER PRIMARY KEY, at REAL NOT NULL, status TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO done_marks(seq, at, status) "
            "SELECT seq, done_at, COALESCE(status, 'done') FROM events WHERE done_at IS NOT NULL"
        )
        conn.execute("ALTER TABLE events RENAME TO event_log")
        conn.execute("ALTER TABLE dedup RENAME TO dedup_by_key")
        conn.execute("CREATE TABLE dedup (bot TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL)")
        conn.execute("INSERT INTO dedup(bot, key, at) SELECT bot, key, at FROM dedup_by_key ORDER BY at")
        conn.execute("DROP TABLE dedup_by_key")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def is_storage_error(error: BaseException) -> bool:
    """True when ``error`` is the storage failing (it may heal: space is freed, the
    mount comes back), as opposed to a bug or a constraint violation."""
    if isinstance(error, OSError | MemoryError):
        return True
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return (code & 0xFF) in _STORAGE_CODES
        return isinstance(error, sqlite3.OperationalError)
    return False


def _settle_one(future: Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _settle_all(results: list[tuple[Future, Any, BaseException | None]]) -> None:
    for future, value, error in results:
        _settle_one(future, value, error)


def settle_all(results: list[tuple[Future, Any, BaseException | None]]) -> None:
    _settle_all(results)


class Syncer:
    """The thread that makes commits durable: ``request(n)`` asks for an fsync
    covering batch ``n``; ``on_synced(n)`` is called on the loop once done.
    Requests that pile up while an fsync runs are covered by the next one."""

    def __init__(
        self,
        path: str,
        loop: asyncio.AbstractEventLoop,
        on_synced: Callable[[int], None],
        on_failed: Callable[[BaseException], None],
        fsync: bool,
        checkpoint_interval: float = 1.0,
    ) -> None:
        self.path = path
        self.loop = loop
        self.on_synced = on_synced
        self.on_failed = on_failed
        self.fsync = fsync
        self.checkpointer = Checkpointer(path, checkpoint_interval)
        self._wake = threading.Condition()
        self._requested = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="journal-sync", daemon=True)

    def start(self) -> None:
        self.checkpointer.start()
        self._thread.start()

    def request(self, generation: int) -> None:
        with self._wake:
            self._requested = generation
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        self.checkpointer.stop()  # after the last sync: its final checkpoint covers everything

    def _run(self) -> None:
        wal = self.path + "-wal"
        fd = os.open(wal, os.O_RDONLY)
        _fsync_directory(wal)  # the WAL file's own name must survive a power cut too
        checkpointer = self.checkpointer
        done = 0
        try:
            while True:
                with self._wake:
                    while self._requested == done and not self._stopping:
                        self._wake.wait()
                    target, stopping = self._requested, self._stopping
                if target != done:
                    try:
                        if self.fsync:
                            os.fsync(fd)
                    except OSError as exc:
                        self.loop.call_soon_threadsafe(self.on_failed, exc)
                        return
                    done = target
                    checkpointer.dirty = True
                    self.loop.call_soon_threadsafe(self.on_synced, done)
                if stopping:
                    return
        finally:
            os.close(fd)


class Checkpointer:
    """WAL checkpoints on their own thread: a PASSIVE checkpoint (it never
    blocks the writer) every ``interval`` seconds while commits were synced
    since the last one, and a last one at ``stop``. A failed checkpoint is
    retried at the next turn; the WAL only grows meanwhile."""

    def __init__(self, path: str, interval: float) -> None:
        self.path = path
        self.interval = interval
        #: set by the Syncer after each fsync (a plain store: no lock on the sync path)
        self.dirty = False
        self.checkpoints = 0
        self.turns = 0  # wake-ups, checkpoint or not
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=True)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA synchronous=FULL")
            while True:
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(self.interval)
                    stopping = self._stopping
                self.turns += 1
                if self.dirty or stopping:
                    self.dirty = False
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        self.checkpoints += 1
                    except sqlite3.Error as exc:
                        self.dirty = True
                        log.warning("journal checkpoint failed (will retry): %s", exc)
                if stopping:
                    return
        finally:
            conn.close()


def _fsync_directory(path: str) -> None:
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
