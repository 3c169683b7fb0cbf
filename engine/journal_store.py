"""What the rest of callboard needs from a journal, whatever stores it.

``callboard.engine.journal.Journal`` (one SQLite file, the embedded default)
and ``callboard.engine.journal_pg.PgJournal`` (PostgreSQL, shared by the
nodes of a cluster) both implement it; actors, adapters and the app are typed
against this, never against one backend. The semantics (dedup window, order of
queued writes, the storage-failure state) are the SQLite journal's, described
in its module and methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from callboard.engine.audit import AuditEntry
from callboard.engine.clock import Clock
from callboard.engine.events import Event, SessionKey
from callboard.engine.journal import PendingEvent, Receipt


class JournalStore(Protocol):
    #: a local file path that per-fleet files (admin token, secrets) live next to
    path: str
    clock: Clock | None
    retention_seconds: float
    dedup_window_seconds: float
    #: operations refused or failed because the storage failed
    storage_errors: int

    def wall(self) -> float: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def is_open(self) -> bool: ...

    @property
    def commits(self) -> int: ...

    @property
    def batched_ops(self) -> int: ...

    @property
    def storage_problem(self) -> str | None: ...

    async def wait_writable(self) -> None: ...

    async def write_probe(self) -> None: ...

    async def flush(self) -> None: ...

    def append(self, event: Event, session: SessionKey) -> asyncio.Future[int | None]: ...

    def mark_done(self, seqs: Sequence[int], status: str = "done") -> asyncio.Future[None] | None:
        """Record that these events were handled. Where the mark commits in one
        transaction with stored output queued before it (a run's pipelined replies), a
        future resolved at that commit, failing with ``StorageUnavailable`` when neither
        was stored (run the events again); else None (a background write)."""
        ...

    async def mark_done_now(self, seqs: Sequence[int], status: str = "done") -> None: ...

    async def pending(self, bot: str) -> list[PendingEvent]: ...

    async def pending_for_session(self, bot: str, session: SessionKey) -> list[PendingEvent]: ...

    async def event_status(self, seq: int) -> str | None: ...

    def record_run(self, run_id: int, seqs: Sequence[int]) -> None: ...

    def store_receipt(
        self,
        key: str,
        bot: str,
        run_id: int,
        chat: str,
        message_id: str | None,
        status: str = "sent",
        error: str | None = None,
    ) -> None: ...

    async def receipt(self, key: str) -> Receipt | None: ...

    def append_audit(self, entry: AuditEntry) -> None:
        """Record one sandbox call; read back with ``engine.audit.read_audit``."""
        ...

    async def load_state(self, bot: str, session: SessionKey) -> dict[str, Any] | None: ...

    async def save_state(self, bot: str, session: SessionKey, state: dict[str, Any]) -> None: ...

    def append_outbox(
        self, bot: str, chat: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> asyncio.Future[tuple[int, dict[str, Any], bool]]: ...

    async def read_outbox(
        self, bot: str, chat: str, since: int = 0, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]: ...

    async def prune(self) -> dict[str, int]: ...

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL for tests and diagnostics, written with ``?`` placeholders
        and SQL that both SQLite and PostgreSQL understand."""
        ...
