"""Telegram bots in long-polling mode on several engine nodes: each one's connection
is leased (``conn.<bot>.telegram``), so exactly one node polls it, and the
connections spread over the nodes. Kill -9 of a polling node
moves polling to a survivor (time measured); a polling node cut off from NATS
stops polling before another starts. Every message sent to the chats is answered
exactly once (an unconfirmed batch read again by the new owner is dropped by the
shared journal's dedup)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from callboard.testing.cluster import (
    RATE_LIMITS_OFF,
    Node,
    TcpProxy,
    connection_owners,
    echo_bot,
    make_nodes,
    start_all,
    telegram_bot,
)
from callboard.testing.fake_lark import FakeLark
from callboard.testing.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from callboard.testing.fake_telegram import TOKEN, FakeBotAPI, private_chat, user
from callboard.testing.nats_server import NatsServer
from callboard.testing.postgres import PostgresServer
from tests.support import WEB

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
KEY = "conn.tg.telegram"
PEOPLE = [user(5000 + i, f"P{i}") for i in range(8)]


TOKEN2 = "654321:TEST-callboard-second_bot"


async def _sole_owner(nodes: list[Node], key: str = KEY, timeout: float = 30.0) -> Node:
    deadline = time.monotonic() + timeout
    held: dict[str, bool] = {}
    while time.monotonic() < deadline:
        held = await connection_owners(nodes, key)
        owners = [name for name, here in held.items() if here]
        if len(owners) == 1:
            return next(node for node in nodes if node.name == owners[0])
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no single owner of {key} within {timeout}s: {held}")


async def _tally(
    sent: list[str], answered: Callable[[], collections.Counter[str]], timeout: float = 30.0
) -> tuple[collections.Counter[str], list[str], dict[str, int]]:
    """Wait until every text sent is answered (or ``timeout``): the answers' counts,
    the texts never answered, those answered more than once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(sent) - set(answered()):
        await asyncio.sleep(0.1)
    counts = answered()
    return counts, [t for t in sent if t not in counts], {t: c for t, c in counts.items() if c > 1}


async def _kill_mid_stream(
    owner: Node, say: Callable[[int], None], wait_acked: Callable[..., Awaitable[None]]
) -> float:
    """Traffic until the platform has its acknowledgements, kill -9 of ``owner``,
    5 s more traffic through the takeover, until that is acknowledged too. Returns
    when the kill was sent (``time.monotonic()``)."""
    for _ in range(5):
        say(4)
        await asyncio.sleep(0.1)
    await wait_acked()
    killed_at = owner.kill()
    while time.monotonic() - killed_at < 5.0:
        say(2)
        await asyncio.sleep(0.1)
    await wait_acked(timeout=30)
    return killed_at


async def test_one_node_polls_and_a_survivor_takes_over_after_kill_9(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    """Two polling bots: their connections run on two different nodes; the node
    polling ``tg`` is killed, ``tg2`` goes on where it was."""
    apis = {"tg": await FakeBotAPI().start(), "tg2": await FakeBotAPI(TOKEN2, username="second").start()}
    for api in apis.values():
        for person in PEOPLE:
            api.add_chat(private_chat(person))
    url = postgres.create_database("conn_lease")
    bots = telegram_bot("tg", TOKEN, apis["tg"].base_url) + telegram_bot("tg2", TOKEN2, apis["tg2"].base_url)
    nodes = make_nodes(tmp_path, 3, url=url, nats=nats_server.url, web=WEB, partitions=8, bots=bots)
    sent: list[str] = []
    n = 0

    def say(count: int) -> None:
        nonlocal n
        for _ in range(count):
            for bot, api in apis.items():
                person = PEOPLE[n % len(PEOPLE)]
                text = f"{bot}-m{n}"
                api.push("message", api.message(private_chat(person), person, text))
                sent.append(text)
            n += 1

    def answered() -> collections.Counter[str]:
        return collections.Counter(c["text"] for api in apis.values() for c in api.answered("sendMessage"))

    api = apis["tg"]
    try:
        await start_all(nodes, ROOT)
        owner = await _sole_owner(nodes)
        other_owner = await _sole_owner(nodes, "conn.tg2.telegram")
        for _ in range(10):  # traffic while one node polls each bot
            say(2)
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and set(sent) - set(answered()):
            await asyncio.sleep(0.1)
        assert not set(sent) - set(answered()), "not all answered before the kill"
        held = await connection_owners(nodes, KEY)
        assert sorted(held.values()) == [False, False, True], held
        assert other_owner is not owner, "both connections on one node"
        assert all(a.conflicts == 0 for a in apis.values()), "two nodes polled at once"

        killed_at = owner.kill()
        survivors = [node for node in nodes if node is not owner]
        first_after = ""
        while time.monotonic() - killed_at < 6.0:  # keep talking through the takeover
            say(1)
            first_after = first_after or sent[-2]  # tg's first message sent after the kill
            await asyncio.sleep(0.1)
        counts, missing, doubled = await _tally(sent, answered)
        polls_after = [c for c in api.calls_of("getUpdates") if c.at > killed_at]
        assert polls_after, "nobody polled after the kill"
        takeover = polls_after[0].at - killed_at
        first_answer = next((c.at for c in api.answered("sendMessage") if c["text"] == first_after), 0.0)
        answered_after = first_answer - killed_at if first_answer else float("nan")
        new_owner = await _sole_owner(survivors)
        state = await new_owner.cluster()
        print(
            f"\nconnections on {owner.name} (tg) and {other_owner.name} (tg2); {owner.name} killed; "
            f"{new_owner.name} polled tg {takeover:.2f}s after the kill; tg's first message sent after "
            f"the kill answered {answered_after:.2f}s after it; "
            f"sent {len(sent)}, answered {len(counts)}, missing {len(missing)}, "
            f"answered twice {len(doubled)}, polling conflicts {[a.conflicts for a in apis.values()]}; "
            f"lease {state['connections'][KEY]}, handovers {state['connection_handovers']}"
        )
        assert not missing, f"never answered: {missing[:10]}"
        assert not doubled, f"answered more than once: {doubled}"
        assert all(a.conflicts == 0 for a in apis.values()), "two nodes polled at once"
        assert state["connection_handovers"]["takeovers"] >= 1
        assert takeover < 5.0, f"polling resumed {takeover:.2f}s after the kill"
        async with aiohttp.ClientSession() as http, http.get(f"{new_owner.base}/metrics") as response:
            metrics = await response.text()
        epoch = float(state["connections"][KEY]["epoch"])
        assert f'callboard_cluster_connection_held{{connection="{KEY}"}} 1.0' in metrics
        assert f'callboard_cluster_connection_epoch{{connection="{KEY}"}} {epoch}' in metrics
        assert 'callboard_cluster_connection_handovers_total{kind="takeovers"}' in metrics
    finally:
        for node in nodes:
            node.stop()
        for api in apis.values():
            await api.close()


async def test_a_polling_node_cut_off_from_nats_stops_before_another_polls(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    api = await FakeBotAPI().start()
    for person in PEOPLE:
        api.add_chat(private_chat(person))
    url = postgres.create_database("conn_cut")
    proxy = TcpProxy(nats_server.port)
    await proxy.start()
    bots = telegram_bot("tg", TOKEN, api.base_url)
    nats = [f"nats://127.0.0.1:{proxy.port}", nats_server.url]
    nodes = make_nodes(tmp_path, 2, url=url, nats=nats, web=WEB, partitions=8, bots=bots)
    cut_off, other = nodes
    sent: list[str] = []
    n = 0

    def say(count: int) -> None:
        nonlocal n
        for _ in range(count):
            person = PEOPLE[n % len(PEOPLE)]
            api.push("message", api.message(private_chat(person), person, f"m{n}"))
            sent.append(f"m{n}")
            n += 1

    try:
        cut_off.start(ROOT)  # first, so it takes the connection
        await cut_off.ready()
        assert await _sole_owner([cut_off]) is cut_off
        other.start(ROOT)
        await other.ready()
        for _ in range(5):
            say(4)
            await asyncio.sleep(0.1)
        await proxy.cut()
        cut_at = time.monotonic()
        stopped_at = taken_at = None
        while time.monotonic() - cut_at < 15 and (stopped_at is None or taken_at is None):
            say(1)
            held = await connection_owners(nodes, KEY)
            if stopped_at is None and not held.get(cut_off.name):
                stopped_at = time.monotonic() - cut_at
            if taken_at is None and held.get(other.name):
                taken_at = time.monotonic() - cut_at
            await asyncio.sleep(0.05)
        for _ in range(5):
            say(4)
            await asyncio.sleep(0.1)
        _, missing, doubled = await _tally(
            sent, lambda: collections.Counter(c["text"] for c in api.answered("sendMessage"))
        )
        print(
            f"\npolling node cut off from NATS: stopped polling {stopped_at}s after the cut, "
            f"the other node polling {taken_at}s after it; sent {len(sent)}, missing {len(missing)}, "
            f"answered twice {len(doubled)}, polling conflicts {api.conflicts}"
        )
        assert stopped_at is not None and taken_at is not None
        assert stopped_at < taken_at, "the cut-off node still polled when the other took over"
        assert api.conflicts == 0, "two nodes polled at once"
        assert not missing, f"never answered: {missing[:10]}"
        assert not doubled, f"answered more than once: {doubled}"
    finally:
        for node in nodes:
            node.stop()
        await proxy.cut()
        await api.close()


SLACK_SOCKET = """
type: slack
mode: socket
bot_token: "{bot_token}"
app_token: "{app_token}"
base_url: "{base_url}"
request_timeout: 5
ping_interval: 0.5
tier_limits: false
"""


async def test_slack_socket_mode_runs_on_one_node_and_moves_on_kill_9(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    """Slack's Socket Mode under the same lease: one socket open across the nodes
    (the fake counts the most open at once); after kill -9 of its node, another
    opens one and Slack's unacknowledged envelopes come again there."""
    slack = await FakeSlack(echo=False).start()
    people = [f"U0P{i}" for i in range(4)]
    dms = []
    for person in people:
        slack.add_user(person, person.lower())
        dms.append(slack.im(person))
    url = postgres.create_database("conn_slack")
    adapter = SLACK_SOCKET.format(bot_token=BOT_TOKEN, app_token=APP_TOKEN, base_url=slack.base_url)
    bots = echo_bot("sl", adapter + RATE_LIMITS_OFF)
    nodes = make_nodes(tmp_path, 2, url=url, nats=nats_server.url, web=WEB, partitions=8, bots=bots)
    sent: list[str] = []

    def say(count: int) -> None:
        for _ in range(count):
            k = len(sent)
            slack.push(slack.message(dms[k % len(dms)], people[k % len(people)], f"s{k}"))
            sent.append(f"s{k}")

    def answered() -> collections.Counter[str]:
        return collections.Counter(str(c["text"]) for c in slack.answered("chat.postMessage"))

    try:
        await start_all(nodes, ROOT)
        owner = await _sole_owner(nodes, "conn.sl.slack")
        await slack.wait_socket(1)
        killed_at = await _kill_mid_stream(owner, say, slack.wait_acked)
        _, missing, doubled = await _tally(sent, answered)
        survivor = next(node for node in nodes if node is not owner)
        # Slack's chat.postMessage takes no idempotency key: a reply the killed node sent
        # before its receipt was durable is sent again after the takeover (the documented
        # send-vs-receipt window). Only such doubles are allowed: the first answer must
        # have come in the last second before the kill (from the killed node, its receipt
        # not yet durable).
        replies = slack.answered("chat.postMessage")
        first = {text: min(c.at for c in replies if c["text"] == text) for text in doubled}
        in_window = {text: killed_at - at for text, at in first.items() if 0 <= killed_at - at <= 1.0}
        print(
            f"\nSlack Socket Mode: sockets opened {slack.opened}, most open at once {slack.max_open}; "
            f"{owner.name} killed, {survivor.name} took over; sent {len(sent)}, missing {len(missing)}, "
            f"answered twice {len(doubled)} (first answer before the kill by "
            f"{', '.join(f'{gap * 1000:.0f} ms' for gap in in_window.values()) or '-'})"
        )
        assert await _sole_owner([survivor], "conn.sl.slack") is survivor
        assert slack.max_open == 1, "two nodes had a socket open at once"
        assert not missing, f"never answered: {missing[:10]}"
        outside = {text: count for text, count in doubled.items() if text not in in_window}
        assert not outside, f"answered more than once, not inside the send-vs-receipt window: {outside}"
    finally:
        for node in nodes:
            node.stop()
        await slack.close()


async def test_lark_long_connection_runs_on_one_node_and_moves_on_kill_9(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    """Lark's long connection under the same lease: at most one connection open
    across the nodes (sampled every 20 ms); after kill -9 of its node another node
    connects and Lark sends what was never acknowledged again."""
    lark = await FakeLark().start()
    people = [f"ou_p{i}" for i in range(4)]
    for person in people:
        lark.add_user(person, person)
    bots = echo_bot("lk", lark.adapter_yaml("ws") + RATE_LIMITS_OFF + "\nrequest_timeout: 5\n")
    url = postgres.create_database("conn_lark")
    nodes = make_nodes(tmp_path, 2, url=url, nats=nats_server.url, web=WEB, partitions=8, bots=bots)
    sent: list[str] = []
    most_open = 0

    async def sample() -> None:
        nonlocal most_open
        while True:
            most_open = max(most_open, len(lark.connections))
            await asyncio.sleep(0.02)

    def say(count: int) -> None:
        for _ in range(count):
            k = len(sent)
            person = people[k % len(people)]
            lark.push(lark.message_event(lark.p2p(person), person, f"l{k}"))
            sent.append(f"l{k}")

    sampler = asyncio.ensure_future(sample())
    try:
        await start_all(nodes, ROOT)
        owner = await _sole_owner(nodes, "conn.lk.lark")
        await _kill_mid_stream(owner, say, lark.wait_acked)
        _, missing, doubled = await _tally(sent, lambda: collections.Counter(lark.texts_sent()))
        survivor = next(node for node in nodes if node is not owner)
        print(
            f"\nLark long connection: most open at once {most_open}; {owner.name} killed, "
            f"{survivor.name} took over; sent {len(sent)}, missing {len(missing)}, "
            f"answered twice {len(doubled)}"
        )
        assert await _sole_owner([survivor], "conn.lk.lark") is survivor
        assert most_open == 1, "two nodes had a long connection open at once"
        assert not missing, f"never answered: {missing[:10]}"
        assert not doubled, f"answered more than once: {doubled}"
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        for node in nodes:
            node.stop()
        await lark.close()
