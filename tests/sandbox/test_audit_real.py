"""Audit rows for every kind of sandbox call against a real container, in a real journal: who,
which scope and session, the command or path, exit code, sizes; never a secret or a file's
contents (the journal file itself is searched). And the status report: sessions, processes,
the error ring."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from callboard.actors.sandbox import SessionTools, tools_for
from callboard.actors.sandbox_admin import sandbox_report
from callboard.engine import ActorSystem
from callboard.engine.audit import AuditQuery, read_audit
from callboard.engine.journal import Journal
from callboard.engine.sandbox_api import (
    EditArgs,
    ExecArgs,
    GlobArgs,
    GrepArgs,
    ReadArgs,
    SandboxFileNotFound,
    SandboxPolicyError,
    WriteArgs,
)
from callboard.engine.sandbox_processes import ProcessArgs
from callboard.sandbox.config import SandboxPolicy, SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import spawn_manager

pytestmark = pytest.mark.timeout(180)

SECRET_ENV = "env-value-7f3a9c"
SECRET_STDIN = "stdin-value-51be0d"
SECRET_FILE = "file-content-c0ffee"
SECRET_EDIT = "edit-value-ab12cd"


async def test_every_call_kind_is_audited_without_contents(
    tmp_path: Path,
    engine: Engine,
    system: ActorSystem,
    fleet: str,
    settings: Callable[..., SandboxSettings],
) -> None:
    journal = Journal(str(tmp_path / "journal.sqlite3"))
    await journal.open()
    try:
        manager = spawn_manager(system, fleet, settings(), None, journal)
        policy = SandboxPolicy(enabled=True, tenant="acme", exec_handlers=["agent"])
        tools = tools_for(manager, policy, "bot", "group", "g1", "alice", handler="agent")
        assert isinstance(tools, SessionTools)

        ran = await tools.exec(
            ExecArgs(command="cat; echo done", stdin=SECRET_STDIN, env={"TOKEN": SECRET_ENV})
        )
        assert ran.ok and SECRET_STDIN in ran.stdout
        await tools.write(WriteArgs(path="notes.txt", content=SECRET_FILE))
        assert (await tools.read(ReadArgs(path="notes.txt"))).content == SECRET_FILE
        await tools.edit(EditArgs(path="notes.txt", old=SECRET_FILE, new=SECRET_EDIT))
        assert (await tools.glob(GlobArgs(pattern="*.txt"))).paths == ["notes.txt"]
        assert (await tools.grep(GrepArgs(pattern="edit"))).matches
        with pytest.raises(SandboxFileNotFound):
            await tools.read(ReadArgs(path="missing.txt"))
        await tools.start_process(ProcessArgs(process_id="srv", argv=["cat"], env={"K": SECRET_ENV}))
        attachment = await tools.attach("srv")
        await attachment.close()

        report = await sandbox_report(manager)  # while the process runs
        (session,) = report["sessions"]
        assert session["scope"] == tools.key and session["container"] and not session["busy"]
        (process,) = session["processes"]
        assert process["process_id"] == "srv" and process["state"] == "running"
        assert process["env_keys"] == ["K"] and session["reaped_in"] is None  # a running process keeps it
        assert report["backend"].startswith("unix://") and report["idle_ttl"] == 600.0
        assert [e["status"] for e in report["errors"]] == ["not_found"]

        await tools.stop_process("srv")
        denied = tools_for(manager, policy, "bot", "group", "g1", "alice", handler="pipeline")
        with pytest.raises(SandboxPolicyError):
            await denied.exec(ExecArgs(argv=["true"]))

        await sandbox_report(manager)  # the manager has taken every row told before this
        await journal.flush()
        rows = list(reversed(await read_audit(journal, AuditQuery(bot="bot"))))
        assert [r.tool for r in rows] == [
            "exec",
            "write",
            "read",
            "edit",
            "glob",
            "grep",
            "read",
            "process.start",
            "process.attach",
            "process.stop",
            "exec",
        ]
        exec_row = rows[0]
        assert exec_row.target == "cat; echo done" and exec_row.exit_code == 0 and exec_row.status == "ok"
        assert exec_row.bytes_in == len(SECRET_STDIN) and exec_row.bytes_out == len(SECRET_STDIN) + 5
        assert exec_row.user_id == "alice" and exec_row.handler == "agent" and exec_row.tenant == "acme"
        assert exec_row.scope == tools.key and exec_row.session == session["session"]
        assert exec_row.at is not None and exec_row.duration > 0
        assert rows[1].target == "/workspace/notes.txt" and rows[1].bytes_in == len(SECRET_FILE)
        assert rows[2].bytes_out == len(SECRET_FILE)
        assert rows[6].status == "not_found" and rows[6].target == "/workspace/missing.txt"
        assert rows[7].target == "srv: cat"
        assert (
            rows[-1].status == "policy_denied" and rows[-1].handler == "pipeline" and rows[-1].session is None
        )
        assert len(await read_audit(journal, AuditQuery(tool="exec", limit=1))) == 1
    finally:
        await journal.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("journal"))
    assert b"stdin-value" not in stored and b"env-value" not in stored
    assert b"file-content" not in stored and b"edit-value" not in stored
    assert b"notes.txt" in stored  # the rows are there: the search would have found them
