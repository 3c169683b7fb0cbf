"""The sandbox audit log in the journal, on both backends: rows stamped at commit, read back
newest first with filters, dropped with the journal's retention."""

from __future__ import annotations

from callboard.engine import ManualClock
from callboard.engine.audit import AuditEntry, AuditQuery, read_audit
from tests.journal.conftest import MakeJournal


def entry(tool: str, bot: str = "b1", scope: str = "session:b1:private:1", **fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "bot": bot,
        "tenant": None,
        "scope": scope,
        "session": "s-1",
        "handler": "agent",
        "user_id": "u1",
        "tool": tool,
        "target": "echo hi",
        "exit_code": 0,
        "status": "ok",
        "duration": 0.01,
        "bytes_in": 0,
        "bytes_out": 3,
    }
    values.update(fields)
    return AuditEntry(**values)  # type: ignore[arg-type]


async def test_rows_round_trip_filter_and_expire(make_journal: MakeJournal) -> None:
    clock = ManualClock()
    journal = make_journal(clock=clock, retention_seconds=3600)
    await journal.open()
    try:
        journal.append_audit(entry("exec", tenant="acme", exit_code=None, status="timeout"))
        journal.append_audit(entry("write", target="/workspace/a.txt", bytes_in=12))
        journal.append_audit(entry("exec", bot="b2", scope="bot:b2"))
        await journal.flush()
        rows = await read_audit(journal, AuditQuery())
        assert [(r.bot, r.tool) for r in rows] == [("b2", "exec"), ("b1", "write"), ("b1", "exec")]
        first = rows[-1]
        assert first.tenant == "acme" and first.exit_code is None and first.status == "timeout"
        assert first.at is not None and abs(first.at - clock.wall()) < 5
        assert [r.target for r in await read_audit(journal, AuditQuery(bot="b1", tool="write"))] == [
            "/workspace/a.txt"
        ]
        assert len(await read_audit(journal, AuditQuery(scope="bot:b2"))) == 1
        assert await read_audit(journal, AuditQuery(since=clock.wall() + 60)) == []
        assert len(await read_audit(journal, AuditQuery(limit=2))) == 2

        await clock.advance(7200)
        journal.append_audit(entry("read"))
        await journal.flush()
        await journal.prune()
        assert [r.tool for r in await read_audit(journal, AuditQuery())] == ["read"]
    finally:
        await journal.close()
