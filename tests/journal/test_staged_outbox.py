"""The staged outbox write behind pipelined web replies, through the bot's
``AdapterStore`` on both backends: resolved at commit with the stored item,
durable once ``durable`` resolves (at once on PostgreSQL, whose commit is
durable), a repeated idempotency key staged as the earlier item."""

from __future__ import annotations

import asyncio

import pytest

from callboard.actors.bot import BotStore
from tests.journal.conftest import MakeJournal

pytestmark = pytest.mark.timeout(60)


async def test_staged_outbox_write_through_the_bot_store(make_journal: MakeJournal) -> None:
    journal = make_journal("s")
    await journal.open()
    try:
        store = BotStore("b", journal)
        first = await store.append_outbox_staged("c", {"text": "one"}, "run-1:0")
        second = await store.append_outbox_staged("c", {"text": "two"}, "run-1:1")
        assert (first.seq, first.created, first.payload) == (1, True, {"text": "one", "seq": 1})
        assert second.seq == 2
        await asyncio.wait_for(asyncio.gather(first.durable, second.durable), 10)
        repeat = await store.append_outbox_staged("c", {"text": "one"}, "run-1:0")
        assert (repeat.seq, repeat.created, repeat.payload) == (1, False, {"text": "one", "seq": 1})
        assert [seq for seq, _ in await store.read_outbox("c")] == [1, 2]
    finally:
        await journal.close()
