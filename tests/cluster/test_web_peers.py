"""Web chat on two nodes: a socket connected to one node gets, live, the replies
the other node makes for the chats whose partition it owns (handed over NATS to
the socket's node), each once, in order; the stored output still has them all
for a client that reconnects."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import pytest

from callboard.actors.cluster import partition_of
from callboard.engine.events import SessionKey
from callboard.testing.cluster import balanced, make_nodes, start_all
from callboard.testing.nats_server import NatsServer
from callboard.testing.postgres import PostgresServer
from tests.support import WEB, ChatClient

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 8
CHATS = [f"c{i}" for i in range(8)]
ROUNDS = 10


async def test_replies_made_on_another_node_are_pushed_live(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    url = postgres.create_database("web_peers")
    nodes = make_nodes(tmp_path, 2, url=url, nats=nats_server.url, web=WEB, partitions=PARTITIONS)
    clients: dict[str, ChatClient] = {}
    try:
        await start_all(nodes, ROOT)
        await balanced(nodes, PARTITIONS)
        owned = {node.name: {int(p) for p in (await node.cluster())["owned"]} for node in nodes}
        homes = {"u0": nodes[0], "u1": nodes[1]}
        for user, node in homes.items():
            clients[user] = await ChatClient.connect(node.base, user=user)
        # which chats are answered on the other node than the one their socket is on
        remote: set[tuple[str, str]] = set()
        for user, node in homes.items():
            for chat in CHATS:
                p = partition_of(SessionKey("demo", "private", f"{user}:{chat}"), PARTITIONS)
                if p not in owned[node.name]:
                    remote.add((user, chat))
        assert remote and len(remote) < len(homes) * len(CHATS), "chats on both sides, please"

        sent_at: dict[str, float] = {}
        live_at: dict[str, float] = {}
        order: dict[tuple[str, str], list[str]] = collections.defaultdict(list)

        async def watch() -> None:  # when each reply arrives on its socket
            while True:
                now = time.monotonic()
                for client in clients.values():
                    for frame in client.of("message"):
                        live_at.setdefault(frame["text"], now)
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        try:
            for r in range(ROUNDS):
                for user, client in clients.items():
                    for chat in CHATS:
                        text = f"{user}-{chat}-{r}"
                        sent_at[text] = time.monotonic()
                        await client.say(text, chat_id=chat)
                        order[(user, chat)].append(text)
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(live_at) < len(sent_at):
                await asyncio.sleep(0.05)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        missing = sorted(set(sent_at) - set(live_at))
        live: dict[tuple[str, str], list[str]] = {}
        for user, client in clients.items():
            for chat in CHATS:
                live[(user, chat)] = [
                    f["text"] for f in client.of("message") if f["chat_id"] == client.chat(chat)
                ]
        doubled = {k: v for k, v in live.items() if len(v) != len(set(v))}
        disorder = [k for k, v in live.items() if v != [t for t in order[k] if t in set(v)]]

        def latency(chats: set[tuple[str, str]]) -> list[float]:
            return sorted(live_at[t] - sent_at[t] for k in chats for t in order[k] if t in live_at)

        here = {k for k in order if k not in remote}
        far, near = latency(remote), latency(here)
        print(
            f"\n{len(sent_at)} messages, {len(remote)} of {len(order)} chats answered on the other node; "
            f"pushed live {len(live_at)}, missing {len(missing)}, doubled chats {len(doubled)}, "
            f"out of order {len(disorder)}; send -> live reply p50/max: same node "
            f"{near[len(near) // 2] * 1000:.0f}/{near[-1] * 1000:.0f} ms, other node "
            f"{far[len(far) // 2] * 1000:.0f}/{far[-1] * 1000:.0f} ms"
        )
        assert not missing, f"not pushed live: {missing[:10]}"
        assert not doubled, f"pushed twice: {list(doubled.items())[:3]}"
        assert not disorder, f"out of order: {disorder[:3]}"

        # the durable copy: a client reconnecting to the other node reads every reply
        user, chat = sorted(remote)[0]
        other = nodes[1] if homes[user] is nodes[0] else nodes[0]
        again = await ChatClient.connect(other.base, user=user)
        clients["again"] = again
        await again.subscribe(chat, since=0)
        stored = [f["text"] for f in again.of("message") if f["chat_id"] == again.chat(chat)]
        assert stored == order[(user, chat)]
    finally:
        for client in clients.values():
            await client.close()
        for node in nodes:
            node.stop()
