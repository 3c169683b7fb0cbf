"""Connection leases of two nodes on a real NATS KV bucket, in one process: one
owner at a time, renewals by compare-and-set, a lease taken over elsewhere stops
the connection, local expiry stops it while the server still holds the key
(fencing), a clean release hands it on at once, and connections spread."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.api import KeyValueConfig

from callboard.actors.cluster_connections import ConnectionLeases, connection_key
from callboard.engine.clock import ManualClock
from callboard.testing.nats_server import NatsServer

pytestmark = pytest.mark.timeout(60)
TTL = 3.0


@pytest.fixture
async def kv(nats_server: NatsServer) -> AsyncIterator[object]:
    nc = await nats.connect(nats_server.url)
    try:
        yield await nc.jetstream().create_key_value(KeyValueConfig(bucket="leases", ttl=TTL, history=1))
    finally:
        await nc.close()


def node(name: str, clock: ManualClock, bots: list[str]) -> tuple[ConnectionLeases, list[bool]]:
    """A node's leases claiming ``bots``; the list records every start (True) and stop (False)."""
    leases = ConnectionLeases(name, TTL, clock, lambda sent: sent + TTL * 0.75)
    changes: list[bool] = []
    for bot in bots:
        leases.claim(bot, "telegram", changes.append)
    return leases, changes


async def keys(kv: object) -> set[str]:
    try:
        return set(await kv.keys())  # type: ignore[attr-defined]
    except nats.js.errors.NoKeysError:
        return set()


async def test_one_owner_takeover_fencing_and_release(kv: object) -> None:
    clock = ManualClock()
    a, a_changes = node("a", clock, ["tg"])
    b, b_changes = node("b", clock, ["tg"])
    key = connection_key("tg", "telegram")

    await a.balance(kv, await keys(kv), 2)
    await b.balance(kv, await keys(kv), 2)
    assert a_changes == [True] and b_changes == []
    assert a.snapshot()[key] == {"owner": "a", "here": True, "epoch": a.claims["tg"].epoch}
    assert b.snapshot()[key] == {"owner": "a", "here": False, "epoch": None}

    await a.renew(kv)  # compare-and-set on the last revision
    assert a.claims["tg"].revision > a.claims["tg"].epoch and a_changes == [True]

    # fencing: past 0.75 x TTL without a renewal the owner stops, while the server
    # still holds the key (no one else can start it yet)
    await clock.advance(TTL * 0.8)
    a.expire()
    assert a_changes == [True, False] and not a.snapshot()[key]["here"]
    await b.balance(kv, await keys(kv), 2)
    assert b_changes == [], "taken while the fenced owner's key was still held"

    # the key freed (as the server does at TTL): the other node takes it, and a late
    # renewal of the old epoch is refused
    await kv.delete(key)  # type: ignore[attr-defined]
    await b.balance(kv, await keys(kv), 2)
    assert b_changes == [True] and b.counters.takeovers == 1
    a.claims["tg"].epoch = a.claims["tg"].revision = 1  # as if it still believed it held the lease
    a.claims["tg"].valid_until = clock.now() + TTL
    await a.renew(kv)
    assert a_changes == [True, False, False] and a.counters.lost == 2

    # a clean release (the bot stopped) deletes the key: the other takes it at once
    b.unclaim("tg", kv)
    await b.release_all(kv)
    a.claims["tg"].epoch = 0
    await a.balance(kv, await keys(kv), 2)
    assert a_changes[-1] is True and a.counters.acquired == 2


async def test_connections_spread_over_the_nodes(kv: object) -> None:
    clock = ManualClock()
    a, a_changes = node("a", clock, ["tg1", "tg2"])
    b, b_changes = node("b", clock, ["tg1", "tg2"])
    await a.balance(kv, await keys(kv), 2)  # a takes its share (one) and leaves the other
    await b.balance(kv, await keys(kv), 2)
    assert a_changes == [True] and b_changes == [True]
    assert {c.bot for c in a.claims.values() if c.epoch} != {c.bot for c in b.claims.values() if c.epoch}
    await a.balance(kv, await keys(kv), 2)  # a sees b's
    assert a_changes == [True]

    # b's connection freed (b still a live node): a, at its share, leaves it to the
    # others for two rounds, then runs it
    for claim in b.claims.values():
        if claim.epoch:
            await kv.delete(claim.key)  # type: ignore[attr-defined]
    for _ in range(2):
        await a.balance(kv, await keys(kv), 2)
        assert a_changes == [True]
    await a.balance(kv, await keys(kv), 2)
    assert a_changes == [True, True]
