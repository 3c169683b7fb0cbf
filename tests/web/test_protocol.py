"""The web chat protocol over real websockets against a running fleet."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from callboard.app import Running
from tests.support import ChatClient, chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fleet(tmp_path: Path) -> Running:
    async with running_fleet(fleet_config(tmp_path)) as running:
        yield running  # type: ignore[misc]


async def test_send_is_acked_then_answered(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        cid = await client.say("hello")
        ack = await client.wait_for(lambda f: f["op"] == "ack")
        assert ack["client_msg_id"] == cid and ack["message_id"] and ack["event_id"]
        reply = await client.wait_for(lambda f: f["op"] == "message")
        assert reply["text"] == "hello"
        assert reply["chat_id"] == client.chat("c1") and reply["seq"] == 1
        # the ack only went out once the event was committed
        status = await fleet.journal.query("SELECT COUNT(*) FROM events WHERE type='message.received'")
        assert status == [(1,)]


async def test_repeated_client_msg_id_is_a_duplicate(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as client:
        await client.say("once", client_msg_id="same")
        await client.wait_for(lambda f: f["op"] == "ack")
        await client.say("once", client_msg_id="same")
        dup = await client.wait_for(lambda f: f["op"] == "duplicate")
        assert dup["client_msg_id"] == "same"
        await client.wait_count("message", 1)
    assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(1,)]


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        ("{not json", "bad_json", "not valid JSON"),
        ("[1, 2]", "bad_frame", "JSON object"),
        ('{"op": "shout", "client_msg_id": "x"}', "unknown_op", "unknown op"),
        ('{"op": "send", "chat_id": "c1", "client_msg_id": "x"}', "bad_frame", "text"),
        ('{"op": "send", "chat_id": "", "text": "t", "client_msg_id": "x"}', "bad_frame", "chat_id"),
        ('{"op": "subscribe", "chat_id": "c1", "since": -1}', "bad_frame", "since"),
        ('{"op": "subscribe", "chat_id": "c1", "since": 9223372036854775808}', "bad_frame", "since"),
        ('{"op": "send", "chat_id": "c1", "text": "t", "client_msg_id": "x"}', "forbidden", "private chat"),
        ('{"op": "join", "chat_id": "a:b", "client_msg_id": "x"}', "bad_frame", "':'"),
    ],
)
async def test_bad_frames_get_errors_and_keep_the_connection(
    fleet: Running, payload: str, code: str, reason: str
) -> None:
    async with chat_client(fleet.base_url) as client:
        await client.raw(payload)
        error = await client.wait_for(lambda f: f["op"] == "error")
        assert error["code"] == code and reason in error["reason"]
        await client.say("still here")  # the connection stays open and works
        await client.wait_for(lambda f: f["op"] == "ack")


async def test_oversized_frame_is_refused_and_nothing_acked_is_lost(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("before")
        await client.wait_for(lambda f: f["op"] == "ack")
        await client.raw(orjson.dumps({"op": "send", "text": "x" * 70_000}).decode())
        error = await client.wait_for(lambda f: f["op"] == "error")
        assert error["code"] == "too_large"
        await client.say("after")
        replies = await client.wait_count("message", 2)
        assert [r["text"] for r in replies] == ["before", "after"]


async def test_subscribe_since_replays_missed_bot_messages(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as first:
        for text in ("one", "two", "three"):
            await first.say(text)
        await first.wait_count("ack", 3)
    # a different connection of the same user, later, catches up from seq 1
    while len(await fleet.journal.read_outbox("demo", first.chat("c1"))) < 3:
        import asyncio

        await asyncio.sleep(0.01)
    async with chat_client(fleet.base_url, token=first.token) as second:
        assert second.user_id == first.user_id
        done = await second.subscribe("c1", since=1)
        assert done["seq"] == 3
        assert [m["text"] for m in second.of("message")] == ["two", "three"]
        assert [m["seq"] for m in second.of("message")] == [2, 3]


async def test_other_ops_become_events(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as client:
        common = {"chat_id": "g1", "user_name": "Ann"}
        await client.op(op="join", group_name="Team", **common)
        await client.op(op="send", chat_type="group", text="hi", **common)
        ack = (await client.wait_count("ack", 2))[1]
        await client.op(op="edit", chat_type="group", message_id=ack["message_id"], text="hi!", **common)
        await client.op(op="react", chat_type="group", message_id=ack["message_id"], reaction="+1", **common)
        await client.op(op="delete", chat_type="group", message_id=ack["message_id"], **common)
        await client.op(op="leave", **common)
        await client.wait_count("ack", 6)
    rows = await fleet.journal.query("SELECT type, session FROM events ORDER BY seq")
    assert rows == [
        ("group.member_joined", "group:g1"),
        ("message.received", "group:g1"),
        ("message.edited", "group:g1"),
        ("message.reaction", "group:g1"),
        ("message.deleted", "group:g1"),
        ("group.member_left", "group:g1"),
    ]


async def test_api_edits_deletes_and_queries(fleet: Running) -> None:
    api = fleet.stats.runtimes["demo"].api
    async with chat_client(fleet.base_url) as client:
        await client.op(op="join", chat_id="g1", user_name="Bo", group_name="G")
        await client.wait_for(lambda f: f["op"] == "ack")
        await client.subscribe("g1", group=True)
        from callboard.engine.entities import MessageChain

        sent = await api.send_message("group", "g1", MessageChain.of("draft"))
        await api.edit_message("group", "g1", sent.message_id, MessageChain.of("final"))
        await api.delete_message("group", "g1", sent.message_id)
        await api.call_platform_api("typing", {"chat_id": "g1"})
        await client.wait_for(lambda f: f["op"] == "typing")
        ops = [(f["op"], f.get("text")) for f in client.frames if f["op"] in ("message", "edited", "deleted")]
        assert ops == [("message", "draft"), ("edited", "final"), ("deleted", None)]
    group = await api.get_group_info("g1")
    assert group.name == "G" and group.member_count == 1
    members = await api.get_group_member_list("g1")
    assert [m.user.nickname for m in members] == ["Bo"]
    assert (await api.get_user_info(client.user_id)).nickname == "Bo"
    from callboard.engine.platform import NotSupportedError

    with pytest.raises(NotSupportedError, match="'web' does not support 'kick_member'"):
        await api.kick_member("g1", client.user_id)
    with pytest.raises(NotSupportedError, match="call_platform_api:pin"):
        await api.call_platform_api("pin", {})
    manifest = api.manifest()
    assert "kick_member" not in manifest.apis and "edit_message" in manifest.apis
    assert "message.received" in manifest.events


async def test_page_and_static_assets_are_served(fleet: Running) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fleet.base_url}/web/demo/") as page:
            assert page.status == 200
            body = await page.text()
            assert 'data-bot="demo"' in body and "static/app.js" in body
        async with http.get(f"{fleet.base_url}/web/demo/static/app.js") as js:
            assert js.status == 200 and "subscribe" in await js.text()
        async with http.get(f"{fleet.base_url}/web/nobody/ws") as missing:
            assert missing.status == 404


async def test_two_connections_of_one_user_both_see_bot_output(fleet: Running) -> None:
    a = await ChatClient.connect(fleet.base_url)
    b = await ChatClient.connect(fleet.base_url, token=a.token)
    try:
        await a.subscribe("c1")
        await b.subscribe("c1")
        await a.say("shared")
        assert (await b.wait_for(lambda f: f["op"] == "message"))["text"] == "shared"
        assert (await a.wait_for(lambda f: f["op"] == "message"))["text"] == "shared"
    finally:
        await a.close()
        await b.close()
