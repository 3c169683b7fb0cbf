"""The web chat's directory (groups, members, mutes) is kept in the journal: after a
restart members read and write without joining again and mutes still hold; two
directories on one journal (as two nodes of a cluster) see each other's changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callboard.actors.bot import BotStore
from callboard.adapters.web import directory as directory_module
from callboard.adapters.web.directory import LOG, Directory
from callboard.adapters.web.identity import Identity
from callboard.engine.entities import User
from callboard.engine.journal import Journal
from tests.support import ChatClient, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


async def refused(client: ChatClient, cid: str) -> dict[str, object]:
    return await client.wait_for(lambda f: f.get("client_msg_id") == cid and f["op"] in ("ack", "error"))


async def test_members_and_mutes_survive_a_restart(tmp_path: Path) -> None:
    config = fleet_config(tmp_path)
    async with running_fleet(config) as fleet:
        api = fleet.stats.runtimes["demo"].api
        ann = await ChatClient.connect(fleet.base_url, user="ann")
        bob = await ChatClient.connect(fleet.base_url, user="bob")
        cat = await ChatClient.connect(fleet.base_url, user="cat")
        try:
            assert (await ann.join("g1", "Team"))["op"] == "ack"
            assert (await bob.join("g1"))["op"] == "ack"
            assert (await cat.join("g1"))["op"] == "ack"
            assert (await cat.op(op="leave", chat_id="g1")) and await cat.wait_count("ack", 2)
            await api.mute_member("g1", "bob", 0)
            await api.mute_member("g1", "ann", 3600)
        finally:
            for client in (ann, bob, cat):
                await client.close()

    async with running_fleet(config) as fleet:  # a new engine on the same journal
        api = fleet.stats.runtimes["demo"].api
        members = await api.get_group_member_list("g1")
        assert sorted((m.user.id, m.user.nickname) for m in members) == [("ann", "ann"), ("bob", "bob")]
        assert all(m.joined_at is not None and m.joined_at > 0 for m in members)
        assert (await api.get_group_info("g1")).name == "Team"
        assert [g.id for g in await api.get_group_list()] == ["g1"]
        ann = await ChatClient.connect(fleet.base_url, user="ann")
        bob = await ChatClient.connect(fleet.base_url, user="bob")
        cat = await ChatClient.connect(fleet.base_url, user="cat")
        try:
            # no join: the membership was read from the journal
            assert (await bob.subscribe("g1", group=True))["op"] == "subscribed"
            assert (await cat.subscribe("g1", group=True))["code"] == "forbidden"  # cat left
            error = await refused(bob, await bob.say("hi", chat_id="g1", chat_type="group"))
            assert error["code"] == "muted" and "until unmuted" in str(error["reason"])
            error = await refused(ann, await ann.say("hi", chat_id="g1", chat_type="group"))
            assert error["code"] == "muted" and "more seconds" in str(error["reason"])
            await api.unmute_member("g1", "bob")
            assert (await refused(bob, await bob.say("back", chat_id="g1", chat_type="group")))["op"] == "ack"
            # a repeated join (the page's, on each connect) is answered
            assert (await bob.join("g1"))["op"] == "ack"
        finally:
            for client in (ann, bob, cat):
                await client.close()

    async with running_fleet(config) as fleet:  # the unmute was stored too
        bob = await ChatClient.connect(fleet.base_url, user="bob")
        try:
            assert (await refused(bob, await bob.say("again", chat_id="g1", chat_type="group")))[
                "op"
            ] == "ack"
        finally:
            await bob.close()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = Journal(str(tmp_path / "journal.sqlite3"))
    await journal.open()
    yield journal
    await journal.close()


def cluster_directory(journal: Journal) -> Directory:
    """A directory as one node of a cluster has it (its peer notices go nowhere here)."""
    directory = Directory(BotStore("demo", journal))
    directory.peers = lambda data: None
    return directory


async def test_two_nodes_merge_their_changes_and_see_each_others(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = cluster_directory(journal), cluster_directory(journal), cluster_directory(journal)
    ann, bob = User(id="ann", nickname="Ann"), User(id="bob", nickname="Bob")
    # the nodes read the group, then two of them each add a member at once: both stay
    await asyncio.gather(a.refresh("g1"), b.refresh("g1"), c.refresh("g1"))
    await asyncio.gather(a.join("g1", ann), b.join("g1", bob))
    fresh = cluster_directory(journal)
    await fresh.record("g1")
    assert sorted(m.user.id for m in fresh.members("g1")) == ["ann", "bob"]

    # c has not seen ann join: a check that would refuse reads the store once first
    assert not c.is_member("g1", "ann")
    loading = c.ensure("g1", "ann", sending=False)
    assert loading is not None
    await loading
    assert c.may_read(Identity(user_id="ann", name="Ann", anonymous=False), "g1")
    assert c.ensure("g1", "ann", sending=False) is None  # a member: no read
    stranger = c.ensure("g1", "eve", sending=False)
    assert stranger is not None  # a stranger: read once,
    await stranger
    assert c.ensure("g1", "eve", sending=False) is None  # then not again within RECHECK_AFTER

    # a mute made on a: c, its notice lost, enforces it once its copy is STALE_AFTER old
    await a.mute("g1", "bob", 60)
    assert c.muted_for("g1", "bob") == 0.0  # within the window
    assert c.ensure("g1", "bob", sending=True) is None
    monkeypatch.setattr(directory_module, "STALE_AFTER", 0.0)
    loading = c.ensure("g1", "bob", sending=True)
    assert loading is not None
    await loading
    assert 59 < c.muted_for("g1", "bob") <= 60
    # with the notice delivered, at once
    await a.unmute("g1", "bob")
    assert c.from_peer(directory_module.PEER_NOTICE + b"g1")
    monkeypatch.setattr(directory_module, "STALE_AFTER", 3600.0)
    loading = c.ensure("g1", "bob", sending=True)
    assert loading is not None  # dropped by the notice: read before the next check
    await loading
    assert c.muted_for("g1", "bob") == 0.0


async def test_one_node_reads_a_group_once(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BotStore("demo", journal)
    directory = Directory(store)
    reads = 0
    load = store.load_adapter_state

    async def counted(key: str) -> dict[str, object] | None:
        nonlocal reads
        reads += 1
        return await load(key)

    monkeypatch.setattr(store, "load_adapter_state", counted)
    # concurrent misses share one read; then checks never read, members or not
    await asyncio.gather(*(directory.refresh("g1") for _ in range(20)))
    assert reads == 1
    assert directory.ensure("g1", "stranger", sending=True) is None
    await directory.join("g1", User(id="ann", nickname="Ann"))  # answered once appended,
    await directory.refresh("g1")  # then read back (what another node changed meanwhile)
    assert reads == 2
    assert directory.is_member("g1", "ann") and directory.ensure("g1", "ann", sending=True) is None


async def test_a_failed_write_is_reported_and_read_again(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BotStore("demo", journal)
    directory = Directory(store)
    await directory.refresh("g1")

    def failing(chat: str, payload: dict[str, Any], key: str | None = None) -> asyncio.Future[Any]:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(OSError("disk full"))
        return failed

    monkeypatch.setattr(store, "append_outbox", failing)
    joined = directory.join("g1", User(id="ann", nickname="Ann"))
    assert directory.is_member("g1", "ann")  # at once, for the user's next frame
    with pytest.raises(OSError, match="disk full"):
        await joined
    assert not directory.is_member("g1", "ann")  # forgotten: read again before the next check
    monkeypatch.undo()
    loading = directory.ensure("g1", "ann", sending=False)
    assert loading is not None
    await loading
    assert not directory.is_member("g1", "ann")
    await directory.join("g1", User(id="ann", nickname="Ann"))  # the retry stores it
    assert directory.is_member("g1", "ann")
    fresh = Directory(store)
    await fresh.record("g1")
    assert [m.user.nickname for m in fresh.members("g1")] == ["Ann"]


async def test_the_change_logs_are_not_readable_by_clients(journal: Journal) -> None:
    directory = Directory(BotStore("demo", journal))
    await directory.join("g1", User(id="ann", nickname="Ann"))
    owner = Identity(user_id=LOG.removesuffix("/").split(":")[0], name="x", anonymous=False)
    assert not directory.may_read(owner, LOG + "g1") and not directory.may_read(owner, LOG)
