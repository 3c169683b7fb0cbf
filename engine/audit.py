"""The sandbox audit log's rows: who ran what in which sandbox, kept in the journal.

One ``AuditEntry`` per sandbox call (a command, a file operation, a managed process's start,
stop or attach). It names the command (argv) or the path, never the environment's values, a
command's stdin or a file's contents: only their sizes. The journal stamps ``at`` (its wall
clock) when the row commits and drops rows older than its retention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callboard.engine.journal_store import JournalStore

#: columns in storage order (the journals insert and select these)
AUDIT_COLUMNS = (
    "bot",
    "tenant",
    "scope",
    "session",
    "handler",
    "user_id",
    "tool",
    "target",
    "exit_code",
    "status",
    "duration",
    "bytes_in",
    "bytes_out",
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    bot: str
    tenant: str | None
    #: the scope key (which sandbox)
    scope: str
    #: the sandbox session (container) that ran it, when one was granted
    session: str | None
    handler: str | None
    #: the user whose event led to the call
    user_id: str | None
    #: exec, read, write, edit, glob, grep, process.start, process.stop, process.attach
    tool: str
    #: the argv (space-joined, or the shell command) or the path or pattern; never contents
    target: str
    exit_code: int | None
    #: "ok", "timeout", or the ``SandboxError`` code that ended the call
    status: str
    duration: float
    bytes_in: int
    bytes_out: int
    #: wall-clock seconds, set by the journal
    at: float | None = None

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in AUDIT_COLUMNS)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Newest first; every filter optional."""

    bot: str | None = None
    tool: str | None = None
    scope: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100


async def read_audit(journal: JournalStore, query: AuditQuery) -> list[AuditEntry]:
    """The rows matching ``query``, newest first (SQL both journals understand)."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("bot", query.bot), ("tool", query.tool), ("scope", query.scope)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.since is not None:
        where.append("at >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("at < ?")
        params.append(query.until)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {', '.join(AUDIT_COLUMNS)}, at FROM sandbox_audit{clause} ORDER BY id DESC LIMIT ?"
    rows = await journal.query(sql, (*params, max(1, min(query.limit, 10_000))))
    return [AuditEntry(*row) for row in rows]
