"""A web bot's run that only replied commits its reply and its event's done mark in
one journal transaction: seen in the batches a real fleet applies, and through a
kill -9 of the engine at that transaction, before and after its commit (the
reply then arrives once after the restart, never twice, never not at all)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callboard.bench.harness import free_port, wait_ready
from callboard.engine.journal_writer import DONE, OUTBOX, Op, Writer
from tests.support import UNLIMITED, ChatClient, chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


async def test_each_reply_commits_with_its_done_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[list[Op]] = []
    apply = Writer.apply

    def recording(self: Writer, conn: sqlite3.Connection, batch: list[Op]) -> Any:
        batches.append(list(batch))
        return apply(self, conn, batch)

    monkeypatch.setattr(Writer, "apply", recording)
    async with running_fleet(fleet_config(tmp_path)) as fleet, chat_client(fleet.base_url) as client:
        for chat in ("c1", "c2"):
            await client.subscribe(chat)
        for n in range(5):
            for chat in ("c1", "c2"):
                await client.say(f"m{n}", chat_id=chat)
        await client.wait_count("message", 10)
        await eventually(lambda: fleet.stats.runtimes["demo"].counters.handled_events == 10)
    replies = [(op, batch) for batch in batches for op in batch if op.kind == OUTBOX]
    assert len(replies) == 10
    for reply, batch in replies:
        run = int(reply.args[3].split(":")[1])  # the receipt key names the run (its last event)
        done = {row[2] for op in batch if op.kind == DONE for row in op.args[0]}
        assert run in done, f"reply {reply.args[3]} committed without its done mark"


FLEET = """
name: crash
engine:
  journal: {journal}
  admin: {{port: {port}}}
bots:
  - id: demo
    adapter: {{type: web, {limits}}}
    session:
      debounce: {{window: 0}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""

#: the engine, killed (SIGKILL) at its ``nth`` transaction that holds a reply and a done mark
CRASHING_ENGINE = """
import os, runpy, signal, sys
from callboard.engine import journal_writer as w
when, nth = sys.argv.pop(1), int(sys.argv.pop(1))
seen = [0]
bulk, apply = w.Writer._bulk, w.Writer.apply

def both(ops):
    kinds = {op.kind for op in ops}
    return w.OUTBOX in kinds and w.DONE in kinds

def bulk_then_die(self, conn, ops, results):
    bulk(self, conn, ops, results)
    if when == "before-commit" and both(ops):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

def apply_then_die(self, conn, batch):
    results = apply(self, conn, batch)
    if when == "after-commit" and both(batch):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return results

w.Writer._bulk, w.Writer.apply = bulk_then_die, apply_then_die
sys.argv[0] = "callboard"
runpy.run_module("callboard.cli", run_name="__main__")
"""


def _engine(config: Path, *crash: str) -> subprocess.Popen[bytes]:
    head = (
        [sys.executable, "-c", CRASHING_ENGINE, *crash] if crash else [sys.executable, "-m", "callboard.cli"]
    )
    return subprocess.Popen(
        [*head, "--log-level", "WARNING", "run", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
async def test_kill_9_at_a_reply_transaction(tmp_path: Path, when: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "fleet.yaml"
    journal = tmp_path / "j.sqlite3"
    config.write_text(FLEET.format(journal=journal, port=port, limits=UNLIMITED))
    engine = _engine(config, when, "3")
    try:
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base)
        await client.subscribe("c1")
        for n in range(5):  # one at a time: each reply is its own transaction
            await client.say(f"m{n}", chat_id="c1")
            while len(client.of("message")) <= n and engine.poll() is None:
                await asyncio.sleep(0.01)
            if engine.poll() is not None:
                break
        assert engine.wait(timeout=20) == -signal.SIGKILL
        token = client.token
        await client.close()
    finally:
        if engine.poll() is None:
            engine.kill()
    acked = {f["client_msg_id"] for f in client.of("ack")}
    with sqlite3.connect(journal) as db:
        pending = db.execute("SELECT COUNT(*) FROM events WHERE done_at IS NULL").fetchone()[0]
        stored = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    # the killed transaction: neither its reply nor its mark (before), or both (after)
    assert (pending, stored) == ((1, 2) if when == "before-commit" else (0, 3))

    engine = _engine(config)
    try:
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base, token=token)
        try:
            await client.subscribe("c1", since=0)
            await client.wait_count("message", 3)
            await asyncio.sleep(0.3)  # a doubled reply would arrive by now
            texts = [f["text"] for f in client.of("message")]
        finally:
            await client.close()
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
    # every stored message answered once (m2 was stored; its ack may not have left before the kill)
    assert sorted(texts) == ["m0", "m1", "m2"]
    assert len(acked) >= 2
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE done_at IS NULL").fetchone()[0] == 0
