"""Replay after a crash rebuilds the same handler runs, so a reply that was
already sent is not sent again, even when more events wait behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.engine.entities import MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.journal import Journal
from tests.support import chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


async def test_replayed_run_keeps_its_grouping_and_skips_sent_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fleet_config(tmp_path, window="100ms")
    path = config.engine.journal.path
    with monkeypatch.context() as crash:
        # as if the process died after replying but before marking the events done
        crash.setattr(Journal, "mark_done", lambda self, seqs, status="done": None)
        async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
            await client.subscribe("c1")
            chat, token = client.chat("c1"), client.token
            await client.say("a")
            await client.wait_count("message", 1)
            await eventually(lambda: fleet.stats.runtimes["demo"].counters.sends == 1)
    journal = Journal(path)
    await journal.open()
    try:
        late = MessageReceived(
            bot_id="demo",
            adapter="web",
            chat_type="private",
            chat_id=chat,
            message_id="late",
            message_chain=MessageChain.of("b"),
            sender=User(id="u1"),
            dedup_key="u1:late",
        )
        await journal.append(late, late.session_key())  # acknowledged, never handled
    finally:
        await journal.close()

    async with running_fleet(config) as fleet, chat_client(fleet.base_url, token=token) as client:
        await client.subscribe("c1")
        await eventually(lambda: fleet.stats.runtimes["demo"].counters.runs == 2)
        await eventually(lambda: len(client.of("message")) == 2)
        assert [f["text"] for f in client.of("message")] == ["a", "b"]
        outbox = await fleet.journal.read_outbox("demo", chat)
        assert [payload["text"] for _, payload in outbox] == ["a", "b"]
        await eventually(lambda: _all_done(fleet.journal))


async def _all_done(journal: Journal) -> bool:
    rows = await journal.query("SELECT COUNT(*) FROM events WHERE done_at IS NULL")
    return rows == [(0,)]
