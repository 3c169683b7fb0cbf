"""Two engine nodes over a journal sharded over two PostgreSQL databases, NATS
JetStream between them; web chat users on both nodes; one node killed with -9
mid-stream. Every acknowledged message is answered exactly once and in order,
each chat's rows are on one shard only, and both shards carry chats."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import psycopg
import pytest

from callboard.engine.journal_sharded import chat_hash
from callboard.testing.cluster import balanced, make_nodes, start_all
from callboard.testing.nats_server import NatsServer
from callboard.testing.postgres import PostgresServer
from tests.cluster.test_failover import Talk, _answers
from tests.support import WEB, ChatClient

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 8


async def _chats_on(url: str) -> tuple[set[str], set[str]]:
    """The chat ids whose events, and whose stored output, this shard holds."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        events = {
            str(r[0]).split(":", 1)[1]
            for r in await (await conn.execute("SELECT session FROM events")).fetchall()
        }
        output = {
            str(r[0]) for r in await (await conn.execute("SELECT DISTINCT chat FROM outbox")).fetchall()
        }
    return events, output


async def test_two_nodes_over_two_shards_survive_kill_9(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    urls = [postgres.create_database("shard") for _ in range(2)]
    nodes = make_nodes(tmp_path, 2, url=urls, nats=nats_server.url, web=WEB, partitions=PARTITIONS)
    clients: dict[str, ChatClient] = {}
    try:
        await start_all(nodes, ROOT)
        print("\nbalanced:", await balanced(nodes, PARTITIONS))
        survivor, victim = nodes
        users = {f"u{n}{k}": nodes[n] for n in range(2) for k in range(2)}
        for user, node in users.items():
            clients[user] = await ChatClient.connect(node.base, user=user)
        talk = Talk(clients)
        sent = talk.sent
        while len(talk.acked()) < 100:
            await talk.round_of(list(users))
            await asyncio.sleep(0.2)
        victim.kill()
        on_survivor = [u for u, node in users.items() if node is survivor]
        for user in [u for u in users if u not in on_survivor]:
            await clients.pop(user).close()
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 4.0:  # through the takeover of the victim's partitions
            await talk.round_of(on_survivor)
            await asyncio.sleep(0.3)
        ok = talk.acked()
        answers: dict[tuple[str, str], list[str]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answers = await _answers(survivor.base, list(users))
            if ok <= {line for lines in answers.values() for line in lines}:
                break
            await asyncio.sleep(0.5)
        seen = collections.Counter(line for lines in answers.values() for line in lines)
        missing = ok - set(seen)
        duplicated = {t: c for t, c in seen.items() if c > 1}
        disorder = [
            chat for chat, lines in answers.items() if lines != [t for t in sent[chat] if t in set(lines)]
        ]
        shards = [await _chats_on(url) for url in urls]
        print(
            f"acked {len(ok)}, answered {len(seen)}, missing {len(missing)}, duplicated {len(duplicated)}, "
            f"chats out of order {len(disorder)}, chats per shard {[len(events) for events, _ in shards]}"
        )
        assert not missing, f"acknowledged but never answered: {sorted(missing)[:10]}"
        assert not duplicated, f"answered twice: {dict(list(duplicated.items())[:10])}"
        assert not disorder, f"answers out of order in {disorder[:5]}"
        (events0, output0), (events1, output1) = shards
        assert events0 and events1, "every chat on one shard"
        assert not events0 & events1 and not output0 & output1  # a chat lives on one shard
        for index, (events, output) in enumerate(shards):
            assert all(chat_hash("demo", chat) % 2 == index for chat in events | output)
    finally:
        for client in clients.values():
            await client.close()
        for node in nodes:
            node.stop()
