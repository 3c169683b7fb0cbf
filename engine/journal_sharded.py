"""The journal split over several PostgreSQL databases (shards), past what one
primary can write.

Everything about one chat lives on one shard, chosen by a stable hash of
(bot, chat id): its sessions' events, their dedup keys, done marks and run
members, session state, the receipts of their runs (a run's id is its last
event's seq, see below) and the chat's stored output (the web chat keys it by
chat id). So a run's writes, its replies and its done mark included, land in
one shard's transaction, and per-session order is that shard's. The hash is
the cluster partitions' (crc32, ``actors.cluster.partition_of``) without the
chat type, which stored output does not know.

Sandbox audit rows all go to shard 0 (one log, read newest first; a few rows
per agent step). Reads that name no chat fan out: ``pending`` merges every
shard's by seq, ``receipt`` asks every shard (only replays ask), ``query``
concatenates the shards' rows.

Seqs say their shard without a lookup: shard ``i`` of ``n`` draws them from a
PostgreSQL sequence ``INCREMENT BY n``, so ``(seq - 1) % n == i``. A shard
database records its (index, count) when it is first opened as a shard;
opening it with another index or count, or sharding a database that already
holds unsharded events, is refused: moving chats between shards is an offline
migration (docs/scale-out.md), never a silent reshuffle.

Each shard is a ``PgJournal`` with its own pool, group commit and
storage-failure state: one failing shard refuses only the writes that go to
it, and ``storage_problem`` names it (password masked).
"""

from __future__ import annotations

import asyncio
import heapq
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql as pgsql

from callboard.engine.audit import AuditEntry
from callboard.engine.clock import Clock, LoopClock
from callboard.engine.events import Event, SessionKey
from callboard.engine.journal import JournalUnusable, PendingEvent, Receipt
from callboard.engine.journal_pg import PgJournal

#: any fixed number, apart from PgJournal's: shard claims run one at a time
_SHARD_LOCK = 0x63627368

SHARD_TABLE = """
CREATE TABLE IF NOT EXISTS journal_shard (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    shard INTEGER NOT NULL,
    shards INTEGER NOT NULL
)
"""


def chat_hash(bot: str, chat_id: str) -> int:
    """The stable hash that places a chat on a shard (the same on every node, every run)."""
    return zlib.crc32(f"{bot}\x00{chat_id}".encode())


class ShardedJournal:
    """N ``PgJournal`` shards behind the one journal interface (``JournalStore``).

    ``urls[i]`` is shard ``i``: the order is part of the layout and never changes."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        path: str,
        retention_seconds: float = 7 * 86400,
        dedup_window_seconds: float = 86400,
        clock: Clock | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("a sharded journal needs at least one database URL")
        self.path = path
        self.shards = [
            PgJournal(
                url,
                path=path,
                retention_seconds=retention_seconds,
                dedup_window_seconds=dedup_window_seconds,
                clock=clock,
                pool_size=pool_size,
                connect_timeout=connect_timeout,
            )
            for url in urls
        ]
        self._clock = clock
        self._retention = retention_seconds
        self._dedup_window = dedup_window_seconds
        self._storage_errors_offset = 0

    # ------------------------------------------------------------------ settings, shared by the shards

    @property
    def clock(self) -> Clock | None:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock | None) -> None:
        self._clock = clock
        for shard in self.shards:
            shard.clock = clock

    @property
    def retention_seconds(self) -> float:
        return self._retention

    @retention_seconds.setter
    def retention_seconds(self, seconds: float) -> None:
        self._retention = seconds
        for shard in self.shards:
            shard.retention_seconds = seconds

    @property
    def dedup_window_seconds(self) -> float:
        return self._dedup_window

    @dedup_window_seconds.setter
    def dedup_window_seconds(self, seconds: float) -> None:
        self._dedup_window = seconds
        for shard in self.shards:
            shard.dedup_window_seconds = seconds

    @property
    def storage_errors(self) -> int:
        """Summed over the shards: a run compares it before and after."""
        return sum(shard.storage_errors for shard in self.shards) + self._storage_errors_offset

    @storage_errors.setter
    def storage_errors(self, value: int) -> None:
        self._storage_errors_offset = value - sum(shard.storage_errors for shard in self.shards)

    def wall(self) -> float:
        return self.shards[0].wall()

    # ------------------------------------------------------------------ placement

    def shard_of_chat(self, bot: str, chat_id: str) -> PgJournal:
        return self.shards[chat_hash(bot, chat_id) % len(self.shards)]

    def shard_of_session(self, bot: str, session: SessionKey) -> PgJournal:
        return self.shard_of_chat(bot, session.chat_id)

    def shard_of_seq(self, seq: int) -> PgJournal:
        return self.shards[(seq - 1) % len(self.shards)]

    def _by_seq(self, seqs: Sequence[int]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = defaultdict(list)
        for seq in seqs:
            groups[(seq - 1) % len(self.shards)].append(seq)
        return groups

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self.is_open:
            return
        if self._clock is None:
            self.clock = LoopClock(asyncio.get_running_loop())
        opened = await asyncio.gather(
            *(self._open_shard(i) for i in range(len(self.shards))), return_exceptions=True
        )
        failed = [r for r in opened if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(shard.close() for shard in self.shards), return_exceptions=True)
            raise failed[0]

    async def _open_shard(self, index: int) -> None:
        shard = self.shards[index]
        try:
            await shard.open()
        except JournalUnusable as exc:
            raise JournalUnusable(f"shard {index} of {len(self.shards)}: {exc}") from None
        try:
            await _claim(shard, index, len(self.shards))
        except JournalUnusable:
            raise
        except Exception as exc:
            raise JournalUnusable(
                f"journal shard {index} ({shard.name}): cannot record its place in the layout "
                f"({type(exc).__name__}: {_first_line(exc)})"
            ) from None

    async def close(self) -> None:
        await _all(shard.close() for shard in self.shards)

    @property
    def is_open(self) -> bool:
        return all(shard.is_open for shard in self.shards)

    @property
    def commits(self) -> int:
        return sum(shard.commits for shard in self.shards)

    @property
    def batched_ops(self) -> int:
        return sum(shard.batched_ops for shard in self.shards)

    # ------------------------------------------------------------------ storage health

    @property
    def storage_problem(self) -> str | None:
        problems = [
            f"shard {index} ({shard.name}): {problem}"
            for index, shard in enumerate(self.shards)
            if (problem := shard.storage_problem) is not None
        ]
        return "; ".join(problems) if problems else None

    async def wait_writable(self) -> None:
        for shard in self.shards:
            await shard.wait_writable()

    async def write_probe(self) -> None:
        await _all(shard.write_probe() for shard in self.shards)

    async def flush(self) -> None:
        await _all(shard.flush() for shard in self.shards)

    async def settled(self) -> None:
        """Until probes in flight have finished (tests drive probes with a ManualClock)."""
        await _all(shard.settled() for shard in self.shards)

    # ------------------------------------------------------------------ events

    def append(self, event: Event, session: SessionKey) -> asyncio.Future[int | None]:
        return self.shard_of_session(event.bot_id, session).append(event, session)

    def mark_done(self, seqs: Sequence[int], status: str = "done") -> asyncio.Future[None] | None:
        """On each seq's shard. A run's seqs are one session's, so one shard, where the
        mark commits with the chat's replies queued before it (``JournalStore.mark_done``)."""
        marks = [self.shards[i].mark_done(group, status) for i, group in self._by_seq(seqs).items()]
        waiting = [mark for mark in marks if mark is not None]
        if len(waiting) > 1:
            return asyncio.ensure_future(_all(waiting))
        return waiting[0] if waiting else None

    async def mark_done_now(self, seqs: Sequence[int], status: str = "done") -> None:
        await _all(self.shards[i].mark_done_now(group, status) for i, group in self._by_seq(seqs).items())

    async def pending(self, bot: str) -> list[PendingEvent]:
        """Every shard's, merged by seq (a session's events are on one shard, in order)."""
        lists = await asyncio.gather(*(shard.pending(bot) for shard in self.shards))
        return list(heapq.merge(*lists, key=lambda p: p.seq))

    async def pending_for_session(self, bot: str, session: SessionKey) -> list[PendingEvent]:
        return await self.shard_of_session(bot, session).pending_for_session(bot, session)

    async def event_status(self, seq: int) -> str | None:
        return await self.shard_of_seq(seq).event_status(seq)

    # ------------------------------------------------------------------ runs and receipts

    def record_run(self, run_id: int, seqs: Sequence[int]) -> None:
        for index, group in self._by_seq(seqs).items():
            self.shards[index].record_run(run_id, group)

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
        """On the run's shard (a run's id is its last event's seq), with its session's writes."""
        self.shard_of_seq(run_id).store_receipt(key, bot, run_id, chat, message_id, status, error)

    async def receipt(self, key: str) -> Receipt | None:
        """Asked of every shard: the key alone does not say its run (replays ask, rarely)."""
        found = await asyncio.gather(*(shard.receipt(key) for shard in self.shards))
        return next((r for r in found if r is not None), None)

    def append_audit(self, entry: AuditEntry) -> None:
        self.shards[0].append_audit(entry)

    # ------------------------------------------------------------------ session state

    async def load_state(self, bot: str, session: SessionKey) -> dict[str, Any] | None:
        return await self.shard_of_session(bot, session).load_state(bot, session)

    async def save_state(self, bot: str, session: SessionKey, state: dict[str, Any]) -> None:
        await self.shard_of_session(bot, session).save_state(bot, session, state)

    # ------------------------------------------------------------------ stored bot output

    def append_outbox(
        self, bot: str, chat: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> asyncio.Future[tuple[int, dict[str, Any], bool]]:
        return self.shard_of_chat(bot, chat).append_outbox(bot, chat, payload, idempotency_key)

    async def read_outbox(
        self, bot: str, chat: str, since: int = 0, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        return await self.shard_of_chat(bot, chat).read_outbox(bot, chat, since, limit)

    # ------------------------------------------------------------------ retention and diagnostics

    async def prune(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for shard_counts in await asyncio.gather(*(shard.prune() for shard in self.shards)):
            for table, deleted in shard_counts.items():
                counts[table] += deleted
        return dict(counts)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every shard's rows, shard 0's first: ORDER BY, LIMIT and aggregates apply
        per shard (``SELECT MAX(seq) FROM events`` answers one row per shard)."""
        rows = await asyncio.gather(*(shard.query(sql, params) for shard in self.shards))
        return [row for shard_rows in rows for row in shard_rows]


async def _claim(shard: PgJournal, index: int, count: int) -> None:
    """Record (index, count) in a fresh shard and set its seq sequence; refuse a
    database recorded with another place, or holding unsharded events."""
    async with (
        await psycopg.AsyncConnection.connect(
            shard.url, connect_timeout=max(1, round(shard.connect_timeout))
        ) as conn,
        conn.transaction(),
    ):
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SHARD_LOCK,))
        await conn.execute(SHARD_TABLE.encode())
        row = await (await conn.execute("SELECT shard, shards FROM journal_shard")).fetchone()
        if row is not None:
            if (row[0], row[1]) != (index, count):
                raise JournalUnusable(
                    f"journal shard {index} of {count} ({shard.name}) is recorded as shard "
                    f"{row[0]} of {row[1]}: the list in engine.journal changed; restore its order, "
                    "or move the sessions offline as docs/scale-out.md describes"
                )
            return
        used = await (await conn.execute("SELECT EXISTS (SELECT 1 FROM events)")).fetchone()
        if used is not None and used[0]:
            raise JournalUnusable(
                f"journal shard {index} of {count} ({shard.name}) holds events of an unsharded "
                "journal: shard a new database, or move them offline as docs/scale-out.md describes"
            )
        name = await (await conn.execute("SELECT pg_get_serial_sequence('events', 'seq')")).fetchone()
        assert name is not None
        state = await (
            await conn.execute(pgsql.SQL("SELECT last_value, is_called FROM {}").format(pgsql.SQL(name[0])))
        ).fetchone()
        assert state is not None
        # never hand out a seq again (receipts name runs by seq), even after retention emptied it
        start = int(state[0]) + 1 if state[1] else int(state[0])
        start += (index - (start - 1)) % count
        await conn.execute(
            pgsql.SQL("ALTER SEQUENCE {} INCREMENT BY {} MINVALUE 1 RESTART WITH {}").format(
                pgsql.SQL(name[0]), pgsql.Literal(count), pgsql.Literal(start)
            )
        )
        await conn.execute("INSERT INTO journal_shard(id, shard, shards) VALUES (1, %s, %s)", (index, count))


async def _all(calls: Iterable[Awaitable[Any]]) -> None:
    """Run ``calls`` together; every one finishes before the first error is raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
