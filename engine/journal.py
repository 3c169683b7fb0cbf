"""The durable journal: every accepted event, its dedup key, done marks,
outbound receipts, session state and stored bot output, in one SQLite file.

Operations queued during one turn of the event loop are applied together in
one transaction on the loop's thread; a sync thread then fsyncs the WAL and the
callers' futures resolve (group commit; see ``engine.journal_writer``). With
``synchronous: FULL`` a resolved ``append`` survives kill -9 and power loss;
with ``NORMAL`` it resolves at commit and survives kill -9 only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson

from callboard.engine.clock import Clock, LoopClock, TimerHandle
from callboard.engine.events import Event, SessionKey, decode_event
from callboard.engine.journal_writer import (
    APPEND,
    CALL,
    DONE,
    OUTBOX,
    Op,
    QueuedWrites,
    Syncer,
    Writer,
    is_storage_error,
    settle_all,
)
from callboard.engine.supervision import Backoff

log = logging.getLogger("callboard.journal")
T = TypeVar("T")

Synchronous = Literal["FULL", "NORMAL"]


class JournalClosed(RuntimeError):
    """The journal is closed (or never opened)."""


class JournalUnusable(RuntimeError):
    """The journal file cannot be opened: the message says what is wrong and what to do."""


class StorageUnavailable(Exception):
    """The journal cannot write now (disk full, I/O error, read-only storage).

    Not a handler failure: new events are refused (nothing is acknowledged), work
    already accepted stays pending, and a probe on the engine clock retries with
    backoff until a write commits again; then everything resumes by itself."""


#: seqs per query while reading pending events' payloads
PENDING_CHUNK = 500

#: probes of a failing storage: soon at first, then at most every 30 s
STORAGE_PROBE = Backoff(min=0.25, max=30.0, factor=2.0, jitter=0.2)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An accepted event not yet marked done, as replay hands it back."""

    seq: int
    event: Event
    run_id: int | None  # set when a handler run for it had already sent replies


@dataclass(frozen=True, slots=True)
class Receipt:
    key: str
    run_id: int
    chat: str
    message_id: str | None
    status: str
    error: str | None


class Journal(QueuedWrites):
    """SQLite journal with group commit. ``await open()`` before use, ``await close()`` after."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous = "FULL",
        retention_seconds: float = 7 * 86400,
        dedup_window_seconds: float = 86400,
        clock: Clock | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.synchronous = synchronous
        self.retention_seconds = retention_seconds
        self.dedup_window_seconds = dedup_window_seconds
        self._writer = Writer(path, self.wall)
        self._conn: sqlite3.Connection | None = None
        self._syncer: Syncer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Op] = []
        self._flush_scheduled = False
        self._generation = 0
        self._unsynced: list[tuple[int, list[tuple[asyncio.Future[Any], Any, BaseException | None]]]] = []
        #: stored-output writes queued for the next batch (a done mark then shares its fate)
        self._outbox_queued = 0
        #: done marks whose callers hear at commit, not at fsync (see ``mark_done``)
        self._at_commit: set[asyncio.Future[Any]] = set()
        self._failed: BaseException | None = None
        # storage health: while ``_storage_error`` is set, appends and outbox writes are
        # refused at once, background writes (done marks, runs, receipts) are held in
        # order, and a probe retries them with backoff
        self._storage_error: BaseException | None = None
        self._held: list[Op] = []
        self._probe_attempt = 0
        self._probe_timer: TimerHandle | None = None
        self._writable: asyncio.Event | None = None
        #: operations refused or failed because the storage failed (a run that saw this
        #: move while it ran cannot trust what it wrote, and runs again)
        self.storage_errors = 0

    def wall(self) -> float:
        """Wall-clock seconds for stored timestamps: the engine clock's, so a test
        ages events past retention and dedup windows with a ``ManualClock``."""
        clock = self.clock
        return clock.wall() if clock is not None else time.time()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._conn is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        if self.clock is None:
            self.clock = LoopClock(loop)
        self._writable = asyncio.Event()
        self._writable.set()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._writer.dedup_window = self.dedup_window_seconds
            self._conn = self._writer.connect()
        except (sqlite3.Error, OSError) as exc:
            raise JournalUnusable(_open_problem(self.path, exc)) from None
        self._syncer = Syncer(
            self.path, loop, self._on_synced, self._on_sync_failed, fsync=self.synchronous == "FULL"
        )
        self._syncer.start()

    async def close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
            self._probe()  # one last try, so held done marks are not lost needlessly
            if self._probe_timer is not None:
                self._probe_timer.cancel()
                self._probe_timer = None
        if self._held:
            log.error(
                "journal %s closed while storage is failing: %d done marks/receipts not written "
                "(their events are replayed at the next start)",
                self.path,
                len(self._held),
            )
        self._flush()
        await self._wait_synced()
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            await asyncio.to_thread(syncer.stop)
        self._conn = None
        conn.close()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def batched_ops(self) -> int:
        return self._writer.operations

    def _op(self, kind: int, args: tuple[Any, ...], wait: bool) -> asyncio.Future[Any]:
        if self._conn is None or self._loop is None:
            raise JournalClosed(f"journal {self.path} is not open")
        if self._failed is not None:
            raise JournalClosed(f"journal {self.path} failed: {self._failed}")
        future = self._loop.create_future() if wait else None
        if self._storage_error is not None:
            if future is None:
                self._held.append(Op(kind, args, None))  # written once the storage is back
                return future  # type: ignore[return-value]
            if kind in (APPEND, OUTBOX):  # nothing new is accepted while writes fail
                self.storage_errors += 1
                future.set_exception(self._unavailable())
                return future
        self._pending.append(Op(kind, args, future))
        if kind == OUTBOX:
            self._outbox_queued += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future  # type: ignore[return-value]

    def _flush(self) -> None:
        """Apply everything queued since the last flush as one transaction."""
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        self._outbox_queued = 0
        if not batch or self._conn is None:
            return
        conn = self._conn
        before = conn.total_changes
        results = self._writer.apply(conn, batch)
        failure = self._writer.failure
        if failure is not None:
            if is_storage_error(failure):
                self._held[:0] = [op for op in batch if op.future is None]
                results = self._storage_failed(failure, results)
            self._settle_at_commit(results)
            settle_all(results)
            return
        if any(error is not None and is_storage_error(error) for _, _, error in results):
            results = self._storage_failed(
                next(e for _, _, e in results if e is not None and is_storage_error(e)), results
            )
        self._settle_at_commit(results)
        if conn.total_changes == before:
            settle_all(results)  # nothing written: nothing to make durable
            return
        self._generation += 1
        self._unsynced.append((self._generation, results))
        assert self._syncer is not None
        self._syncer.request(self._generation)

    def _settle_at_commit(self, results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        """Tell the callers of done marks that wait for their commit (not their fsync)
        the batch's outcome now."""
        if not self._at_commit:
            return
        for future, value, error in results:
            if future in self._at_commit:
                self._at_commit.discard(future)
                settle_all([(future, value, error)])

    def _on_synced(self, generation: int) -> None:
        while self._unsynced and self._unsynced[0][0] <= generation:
            settle_all(self._unsynced.pop(0)[1])

    def _on_sync_failed(self, error: BaseException) -> None:
        log.critical("journal %s: fsync failed, refusing further writes: %s", self.path, error)
        self._failed = error
        for _, results in self._unsynced:
            settle_all([(future, None, error) for future, _, _ in results])
        self._unsynced.clear()

    # ------------------------------------------------------------------ storage health

    @property
    def storage_problem(self) -> str | None:
        """Why the journal cannot write now (for /readyz), or None when it can."""
        if self._failed is not None:
            return f"journal fsync failed, restart needed: {self._failed}"
        if self._storage_error is not None:
            return f"journal storage failing, retrying: {self._storage_error}"
        return None

    def _unavailable(self) -> StorageUnavailable:
        return StorageUnavailable(f"journal {self.path} cannot write: {self._storage_error}")

    def _storage_failed(
        self, error: BaseException, results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """Enter (or stay in) the failing state; storage errors reach callers as
        ``StorageUnavailable``."""
        if self._storage_error is None:
            log.error(
                "journal %s: storage failing (%s); refusing new events until it recovers", self.path, error
            )
            self._probe_attempt = 0
            assert self._writable is not None
            self._writable.clear()
        self._storage_error = error
        self._schedule_probe()
        out: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for future, value, exc in results:
            if exc is not None and is_storage_error(exc):
                self.storage_errors += 1
                unavailable = self._unavailable()
                unavailable.__cause__ = exc
                exc = unavailable
            out.append((future, value, exc))
        return out

    def _schedule_probe(self) -> None:
        if self._probe_timer is not None or self.clock is None:
            return
        delay = STORAGE_PROBE.delay(self._probe_attempt)
        self._probe_attempt += 1
        self._probe_timer = self.clock.call_later(delay, self._probe)

    def _probe(self) -> None:
        """One write (the held operations and a health row) in one transaction: if it
        commits, the storage is back."""
        self._probe_timer = None
        if self._conn is None or self._storage_error is None:
            return
        held, self._held = self._held, []
        probe = Op(CALL, (_touch_health,), None)
        results = self._writer.apply(self._conn, [*held, probe])
        failure = self._writer.failure
        if failure is not None:
            self._held[:0] = held
            if is_storage_error(failure):
                self._storage_error = failure
                self._schedule_probe()
            else:  # not the storage after all: do not hold writes forever
                log.error("journal %s: probe failed: %r; accepting writes again", self.path, failure)
                self._recovered()
            settle_all(results)
            return
        log.warning(
            "journal %s: storage writable again after %d probes; resuming (%d held writes applied)",
            self.path,
            self._probe_attempt,
            len(held),
        )
        self._generation += 1
        self._unsynced.append((self._generation, results))
        assert self._syncer is not None
        self._syncer.request(self._generation)
        self._recovered()

    def _recovered(self) -> None:
        self._storage_error = None
        self._probe_attempt = 0
        assert self._writable is not None
        self._writable.set()
        if self._held:
            self._pending[:0], self._held = self._held, []
            if not self._flush_scheduled and self._loop is not None:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    async def wait_writable(self) -> None:
        """Until the storage accepts writes (at once when it does now)."""
        if self._writable is not None:
            await self._writable.wait()

    async def write_probe(self) -> None:
        """Commit and sync one small write (for /readyz); raises ``StorageUnavailable``
        (or ``JournalClosed``) when the journal cannot write."""
        if self._storage_error is not None:
            raise self._unavailable()
        await self._submit(_touch_health)

    async def _wait_synced(self) -> None:
        """Until every batch applied so far is durable."""
        if not self._unsynced or self._loop is None:
            return
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._unsynced[-1][1].append((waiter, None, None))
        await waiter

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        return self._op(CALL, (fn,), True)

    async def flush(self) -> None:
        """Wait until everything queued before this call is durable."""
        if self._conn is None:
            raise JournalClosed(f"journal {self.path} is not open")
        self._flush()
        await self._wait_synced()

    # ------------------------------------------------------------------ events

    def mark_done(self, seqs: Sequence[int], status: str = "done") -> asyncio.Future[None] | None:
        """Record that these events were handled (durable with the next commit).

        It commits in the same transaction as the stored output queued before it in
        this loop turn (a handler's pipelined web replies), so a crash keeps both or
        neither. While such output is queued it returns a future that resolves at that
        commit (not its fsync) and fails with ``StorageUnavailable`` when the
        transaction did not commit: then neither was stored and the caller runs its
        events again. Otherwise None: the mark is a background write (held and
        retried while the storage fails)."""
        rows = [(self.wall(), status, seq) for seq in seqs]
        if not self._outbox_queued:
            self._op(DONE, (rows,), False)
            return None
        future: asyncio.Future[None] = self._op(DONE, (rows,), True)
        if not future.done():
            self._at_commit.add(future)
        return future

    async def pending(self, bot: str) -> list[PendingEvent]:
        """Events of ``bot`` not marked done, oldest first, for replay."""
        return await self._pending_where(lambda owner: owner[0] == bot)

    async def pending_for_session(self, bot: str, session: SessionKey) -> list[PendingEvent]:
        owner = (bot, session.name)
        return await self._pending_where(lambda of: of == owner)

    async def _pending_where(self, wanted: Callable[[tuple[str, str]], bool]) -> list[PendingEvent]:
        """Which events are pending comes from the writer's in-memory set (kept with
        every append and done mark, rebuilt on open); their payloads from the table."""
        open_events = self._writer.open_events

        def op(conn: sqlite3.Connection) -> list[tuple[int, bytes, int | None]]:
            seqs = sorted(seq for seq, owner in open_events.items() if wanted(owner))
            rows: list[tuple[int, bytes, int | None]] = []
            for start in range(0, len(seqs), PENDING_CHUNK):
                chunk = seqs[start : start + PENDING_CHUNK]
                rows += conn.execute(
                    "SELECT e.seq, e.payload, m.run_id FROM event_log e LEFT JOIN run_members m "
                    f"ON m.seq = e.seq WHERE e.seq IN ({', '.join('?' * len(chunk))}) ORDER BY e.seq",
                    chunk,
                ).fetchall()
            return rows

        rows = await self._submit(op)
        return [PendingEvent(seq, decode_event(payload), run_id) for seq, payload, run_id in rows]

    async def event_status(self, seq: int) -> str | None:
        """'pending', the done status, or None when unknown (for tests and admin)."""

        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT done_at, status FROM events WHERE seq=?", (seq,)).fetchone()
            if row is None:
                return None
            return "pending" if row[0] is None else str(row[1])

        return await self._submit(op)

    # ------------------------------------------------------------------ receipts

    async def receipt(self, key: str) -> Receipt | None:
        writer = self._writer

        def op(conn: sqlite3.Connection) -> Receipt | None:
            row_id = writer.receipt_row(key)  # the key's row, from memory (see Writer.receipt_keys)
            if row_id is None:
                return None
            row = conn.execute(
                "SELECT key, run_id, chat, message_id, status, error FROM receipts WHERE id=?", (row_id,)
            ).fetchone()
            return Receipt(*row) if row else None

        return await self._submit(op)

    # ------------------------------------------------------------------ session state

    async def load_state(self, bot: str, session: SessionKey) -> dict[str, Any] | None:
        name = session.name

        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT state FROM session_state WHERE bot=? AND session=?", (bot, name)
            ).fetchone()
            return row[0] if row else None

        blob = await self._submit(op)
        return orjson.loads(blob) if blob is not None else None

    async def save_state(self, bot: str, session: SessionKey, state: dict[str, Any]) -> None:
        blob = orjson.dumps(state)
        name = session.name
        await self._submit(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO session_state(bot, session, state, updated) VALUES (?, ?, ?, ?)",
                (bot, name, blob, self.wall()),
            )
        )

    # ------------------------------------------------------------------ stored bot output

    async def read_outbox(
        self, bot: str, chat: str, since: int = 0, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        """Items stored for ``chat`` after ``since``, returned once they are durable
        (an item is committed, and so readable, before its fsync)."""

        def op(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return conn.execute(
                "SELECT seq, payload FROM outbox WHERE bot=? AND chat=? AND seq>? ORDER BY seq LIMIT ?",
                (bot, chat, since, limit),
            ).fetchall()

        rows = await self._submit(op)
        await self._wait_synced()
        return [(seq, orjson.loads(payload)) for seq, payload in rows]

    # ------------------------------------------------------------------ retention and stats

    #: rows deleted per statement while pruning, so the loop is never held for long
    PRUNE_CHUNK = 2000

    async def prune(self) -> dict[str, int]:
        """Drop done events past retention, dedup keys past the window, and the
        receipts and stored output that only served them. Works in small
        chunks, letting other work run in between."""
        now = self.wall()
        horizon = now - self.retention_seconds
        dedup_horizon = now - self.dedup_window_seconds
        chunk = self.PRUNE_CHUNK
        writer = self._writer
        writer.forget_dedup(dedup_horizon)
        oldest = await self._submit(writer.oldest_pending)
        key_horizon = writer.outbox_key_horizon(oldest)
        writer.forget_outbox_keys(key_horizon)
        writer.forget_receipt_keys(key_horizon, horizon)
        statements: dict[str, tuple[str | None, float]] = {
            "events": (None, horizon),  # two tables: see _delete_done_events
            "dedup": (
                "DELETE FROM dedup WHERE rowid IN (SELECT rowid FROM dedup WHERE at < ? LIMIT ?)",
                dedup_horizon,
            ),
            "receipts": (
                "DELETE FROM receipts WHERE id IN (SELECT id FROM receipts WHERE at < ? LIMIT ?)",
                horizon,
            ),
            "sandbox_audit": (
                "DELETE FROM sandbox_audit WHERE id IN (SELECT id FROM sandbox_audit WHERE at < ? LIMIT ?)",
                horizon,
            ),
            "outbox": (
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE at < ? LIMIT ?)",
                horizon,
            ),
            "run_members": (
                "DELETE FROM run_members WHERE seq IN (SELECT seq FROM run_members "
                "WHERE seq < ? AND seq NOT IN (SELECT seq FROM event_log) LIMIT ?)",
                float("inf"),
            ),
        }
        counts: dict[str, int] = {}
        for name, (sql, bound) in statements.items():
            total = 0
            while True:
                job = _deleter(sql, bound, chunk) if sql is not None else _delete_done_events(bound, chunk)
                deleted = await self._submit(job)
                total += deleted
                if deleted < chunk:
                    break
                await asyncio.sleep(0)
            counts[name] = total
        await self._submit(writer.reload_kept_runs)
        return counts

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL for tests and diagnostics."""
        return await self._submit(lambda conn: conn.execute(sql, tuple(params)).fetchall())


def _open_problem(path: str, error: BaseException) -> str:
    """One line for an operator: what is wrong with the journal file and what to do."""
    text = str(error).lower()
    if isinstance(error, OSError) or "unable to open" in text or "readonly" in text or "read-only" in text:
        reason = getattr(error, "strerror", None) or str(error)
        return (
            f"journal {path}: cannot open or create it ({reason}); check that its directory "
            "exists, is writable by this user and is on a writable, mounted file system"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"journal {path}: the file is not a usable SQLite database (corrupt, truncated or another "
            "kind of file); move it aside to start with an empty journal, or restore it from a backup"
        )
    return f"journal {path}: cannot be opened: {error}"


def _touch_health(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT OR REPLACE INTO health(id, at) VALUES (1, ?)", (time.time(),))


def _delete_done_events(horizon: float, chunk: int) -> Callable[[sqlite3.Connection], int]:
    """Events marked done before ``horizon``, and their done marks (a chunk at a time)."""

    def delete(conn: sqlite3.Connection) -> int:
        seqs = [
            row[0]
            for row in conn.execute("SELECT seq FROM done_marks WHERE at < ? LIMIT ?", (horizon, chunk))
        ]
        if seqs:
            marks = ", ".join("?" * len(seqs))
            conn.execute(f"DELETE FROM event_log WHERE seq IN ({marks})", seqs)
            conn.execute(f"DELETE FROM done_marks WHERE seq IN ({marks})", seqs)
        return len(seqs)

    return delete


def _deleter(sql: str, bound: float, chunk: int) -> Callable[[sqlite3.Connection], int]:
    def delete(conn: sqlite3.Connection) -> int:
        return int(conn.execute(sql, (bound, chunk)).rowcount)

    return delete
