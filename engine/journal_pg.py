"""The journal on PostgreSQL, shared by the nodes of a cluster.

Same interface (``callboard.engine.journal_store.JournalStore``) and the same
semantics as the SQLite journal: operations queued while a batch is in flight
are applied together in the next transaction (group commit; one batch at a
time, so writes commit in the order they were queued), a caller's future
resolves once PostgreSQL has committed its batch (``synchronous_commit`` as
the server sets it, durable by default), and a failing server (connection
lost, disk full, read-only, shutting down) puts the journal in the same
storage-failure state: new events refused, background writes held in order, a
probe on the engine clock with backoff.

What differs because several nodes share one database: sequence numbers come
from a PostgreSQL sequence, dedup keys are claimed with ``INSERT .. ON
CONFLICT DO NOTHING`` (two nodes receiving the same platform retry store it
once), and stored-output counters live in a table (an upsert per item).
Lookups stay in the database, not in memory as the SQLite journal's do
(another node may have written the row: a partition taken over replays runs
whose sends it never saw), so ``receipts`` keeps its primary key on ``key``,
which also keeps one row per key across nodes. It is written only for
non-idempotent platforms' sends, not per event, into PostgreSQL's shared buffer
cache; the web chat's hot path (events, stored output, done marks) never
touches it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from callboard.engine.clock import Clock, LoopClock, TimerHandle
from callboard.engine.events import SessionKey, decode_event
from callboard.engine.journal import (
    STORAGE_PROBE,
    JournalClosed,
    JournalUnusable,
    PendingEvent,
    Receipt,
    StorageUnavailable,
)
from callboard.engine.journal_writer import (
    APPEND,
    AUDIT,
    AUDIT_INSERT,
    CALL,
    DONE,
    OUTBOX,
    RECEIPT,
    RUN,
    Op,
    QueuedWrites,
    settle_all,
)

log = logging.getLogger("callboard.journal")
T = TypeVar("T")
Cursor = psycopg.AsyncCursor[Any]
Result = tuple[asyncio.Future[Any], Any, BaseException | None]
_Partial = tuple[asyncio.Future[Any] | None, Any, BaseException | None]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY,
    bot TEXT NOT NULL,
    session TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BYTEA NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    done_at DOUBLE PRECISION,
    status TEXT
);
CREATE INDEX IF NOT EXISTS events_pending ON events(bot, session, seq) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS events_done ON events(done_at) WHERE done_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS dedup (
    bot TEXT NOT NULL,
    key TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (bot, key)
);
CREATE INDEX IF NOT EXISTS dedup_at ON dedup(at);
CREATE TABLE IF NOT EXISTS receipts (
    key TEXT PRIMARY KEY,
    bot TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    chat TEXT NOT NULL,
    message_id TEXT,
    status TEXT NOT NULL,
    error TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_at ON receipts(at);
CREATE TABLE IF NOT EXISTS run_members (
    seq BIGINT PRIMARY KEY,
    run_id BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS session_state (
    bot TEXT NOT NULL,
    session TEXT NOT NULL,
    state BYTEA NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (bot, session)
);
CREATE TABLE IF NOT EXISTS outbox (
    bot TEXT NOT NULL,
    chat TEXT NOT NULL,
    seq BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    ikey TEXT,
    PRIMARY KEY (bot, chat, seq)
);
CREATE INDEX IF NOT EXISTS outbox_at ON outbox(at);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_by_key ON outbox(bot, ikey);
CREATE TABLE IF NOT EXISTS outbox_counters (
    bot TEXT NOT NULL,
    chat TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (bot, chat)
);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS sandbox_audit (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
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
    duration DOUBLE PRECISION NOT NULL,
    bytes_in BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_audit_at ON sandbox_audit(at);
"""

#: any fixed number: nodes starting together create the schema one at a time
_SCHEMA_LOCK = 0x63616C6C

#: SQLSTATE classes that mean "the server cannot write now" (connection lost,
#: disk full or out of memory, shutting down, I/O error) and read-only mode
_STORAGE_CLASSES = ("08", "53", "57", "58")
_STORAGE_STATES = frozenset({"25006"})


def is_storage_error(error: BaseException) -> bool:
    """True when ``error`` is the database failing (it may heal), not a bug."""
    if isinstance(error, OSError | MemoryError | psycopg.OperationalError):
        return True
    state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and (state[:2] in _STORAGE_CLASSES or state in _STORAGE_STATES)


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ""
    return parts._replace(netloc=f"{user}{host}{port}").geturl()


def _after_output(op: Op) -> bool:
    """Stored output, or a done mark that commits with stored output."""
    return op.kind == OUTBOX or (op.kind == DONE and len(op.args) > 1)


class PgJournal(QueuedWrites):
    """PostgreSQL journal with group commit. ``await open()`` before use, ``await close()`` after."""

    def __init__(
        self,
        url: str,
        *,
        path: str,
        retention_seconds: float = 7 * 86400,
        dedup_window_seconds: float = 86400,
        clock: Clock | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.name = redact(url)
        self.path = path
        self.clock = clock
        self.retention_seconds = retention_seconds
        self.dedup_window_seconds = dedup_window_seconds
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Op] = []
        self._running: asyncio.Task[None] | None = None
        #: stored-output writes queued for the next batch, and in the batch running now
        self._outbox_queued = 0
        self._outbox_running = 0
        self._commits = 0
        self._operations = 0
        self._storage_error: BaseException | None = None
        self._held: list[Op] = []
        self._probe_attempt = 0
        self._probe_timer: TimerHandle | None = None
        self._probing: asyncio.Task[None] | None = None
        self._writable: asyncio.Event | None = None
        self.storage_errors = 0

    def wall(self) -> float:
        clock = self.clock
        return clock.wall() if clock is not None else time.time()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self.clock is None:
            self.clock = LoopClock(self._loop)
        self._writable = asyncio.Event()
        self._writable.set()
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
            name="callboard-journal",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await conn.execute(SCHEMA.encode())
        except Exception as exc:
            await pool.close()
            raise JournalUnusable(
                f"journal {self.name}: cannot connect or create the schema ({type(exc).__name__}: "
                f"{_first_line(exc)}); check that the server runs, is reachable and that the user "
                "may create tables in that database"
            ) from None
        self._pool = pool

    async def close(self) -> None:
        pool = self._pool
        if pool is None:
            return
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
            await self._probe_run()  # one last try, so held done marks are not lost needlessly
            if self._probe_timer is not None:
                self._probe_timer.cancel()
                self._probe_timer = None
        if self._probing is not None:
            await asyncio.gather(self._probing, return_exceptions=True)
        if self._held:
            log.error(
                "journal %s closed while storage is failing: %d done marks/receipts not written "
                "(their events are replayed at the next start)",
                self.name,
                len(self._held),
            )
        await self._drained()
        self._pool = None
        await pool.close()

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def commits(self) -> int:
        return self._commits

    @property
    def batched_ops(self) -> int:
        return self._operations

    # ------------------------------------------------------------------ group commit

    def _op(self, kind: int, args: tuple[Any, ...], wait: bool) -> asyncio.Future[Any]:
        if self._pool is None or self._loop is None:
            raise JournalClosed(f"journal {self.name} is not open")
        future = self._loop.create_future() if wait else None
        if self._storage_error is not None:
            if future is None:
                self._held.append(Op(kind, args, None))
                return future  # type: ignore[return-value]
            if kind in (APPEND, OUTBOX):
                self.storage_errors += 1
                future.set_exception(self._unavailable())
                return future
        self._pending.append(Op(kind, args, future))
        if kind == OUTBOX:
            self._outbox_queued += 1
        if self._running is None:
            self._running = self._loop.create_task(self._drain())
        return future  # type: ignore[return-value]

    async def _drain(self) -> None:
        """Apply what is queued, batch after batch; what arrives meanwhile forms the next."""
        try:
            await asyncio.sleep(0)  # let the rest of this loop turn queue its operations
            while self._pending:
                batch, self._pending = self._pending, []
                self._outbox_running, self._outbox_queued = self._outbox_queued, 0
                failure = await self._run_batch(batch)
                if failure is not None and self._outbox_running:
                    self._fail_dependents(failure)
                self._outbox_running = 0
        finally:
            self._running = None

    async def _run_batch(self, batch: list[Op]) -> BaseException | None:
        """Apply one batch; why it rolled back, or None when it committed."""
        assert self._pool is not None
        try:
            async with self._pool.connection(timeout=self.connect_timeout) as conn:
                results = await self._apply(conn, batch)
        except Exception as exc:
            results = [(op.future, None, exc) for op in batch if op.future is not None]
            if is_storage_error(exc):
                log.error("journal batch of %d operations rolled back: storage failing: %s", len(batch), exc)
                self._held[:0] = [op for op in batch if op.future is None]
                results = self._storage_failed(exc, results)
            else:
                log.exception("journal batch of %d operations failed; rolled back", len(batch))
            settle_all(results)
            return exc
        self._commits += 1
        self._operations += len(batch)
        storage = next((e for _, _, e in results if e is not None and is_storage_error(e)), None)
        if storage is not None:
            results = self._storage_failed(storage, results)
        settle_all(results)
        return None

    def _fail_dependents(self, error: BaseException) -> None:
        """A batch holding stored output rolled back: the done marks queued after it
        for that output (``mark_done`` while it ran) must not commit without it, nor
        may output queued after it (a session that did not wait for that commit may
        have replied again: its later replies must not be stored before the lost ones)."""
        dependents = [op for op in self._pending if _after_output(op)]
        if not dependents:
            return
        self._pending = [op for op in self._pending if not _after_output(op)]
        self._outbox_queued = 0
        results: list[Result] = [(op.future, None, error) for op in dependents if op.future is not None]
        settle_all(self._storage_failed(error, results) if is_storage_error(error) else results)

    async def _drained(self) -> None:
        while self._running is not None:
            await asyncio.wait({self._running})

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed."""
        if self._pool is None:
            raise JournalClosed(f"journal {self.name} is not open")
        await self._drained()

    async def _apply(
        self, conn: psycopg.AsyncConnection[Any], batch: list[Op], probe: bool = False
    ) -> list[Result]:
        results: list[_Partial] = []
        async with conn.transaction(), conn.cursor() as cur:
            start = 0
            for index, op in enumerate(batch):
                if op.kind == CALL:
                    await self._bulk(cur, batch[start:index], results)
                    results.append(await self._call(conn, cur, op))
                    start = index + 1
            await self._bulk(cur, batch[start:], results)
            if probe:
                await _touch_health(cur)
        for future, _, error in results:
            if future is None and error is not None:
                log.error("journal background operation failed: %r", error)
        return [(f, v, e) for f, v, e in results if f is not None]

    @staticmethod
    async def _call(conn: psycopg.AsyncConnection[Any], cur: Cursor, op: Op) -> _Partial:
        try:
            async with conn.transaction():  # a savepoint: a failed call leaves the batch intact
                value = await op.args[0](cur)
        except psycopg.OperationalError:
            raise  # the connection is gone: the whole batch failed
        except Exception as exc:
            return op.future, None, exc
        return op.future, value, None

    async def _bulk(self, cur: Cursor, ops: list[Op], results: list[_Partial]) -> None:
        if not ops:
            return
        now = self.wall()
        appends = [op for op in ops if op.kind == APPEND]
        if appends:
            await self._appends(cur, appends, now, results)
        runs = [row for op in ops if op.kind == RUN for row in op.args[0]]
        if runs:
            await cur.executemany(
                "INSERT INTO run_members(seq, run_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", runs
            )
        outbox = [op for op in ops if op.kind == OUTBOX]
        if outbox:
            await self._outbox(cur, outbox, now, results)
        receipts = [(*op.args, now) for op in ops if op.kind == RECEIPT]
        if receipts:
            await cur.executemany(
                "INSERT INTO receipts(key, bot, run_id, chat, message_id, status, error, at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                "bot=EXCLUDED.bot, run_id=EXCLUDED.run_id, chat=EXCLUDED.chat, "
                "message_id=EXCLUDED.message_id, status=EXCLUDED.status, error=EXCLUDED.error, "
                "at=EXCLUDED.at",
                receipts,
            )
        done = [row for op in ops if op.kind == DONE for row in op.args[0]]
        if done:
            await cur.executemany("UPDATE events SET done_at=%s, status=%s WHERE seq=%s", done)
        audit = [(now, *op.args) for op in ops if op.kind == AUDIT]
        if audit:
            await cur.executemany(AUDIT_INSERT, audit)
        results.extend((op.future, None, None) for op in ops if op.kind in (RUN, RECEIPT, DONE, AUDIT))

    @staticmethod
    async def _appends(cur: Cursor, ops: list[Op], now: float, results: list[_Partial]) -> None:
        keys: list[tuple[str, str]] = []
        for op in ops:
            if op.args[1] is not None and (op.args[0], op.args[1]) not in keys:
                keys.append((op.args[0], op.args[1]))
        claimed: set[tuple[str, str]] = set()
        if keys:
            await cur.execute(
                "INSERT INTO dedup(bot, key, at) SELECT b, k, %s "
                "FROM unnest(%s::text[], %s::text[]) AS t(b, k) ON CONFLICT DO NOTHING RETURNING bot, key",
                (now, [b for b, _ in keys], [k for _, k in keys]),
            )
            claimed = {(b, k) for b, k in await cur.fetchall()}
        fresh = []
        for op in ops:
            bot, key = op.args[0], op.args[1]
            if key is not None:
                if (bot, key) not in claimed:
                    results.append((op.future, None, None))  # seen before (or earlier in this batch)
                    continue
                claimed.discard((bot, key))
            fresh.append(op)
        if not fresh:
            return
        await cur.execute(
            "SELECT nextval(pg_get_serial_sequence('events', 'seq')) FROM generate_series(1, %s)",
            (len(fresh),),
        )
        seqs = sorted(int(row[0]) for row in await cur.fetchall())
        await cur.execute(
            "INSERT INTO events(seq, bot, session, type, payload, received_at) SELECT s, b, n, t, p, %s "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bytea[]) AS u(s, b, n, t, p)",
            (
                now,
                seqs,
                [op.args[0] for op in fresh],
                [op.args[2] for op in fresh],
                [op.args[3] for op in fresh],
                [op.args[4] for op in fresh],
            ),
        )
        results.extend((op.future, seq, None) for op, seq in zip(fresh, seqs, strict=True))

    @staticmethod
    async def _outbox(cur: Cursor, ops: list[Op], now: float, results: list[_Partial]) -> None:
        keys = [(op.args[0], op.args[3]) for op in ops if op.args[3] is not None]
        stored: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        if keys:
            await cur.execute(
                "SELECT o.bot, o.ikey, o.seq, o.payload FROM outbox o "
                "JOIN unnest(%s::text[], %s::text[]) AS k(b, i) ON o.bot = k.b AND o.ikey = k.i",
                ([b for b, _ in keys], [i for _, i in keys]),
            )
            for bot, ikey, seq, payload in await cur.fetchall():
                stored[(bot, ikey)] = (int(seq), orjson.loads(payload))
        inserts = []
        for op in ops:
            bot, chat, payload, ikey = op.args
            earlier = stored.get((bot, ikey)) if ikey is not None else None
            if earlier is not None:
                results.append((op.future, (earlier[0], earlier[1], False), None))
                continue
            await cur.execute(
                "INSERT INTO outbox_counters(bot, chat, seq) VALUES (%s, %s, 1) ON CONFLICT (bot, chat) "
                "DO UPDATE SET seq = outbox_counters.seq + 1 RETURNING seq",
                (bot, chat),
            )
            row = await cur.fetchone()
            assert row is not None
            seq = int(row[0])
            body = {**payload, "seq": seq}
            if ikey is not None:
                stored[(bot, ikey)] = (seq, body)
            inserts.append((bot, chat, seq, orjson.dumps(body), now, ikey))
            results.append((op.future, (seq, body, True), None))
        if inserts:
            await cur.executemany(
                "INSERT INTO outbox(bot, chat, seq, payload, at, ikey) VALUES (%s, %s, %s, %s, %s, %s)",
                inserts,
            )

    # ------------------------------------------------------------------ storage health

    @property
    def storage_problem(self) -> str | None:
        if self._storage_error is not None:
            return f"journal storage failing, retrying: {_first_line(self._storage_error)}"
        return None

    def _unavailable(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"journal {self.name} cannot write: {_first_line(self._storage_error or Exception())}"
        )

    def _storage_failed(self, error: BaseException, results: list[Result]) -> list[Result]:
        if self._storage_error is None:
            log.error(
                "journal %s: storage failing (%s); refusing new events until it recovers",
                self.name,
                _first_line(error),
            )
            self._probe_attempt = 0
            assert self._writable is not None
            self._writable.clear()
        self._storage_error = error
        self._schedule_probe()
        out: list[Result] = []
        for future, value, exc in results:
            if exc is not None and is_storage_error(exc):
                self.storage_errors += 1
                unavailable = self._unavailable()
                unavailable.__cause__ = exc
                exc = unavailable
            out.append((future, value, exc))
        return out

    def _schedule_probe(self) -> None:
        if self._probe_timer is not None or self._probing is not None or self.clock is None:
            return
        delay = STORAGE_PROBE.delay(self._probe_attempt)
        self._probe_attempt += 1
        self._probe_timer = self.clock.call_later(delay, self._probe)

    def _probe(self) -> None:
        self._probe_timer = None
        if self._loop is not None and self._probing is None:
            self._probing = self._loop.create_task(self._probe_run())

    async def _probe_run(self) -> None:
        """Write the held operations and a health row in one transaction: if it
        commits, the storage is back."""
        try:
            if self._pool is None or self._storage_error is None:
                return
            held, self._held = self._held, []
            try:
                async with self._pool.connection(timeout=self.connect_timeout) as conn:
                    results = await self._apply(conn, held, probe=True)
            except Exception as exc:
                self._held[:0] = held
                if is_storage_error(exc):
                    self._storage_error = exc
                    self._probing = None
                    self._schedule_probe()
                else:
                    log.error("journal %s: probe failed: %r; accepting writes again", self.name, exc)
                    self._recovered()
                return
            log.warning(
                "journal %s: storage writable again after %d probes; resuming (%d held writes applied)",
                self.name,
                self._probe_attempt,
                len(held),
            )
            self._commits += 1
            self._operations += len(held)
            settle_all(results)
            self._recovered()
        finally:
            self._probing = None

    def _recovered(self) -> None:
        self._storage_error = None
        self._probe_attempt = 0
        assert self._writable is not None
        self._writable.set()
        if self._held:
            self._pending[:0], self._held = self._held, []
        if self._pending and self._running is None and self._loop is not None:
            self._running = self._loop.create_task(self._drain())

    async def settled(self) -> None:
        """Until a probe in flight has finished (tests drive probes with a ManualClock)."""
        if self._probing is not None:
            await asyncio.gather(self._probing, return_exceptions=True)

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await self._writable.wait()

    async def write_probe(self) -> None:
        if self._storage_error is not None:
            raise self._unavailable()
        await self._submit(_touch_health)

    def _submit(self, fn: Callable[[Cursor], Awaitable[T]]) -> asyncio.Future[T]:
        return self._op(CALL, (fn,), True)

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async def op(cur: Cursor) -> list[tuple[Any, ...]]:
            await cur.execute(sql, tuple(params))
            return await cur.fetchall()

        return await self._submit(op)

    # ------------------------------------------------------------------ events

    def mark_done(self, seqs: Sequence[int], status: str = "done") -> asyncio.Future[None] | None:
        """As the SQLite journal's: in one transaction with the stored output queued
        before it; while that output's batch is already running, in the next one,
        failed with it if it rolls back."""
        rows = [(self.wall(), status, seq) for seq in seqs]
        if not (self._outbox_queued or self._outbox_running):
            self._op(DONE, (rows,), False)
            return None
        return self._op(DONE, (rows, "after output"), True)

    async def pending(self, bot: str) -> list[PendingEvent]:
        rows = await self._rows(
            "SELECT e.seq, e.payload, m.run_id FROM events e LEFT JOIN run_members m ON m.seq = e.seq "
            "WHERE e.bot=%s AND e.done_at IS NULL ORDER BY e.seq",
            (bot,),
        )
        return [PendingEvent(seq, decode_event(payload), run_id) for seq, payload, run_id in rows]

    async def pending_for_session(self, bot: str, session: SessionKey) -> list[PendingEvent]:
        rows = await self._rows(
            "SELECT e.seq, e.payload, m.run_id FROM events e LEFT JOIN run_members m ON m.seq = e.seq "
            "WHERE e.bot=%s AND e.session=%s AND e.done_at IS NULL ORDER BY e.seq",
            (bot, session.name),
        )
        return [PendingEvent(seq, decode_event(payload), run_id) for seq, payload, run_id in rows]

    async def event_status(self, seq: int) -> str | None:
        rows = await self._rows("SELECT done_at, status FROM events WHERE seq=%s", (seq,))
        if not rows:
            return None
        return "pending" if rows[0][0] is None else str(rows[0][1])

    # ------------------------------------------------------------------ receipts

    async def receipt(self, key: str) -> Receipt | None:
        rows = await self._rows(
            "SELECT key, run_id, chat, message_id, status, error FROM receipts WHERE key=%s", (key,)
        )
        return Receipt(*rows[0]) if rows else None

    # ------------------------------------------------------------------ session state

    async def load_state(self, bot: str, session: SessionKey) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT state FROM session_state WHERE bot=%s AND session=%s", (bot, session.name)
        )
        return orjson.loads(rows[0][0]) if rows else None

    async def save_state(self, bot: str, session: SessionKey, state: dict[str, Any]) -> None:
        blob = orjson.dumps(state)
        await self._rows(
            "INSERT INTO session_state(bot, session, state, updated) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (bot, session) DO UPDATE SET state=EXCLUDED.state, updated=EXCLUDED.updated "
            "RETURNING 1",
            (bot, session.name, blob, self.wall()),
        )

    # ------------------------------------------------------------------ stored bot output

    async def read_outbox(
        self, bot: str, chat: str, since: int = 0, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = await self._rows(
            "SELECT seq, payload FROM outbox WHERE bot=%s AND chat=%s AND seq>%s ORDER BY seq LIMIT %s",
            (bot, chat, since, limit),
        )
        return [(int(seq), orjson.loads(payload)) for seq, payload in rows]

    # ------------------------------------------------------------------ retention and stats

    PRUNE_CHUNK = 2000

    async def prune(self) -> dict[str, int]:
        """As the SQLite journal's: small chunks, other work in between."""
        now = self.wall()
        horizon = now - self.retention_seconds
        dedup_horizon = now - self.dedup_window_seconds
        chunk = self.PRUNE_CHUNK
        statements = {
            "events": (
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events "
                "WHERE done_at IS NOT NULL AND done_at < %s LIMIT %s)",
                horizon,
            ),
            "dedup": (
                "DELETE FROM dedup WHERE (bot, key) IN (SELECT bot, key FROM dedup WHERE at < %s LIMIT %s)",
                dedup_horizon,
            ),
            "receipts": (
                "DELETE FROM receipts WHERE key IN (SELECT key FROM receipts WHERE at < %s LIMIT %s)",
                horizon,
            ),
            "sandbox_audit": (
                "DELETE FROM sandbox_audit WHERE id IN (SELECT id FROM sandbox_audit WHERE at < %s LIMIT %s)",
                horizon,
            ),
            "outbox": (
                "DELETE FROM outbox WHERE (bot, chat, seq) IN "
                "(SELECT bot, chat, seq FROM outbox WHERE at < %s LIMIT %s)",
                horizon,
            ),
            "run_members": (
                "DELETE FROM run_members WHERE seq IN (SELECT m.seq FROM run_members m "
                "WHERE m.seq < %s AND NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = m.seq) LIMIT %s)",
                2.0**62,
            ),
        }
        counts: dict[str, int] = {}
        for name, (sql, bound) in statements.items():
            total = 0
            while True:
                deleted = await self._submit(_deleter(sql, bound, chunk))
                total += deleted
                if deleted < chunk:
                    break
                await asyncio.sleep(0)
            counts[name] = total
        return counts

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL written for both backends: ``?`` placeholders become ``%s``."""
        return await self._rows(sql.replace("%", "%%").replace("?", "%s"), params)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


async def _touch_health(cur: Cursor) -> None:
    await cur.execute(
        "INSERT INTO health(id, at) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET at=EXCLUDED.at",
        (time.time(),),
    )


def _deleter(sql: str, bound: float, chunk: int) -> Callable[[Cursor], Awaitable[int]]:
    async def delete(cur: Cursor) -> int:
        await cur.execute(sql, (bound, chunk))
        return int(cur.rowcount)

    return delete
