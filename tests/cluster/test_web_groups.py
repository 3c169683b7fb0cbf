"""Web chat groups on two nodes: a user who joined through one node's socket reads and
writes the group through the other's; a mute made by the handler on the node owning the
group's partition is enforced on the node holding the muted user's socket."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from callboard.actors.cluster import partition_of
from callboard.engine.events import SessionKey
from callboard.testing.cluster import Node, balanced, make_nodes, start_all
from callboard.testing.nats_server import NatsServer
from callboard.testing.postgres import PostgresServer
from callboard.testing.webhook_receiver import Answer, WebhookReceiver
from tests.support import WEB, ChatClient

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 8
ECHO = "        handler_config: {stages: [{type: echo}]}\n"


async def answer(client: ChatClient, cid: str) -> dict[str, object]:
    return await client.wait_for(lambda f: f.get("client_msg_id") == cid and f["op"] in ("ack", "error"))


async def test_group_membership_and_mutes_hold_across_nodes(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    url = postgres.create_database("web_groups")
    receiver = await WebhookReceiver().start()
    receiver.default = Answer(body={"actions": []})
    # joins also go to a webhook, whose answer may mute someone (a handler's mute_member)
    joined_hook = (
        "      - event_type: group.member_joined\n        handler_type: webhook\n"
        f'        handler_config: {{url: "{receiver.url}", response_actions: true}}\n'
    )
    nodes = make_nodes(tmp_path, 2, url=url, nats=nats_server.url, web=WEB, partitions=PARTITIONS)
    for node in nodes:
        text = node.config.read_text()
        assert ECHO in text
        node.config.write_text(text.replace(ECHO, ECHO + joined_hook))
    clients: list[ChatClient] = []

    async def connect(node: Node, user: str) -> ChatClient:
        client = await ChatClient.connect(node.base, user=user)
        clients.append(client)
        return client

    try:
        await start_all(nodes, ROOT)
        await balanced(nodes, PARTITIONS)
        partition = partition_of(SessionKey("demo", "group", "g1"), PARTITIONS)
        owners = [n for n in nodes if partition in {int(p) for p in (await n.cluster())["owned"]}]
        assert len(owners) == 1
        home = owners[0]  # runs the group's handlers (the mute)
        away = nodes[1] if home is nodes[0] else nodes[0]

        # bob joins through the node away from the group's handlers; it caches the group
        bob = await connect(away, "bob")
        assert (await bob.join("g1", "Team"))["op"] == "ack"
        assert (await answer(bob, await bob.say("hi", chat_id="g1", chat_type="group")))["op"] == "ack"
        # ann joins through the other node, then reads and writes through this one
        ann_home = await connect(home, "ann")
        assert (await ann_home.join("g1"))["op"] == "ack"
        ann_away = await connect(away, "ann")
        assert (await ann_away.subscribe("g1", group=True))["op"] == "subscribed"
        reply = await answer(ann_away, await ann_away.say("from away", chat_id="g1", chat_type="group"))
        assert reply["op"] == "ack"
        deliveries = await receiver.wait_for(2, timeout=20)
        assert [d.body["event"]["member"]["id"] for d in deliveries] == ["bob", "ann"]

        # the next join's answer mutes bob: made on `home`, bob's socket is on `away`
        receiver.script(
            Answer(body={"actions": [{"type": "mute_member", "params": {"user_id": "bob", "duration": 0}}]})
        )
        cat = await connect(home, "cat")
        assert (await cat.join("g1"))["op"] == "ack"
        await receiver.wait_for(3, timeout=20)
        await ann_away.wait_for(lambda f: f["op"] == "muted" and f["user_id"] == "bob", timeout=20)
        muted_seen = time.monotonic()
        while True:
            reply = await answer(bob, await bob.say("still here?", chat_id="g1", chat_type="group"))
            if reply["op"] == "error":
                break
            assert time.monotonic() - muted_seen < 10, "the mute was not enforced on the other node"
        enforced = time.monotonic() - muted_seen
        assert reply["code"] == "muted" and "until unmuted" in str(reply["reason"])
        print(f"\nmute made on {home.name}, enforced on {away.name} {enforced * 1000:.0f} ms after its frame")
        # and a restart of the away node keeps it (read back from PostgreSQL)
        away.stop()
        away.start(ROOT)
        await away.ready()
        bob_again = await connect(away, "bob")
        reply = await answer(bob_again, await bob_again.say("after restart", chat_id="g1", chat_type="group"))
        assert reply["op"] == "error" and reply["code"] == "muted"
        assert (await bob_again.subscribe("g1", group=True))["op"] == "subscribed"  # still a member
    finally:
        for client in clients:
            await client.close()
        for node in nodes:
            node.stop()
        await receiver.stop()
