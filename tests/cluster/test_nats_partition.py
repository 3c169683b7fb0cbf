"""One node of three loses NATS (its connection goes through a proxy the test
cuts): it must fence itself (stop acting for its partitions) before the
survivors take them over, and no message is answered twice; the messages its
own users sent meanwhile (committed, never published) are answered by the new
owners."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import orjson
import psycopg
import pytest

from callboard.testing.cluster import TcpProxy, balanced, make_nodes, start_all
from callboard.testing.nats_server import NatsServer
from callboard.testing.postgres import PostgresServer
from tests.support import WEB, ChatClient

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 8
CHATS = [f"c{i}" for i in range(6)]


async def test_a_node_cut_off_from_nats_fences_itself_before_takeover(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    url = postgres.create_database("partition")
    proxy = TcpProxy(nats_server.port)
    await proxy.start()
    nats = [nats_server.url, nats_server.url, f"nats://127.0.0.1:{proxy.port}"]
    nodes = make_nodes(tmp_path, 3, url=url, nats=nats, web=WEB, partitions=PARTITIONS)
    cut_off = nodes[2]
    clients: list[ChatClient] = []
    try:
        await start_all(nodes, ROOT)
        await balanced(nodes, PARTITIONS)
        users = {"a": nodes[0], "b": nodes[1], "c": cut_off}
        by_user = {u: await ChatClient.connect(n.base, user=u) for u, n in users.items()}
        clients += by_user.values()
        sent: dict[str, str] = {}
        n = 0

        async def round_of() -> None:
            nonlocal n
            for client in by_user.values():
                for chat in CHATS:
                    sent[await client.say(f"m{n}", chat_id=chat)] = f"m{n}"
                    n += 1

        for _ in range(5):
            await round_of()
            await asyncio.sleep(0.2)
        await proxy.cut()
        cut_at = time.monotonic()
        fenced_at = taken_at = None
        while time.monotonic() - cut_at < 15 and (fenced_at is None or taken_at is None):
            await round_of()
            if fenced_at is None and not (await cut_off.cluster())["owned"]:
                fenced_at = time.monotonic() - cut_at
            if taken_at is None:
                owned = [len((await node.cluster())["owned"]) for node in nodes[:2]]
                if sum(owned) == PARTITIONS:
                    taken_at = time.monotonic() - cut_at
            await asyncio.sleep(0.1)
        for _ in range(5):
            await round_of()
            await asyncio.sleep(0.2)
        acked = {sent[f["client_msg_id"]] for c in by_user.values() for f in c.of("ack")}
        seen: collections.Counter[str] = collections.Counter()
        deadline = time.monotonic() + 40
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                rows = await (await conn.execute("SELECT payload FROM outbox")).fetchall()
                seen = collections.Counter(
                    line for (p,) in rows for line in str(orjson.loads(p).get("text", "")).split("\n")
                )
                if acked <= set(seen):
                    break
                await asyncio.sleep(0.5)
        missing = acked - set(seen)
        twice = {t: c for t, c in seen.items() if c > 1}
        print(
            f"\nfenced {fenced_at}s after the cut, partitions taken over {taken_at}s after it; "
            f"acked {len(acked)}, missing {len(missing)}, answered twice {len(twice)}"
        )
        assert fenced_at is not None and taken_at is not None
        assert fenced_at < taken_at, "the cut-off node still held partitions when others took them"
        assert not twice, f"answered twice: {dict(list(twice.items())[:10])}"
        assert not missing, f"acknowledged but never answered: {sorted(missing)[:10]}"
    finally:
        for client in clients:
            await client.close()
        for node in nodes:
            node.stop()
        await proxy.cut()
