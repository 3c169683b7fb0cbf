"""Cluster benchmark: throughput and ack latency of 1, 2 and 3 engine nodes
(processes on this machine) sharing a PostgreSQL journal and NATS JetStream,
each next to one node *without* cluster mode on the same PostgreSQL backend
(the ratio), and the failover time over a number of kill -9s.

    callboard bench cluster [--quick] [--kills N] [--json]

PostgreSQL and nats-server are started here (Debian packages, 127.0.0.1) and
stopped at the end. Web chat clients connect to the nodes round-robin and keep
a window of unacknowledged messages each; throughput counts answers stored in
the shared journal. Failover: three nodes also run a Telegram bot polling a fake
Bot API (its connection leased to one node); kill -9 the node that polls, time
until every partition is owned by the survivors, until a chat of a moved
partition answers, until another node polls and until a Telegram message sent
after the kill is answered; start the node again, wait until it owns
partitions, repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg

from callboard.actors.cluster import partition_of
from callboard.bench.harness import free_port
from callboard.engine.events import SessionKey
from callboard.testing.cluster import (
    Node,
    balanced,
    connection_owners,
    make_nodes,
    start_all,
    telegram_bot,
)
from callboard.testing.fake_telegram import TOKEN, FakeBotAPI, private_chat, user
from callboard.testing.nats_server import NatsServer
from callboard.testing.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
WEB = (
    "rate_per_connection: {per_second: 1000000, burst: 1000000}, "
    "rate_per_user: {per_second: 1000000, burst: 1000000}"
)
PARTITIONS = 16
CONNECTION = "conn.tg.telegram"
SINGLE = """
name: single
engine:
  journal: {{url: "{url}", path: "{path}"}}
  admin: {{port: {port}}}
bots:
  - id: demo
    adapter: {{type: web, {web}}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


class Client:
    """One web chat user keeping ``window`` messages unacknowledged."""

    _ids = itertools.count(1)

    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, user: str
    ) -> None:
        self.session = session
        self.ws = ws
        self.user = user
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self._acked = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, base: str) -> Client:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{base}/web/demo/ws")
        hello = orjson.loads((await ws.receive()).data)
        return cls(session, ws, hello["user_id"])

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = orjson.loads(message.data)
            if frame.get("op") == "ack":
                at = self.sent.pop(frame["client_msg_id"], None)
                if at is not None:
                    self.latencies.append(time.monotonic() - at)
                    self._acked.set()

    async def say(self, chat: str, text: str) -> None:
        cid = f"b{next(self._ids)}"
        self.sent[cid] = time.monotonic()
        await self.ws.send_bytes(
            orjson.dumps({"op": "send", "chat_id": f"{self.user}:{chat}", "text": text, "client_msg_id": cid})
        )

    async def run(self, count: int, window: int, chats: int) -> None:
        for i in range(count):
            while len(self.sent) >= window:
                self._acked.clear()
                await self._acked.wait()
            await self.say(f"c{i % chats}", f"m{i}")
        while self.sent:
            self._acked.clear()
            await asyncio.wait_for(self._acked.wait(), 30)

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.session.close()


async def _answers(url: str) -> int:
    """Messages answered: lines of stored answers (a burst is answered in one message)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await (await conn.execute("SELECT payload FROM outbox")).fetchall()
    return sum(len(str(orjson.loads(p).get("text", "")).split("\n")) for (p,) in rows)


async def load(bases: list[str], url: str, users: int, per_user: int, window: int) -> dict[str, Any]:
    clients = [await Client.connect(bases[i % len(bases)]) for i in range(users)]
    try:
        began = time.monotonic()
        await asyncio.gather(*(c.run(per_user, window, 4) for c in clients))
        acked = time.monotonic()
        total = users * per_user
        while await _answers(url) < total and time.monotonic() - acked < 60:
            await asyncio.sleep(0.2)
        answered = time.monotonic()
        latencies = sorted(lat for c in clients for lat in c.latencies)
        return {
            "events": total,
            "acks_per_s": round(total / (acked - began), 1),
            "answers_per_s": round(total / (answered - began), 1),
            "ack_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "ack_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        }
    finally:
        for c in clients:
            await c.close()


async def _cluster_run(
    tmp: Path, pg: PostgresServer, nats: NatsServer, count: int, args: argparse.Namespace
) -> dict[str, Any]:
    url = pg.create_database(f"n{count}_")
    nodes = make_nodes(tmp / f"c{count}", count, url=url, nats=nats.url, web=WEB, partitions=PARTITIONS)
    try:
        await start_all(nodes, ROOT)
        await balanced(nodes, PARTITIONS)
        return await load([n.base for n in nodes], url, args.users, args.per_user, args.window)
    finally:
        for node in nodes:
            node.stop()


async def _single_run(tmp: Path, pg: PostgresServer, args: argparse.Namespace) -> dict[str, Any]:
    url = pg.create_database("single")
    port = free_port()
    (tmp / "single" / "var").mkdir(parents=True, exist_ok=True)
    config = tmp / "single" / "fleet.yaml"
    config.write_text(SINGLE.format(url=url, path=tmp / "single" / "var" / "j.sqlite3", port=port, web=WEB))
    node = Node("single", config, port, tmp / "single" / "log")
    node.start(ROOT)
    try:
        await node.ready()
        return await load([node.base], url, args.users, args.per_user, args.window)
    finally:
        node.stop()


async def _poller(nodes: list[Node]) -> Node:
    """The node running the Telegram bot's connection."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held = await connection_owners(nodes, CONNECTION)
        for node in nodes:
            if held.get(node.name):
                return node
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no node polls {CONNECTION}")


async def _failover(tmp: Path, pg: PostgresServer, nats: NatsServer, kills: int) -> dict[str, Any]:
    url = pg.create_database("failover")
    api = await FakeBotAPI().start()
    person = user(7000, "Kim")
    api.add_chat(private_chat(person))
    bots = telegram_bot("tg", TOKEN, api.base_url)
    nodes = make_nodes(tmp / "failover", 3, url=url, nats=nats.url, web=WEB, partitions=PARTITIONS, bots=bots)
    owned_after: list[float] = []
    answered_after: list[float] = []
    polled_after: list[float] = []
    telegram_after: list[float] = []
    try:
        await start_all(nodes, ROOT)
        await balanced(nodes, PARTITIONS)
        for k in range(kills):
            victim = await _poller(nodes)
            survivors = [n for n in nodes if n is not victim]
            moved = {int(p) for p in (await victim.cluster())["owned"]}
            client = await Client.connect(survivors[0].base)
            chat = next(
                f"c{i}"
                for i in range(10_000)
                if partition_of(SessionKey("demo", "private", f"{client.user}:c{i}"), PARTITIONS) in moved
            )
            killed = victim.kill()
            await client.say(chat, "after-kill")
            text = f"after-kill-{k}"
            api.push("message", api.message(private_chat(person), person, text))
            owned_at = answered_at = None
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                while time.monotonic() - killed < 30 and (owned_at is None or answered_at is None):
                    if owned_at is None:
                        with contextlib.suppress(aiohttp.ClientError, OSError):
                            counts = [len((await n.cluster())["owned"]) for n in survivors]
                            if sum(counts) == PARTITIONS:
                                owned_at = time.monotonic()
                    if answered_at is None:
                        rows = await (
                            await conn.execute(
                                "SELECT 1 FROM outbox WHERE chat=%s", (f"{client.user}:{chat}",)
                            )
                        ).fetchall()
                        if rows:
                            answered_at = time.monotonic()
                    await asyncio.sleep(0.05)
            await client.close()
            if owned_at is not None:
                owned_after.append(owned_at - killed)
            if answered_at is not None:
                answered_after.append(answered_at - killed)
            with contextlib.suppress(TimeoutError):
                await api.wait_calls("sendMessage", k + 1, 30)
            replies = [c.at for c in api.answered("sendMessage") if c["text"] == text]
            if replies:
                telegram_after.append(replies[0] - killed)
            polls = [c.at for c in api.calls_of("getUpdates") if c.at > killed]
            if polls:
                polled_after.append(polls[0] - killed)
            victim.start(ROOT)
            await victim.ready()
            await balanced(nodes, PARTITIONS, timeout=60)
    finally:
        for node in nodes:
            node.stop()
        await api.close()

    def dist(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        ordered = sorted(values)
        return {
            "min": round(ordered[0], 2),
            "p50": round(statistics.median(ordered), 2),
            "max": round(ordered[-1], 2),
        }

    return {
        "kills": kills,
        "partitions_owned_again_s": dist(owned_after),
        "moved_chat_answers_s": dist(answered_after),
        "never_answered": kills - len(answered_after),
        "polling_resumed_s": dist(polled_after),
        "telegram_answers_s": dist(telegram_after),
        "telegram_never_answered": kills - len(telegram_after),
        "telegram_answered_twice": sum(
            1 for count in Counter(c["text"] for c in api.answered("sendMessage")).values() if count > 1
        ),
        "polling_conflicts": api.conflicts,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    pg = PostgresServer()
    pg.start()
    nats = NatsServer()
    nats.start()
    try:
        with tempfile.TemporaryDirectory(prefix="callboard-bench-cluster-") as name:
            tmp = Path(name)
            single = await _single_run(tmp, pg, args)
            runs = {}
            for count in (1, 2, 3):
                runs[str(count)] = result = await _cluster_run(tmp, pg, nats, count, args)
                result["ratio_to_single_node"] = round(result["answers_per_s"] / single["answers_per_s"], 2)
            failover = await _failover(tmp, pg, nats, args.kills)
    finally:
        nats.stop()
        pg.stop()
    return {"single_node_postgres": single, "cluster": runs, "failover": failover}


def render(report: dict[str, Any]) -> str:
    lines = ["cluster benchmark (PostgreSQL journal, processes on this machine)"]
    s = report["single_node_postgres"]
    lines.append(
        f"  single node, no cluster: {s['answers_per_s']} answers/s, {s['acks_per_s']} acks/s, "
        f"ack p50 {s['ack_p50_ms']} ms p99 {s['ack_p99_ms']} ms"
    )
    for count, r in report["cluster"].items():
        lines.append(
            f"  {count} node(s): {r['answers_per_s']} answers/s (x{r['ratio_to_single_node']} of one node), "
            f"{r['acks_per_s']} acks/s, ack p50 {r['ack_p50_ms']} ms p99 {r['ack_p99_ms']} ms"
        )
    f = report["failover"]
    lines.append(
        f"  failover over {f['kills']} kills: partitions owned again {f['partitions_owned_again_s']} s, "
        f"a moved chat answering {f['moved_chat_answers_s']} s, never answered {f['never_answered']}"
    )
    lines.append(
        f"  polling connection (the killed node polled): another node polling {f['polling_resumed_s']} s, "
        f"a Telegram message sent after the kill answered {f['telegram_answers_s']} s, never answered "
        f"{f['telegram_never_answered']}, twice {f['telegram_answered_twice']}, "
        f"polling conflicts {f['polling_conflicts']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench cluster", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="less load and 3 kills")
    parser.add_argument("--kills", type=int, default=None, help="kill -9s for the failover figures (20)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.users = 6 if args.quick else 12
    args.per_user = 100 if args.quick else 400
    args.window = 8
    args.kills = args.kills if args.kills is not None else (3 if args.quick else 20)
    report = asyncio.run(measure(args))
    sys.stdout.write((orjson.dumps(report).decode() if args.json else render(report)) + "\n")
    return 0
