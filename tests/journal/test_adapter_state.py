"""An adapter's own records (``AdapterStore.load/save_adapter_state``) and the web chat's
directory built on them and on its stored output, on every backend: SQLite, PostgreSQL
and the sharded journal. Two directories on one journal stand for two nodes."""

from __future__ import annotations

import asyncio

import pytest

from callboard.actors.bot import BotStore
from callboard.adapters.web.directory import Directory
from callboard.engine.entities import User
from callboard.engine.events import SessionKey
from tests.journal.conftest import MakeJournal

pytestmark = pytest.mark.timeout(60)


async def test_adapter_records_and_the_web_directory(make_journal: MakeJournal, backend: str) -> None:
    first = make_journal("j")
    second = first if backend == "sqlite" else make_journal("j")  # one file: one writer
    for journal in {id(first): first, id(second): second}.values():
        await journal.open()
    try:
        store = BotStore("demo", first)
        assert await store.load_adapter_state("k") is None
        await store.save_adapter_state("k", {"x": [1, "two"]})
        await store.save_adapter_state("k", {"x": [3]})
        assert await BotStore("demo", second).load_adapter_state("k") == {"x": [3]}
        assert await BotStore("other", second).load_adapter_state("k") is None  # per bot
        # a reserved session name: no session's state is touched
        assert await first.load_state("demo", SessionKey("demo", "group", "k")) is None

        a, b = Directory(BotStore("demo", first)), Directory(BotStore("demo", second))
        a.peers = b.peers = lambda data: None  # cluster mode, notices lost
        await asyncio.gather(a.refresh("g1"), b.refresh("g1"))
        users = [User(id=f"u{i}", nickname=f"U{i}") for i in range(10)]
        await asyncio.gather(*((a if i % 2 else b).join("g1", u) for i, u in enumerate(users)))
        await a.mute("g1", "u3", 0)
        await b.leave("g1", "u4")
    finally:
        for journal in {id(first): first, id(second): second}.values():
            await journal.close()

    again = make_journal("j")  # a restart
    await again.open()
    try:
        fresh = Directory(BotStore("demo", again))
        await fresh.record("g1")
        assert sorted(m.user.id for m in fresh.members("g1")) == sorted(u.id for u in users if u.id != "u4")
        assert fresh.muted_for("g1", "u3") == float("inf")
        assert await fresh.all_groups() == {"g1": "g1"}
    finally:
        await again.close()
