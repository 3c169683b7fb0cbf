"""The unified platform API and every platform action, called on a running
bot's adapter against the fake open platform: what went over the wire, what
came back, how refusals are classified, and how tokens are kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from callboard.adapters.lark.adapter import LarkAdapter
from callboard.adapters.lark.convert import resource_ref
from callboard.adapters.lark.errors import LarkAPIError
from callboard.adapters.lark.render import RenderError
from callboard.app import Running
from callboard.engine.entities import At, File, Image, MemberRole, MessageChain, Quote, User, Voice
from callboard.engine.events import MessageReceived
from callboard.engine.platform import NotSupportedError
from callboard.testing.fake_lark import BOT_OPEN_ID, Failure, FakeLark
from tests.lark.conftest import ANN, BOB, BOT, lark_fleet, running
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)

GROUP = "oc_team"


@pytest.fixture
async def fleet(tmp_path: Path, lark: FakeLark) -> AsyncIterator[Running]:
    lark.add_user(ANN, "Ann", email="ann@example.invalid")
    lark.add_user(BOB, "Bob")
    lark.add_chat(GROUP, name="Team", members=[ANN, BOB], owner=ANN, description="the team")
    async with running(lark_fleet(tmp_path, lark, handlers="", adapter="stream_interval: 0.3")) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0], timeout=20)
        yield fleet


def adapter(fleet: Running) -> LarkAdapter:
    api = fleet.stats.runtimes[BOT].api
    assert isinstance(api, LarkAdapter)
    return api


def content(message: dict[str, object]) -> dict[str, object]:
    return orjson.loads(message["body"]["content"])  # type: ignore[index]


def incoming(lark: FakeLark, chat: str, text: str, **kwargs: str) -> MessageReceived:
    payload = lark.message_event(chat, ANN, text, **kwargs)  # type: ignore[arg-type]
    message = payload["event"]["message"]
    return MessageReceived(
        bot_id=BOT,
        adapter="lark",
        chat_type="group" if chat == GROUP else "private",
        chat_id=chat,
        thread_id=kwargs.get("thread_id"),
        message_id=message["message_id"],
        message_chain=MessageChain.of(text),
        sender=User(id=ANN),
    )


# ---------------------------------------------------------------------- messages


async def test_send_to_a_chat_and_to_a_user(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    result = await api.send_message("group", GROUP, MessageChain.of("to the group"))
    assert result.message_id == lark.sent[-1]["message_id"] and lark.sent[-1]["chat_id"] == GROUP
    assert lark.calls_of("send_message")[-1].params == {"receive_id_type": "chat_id"}
    await api.send_message("private", ANN, MessageChain.of("to Ann"))
    assert lark.calls_of("send_message")[-1].params == {"receive_id_type": "open_id"}
    assert lark.sent[-1]["chat_id"] == lark.p2p(ANN)
    mention = await api.send_message("group", GROUP, MessageChain.of(At(target=BOB, display="Bob"), " hi"))
    post = lark.messages[str(mention.message_id)]
    assert post["msg_type"] == "post" and content(post)["zh_cn"]["content"][0][0]["user_id"] == BOB  # type: ignore[index]


async def test_a_repeated_idempotency_key_sends_once(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    first = await api.send_message("group", GROUP, MessageChain.of("once"), idempotency_key="lk:7:1")
    again = await api.send_message("group", GROUP, MessageChain.of("once"), idempotency_key="lk:7:1")
    assert first.message_id == again.message_id and len(lark.sent) == 1
    assert lark.calls_of("send_message")[0]["uuid"] == "lk:7:1:0"


async def test_replies_are_native_and_stay_in_their_thread(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    event = incoming(lark, GROUP, "question")
    await api.reply_message(event, MessageChain.of("answer"), quote_origin=True)
    assert lark.sent[-1]["parent_id"] == event.message_id and "thread_id" not in lark.sent[-1]
    await api.reply_message(event, MessageChain.of("plain"), quote_origin=False)
    assert "parent_id" not in lark.sent[-1]
    threaded = incoming(lark, GROUP, "in thread", thread_id="omt_9", root_id="om_root")
    await api.reply_message(threaded, MessageChain.of("threaded"))
    reply = lark.calls_of("reply_message")[-1]
    assert reply["reply_in_thread"] is True and reply.path.endswith(f"/{threaded.message_id}/reply")
    quoted = await api.send_message("group", GROUP, MessageChain.of(Quote(message_id=event.message_id), "re"))
    assert lark.messages[str(quoted.message_id)]["parent_id"] == event.message_id


async def test_media_are_uploaded_then_sent(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    chain = MessageChain.of(
        "look", Image(data=b"\x89PNG..."), Voice(data=b"OggS", duration=2.0), File(name="r.pdf", data=b"%PDF")
    )
    result = await api.send_message("group", GROUP, chain)
    kinds = [m["msg_type"] for m in lark.sent]
    assert kinds == ["text", "image", "audio", "file"] and result.raw["message_ids"] == [
        m["message_id"] for m in lark.sent
    ]  # type: ignore[index]
    image_key = content(lark.sent[1])["image_key"]
    assert lark.images[str(image_key)] == b"\x89PNG..."
    name, kind, data = lark.files[str(content(lark.sent[2])["file_key"])]
    assert (name, kind, data) == ("voice.opus", "opus", b"OggS")
    assert lark.calls_of("upload_file")[0]["duration"] == "2000"
    assert lark.files[str(content(lark.sent[3])["file_key"])] == ("r.pdf", "pdf", b"%PDF")
    # an image already on Lark is not uploaded again
    await api.send_message("group", GROUP, MessageChain.of(Image(file_id=str(image_key))))
    assert len(lark.calls_of("upload_image")) == 1


async def test_edit_delete_get_and_react(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    sent = await api.send_message("group", GROUP, MessageChain.of("draft"))
    message_id = str(sent.message_id)
    await api.edit_message("group", GROUP, message_id, MessageChain.of("final"))
    assert content(lark.messages[message_id]) == {"text": "final"} and lark.messages[message_id]["updated"]
    fetched = await api.get_message("group", GROUP, message_id)
    assert fetched.text == "final" and fetched.sender.is_bot and fetched.chat_id == GROUP
    forwarded = await api.forward_message("group", GROUP, message_id, "private", ANN)
    copy = lark.messages[str(forwarded.message_id)]
    assert copy["forwarded_from"] == message_id and copy["chat_id"] == lark.p2p(ANN)
    assert content(copy) == {"text": "final"}
    await api.add_reaction("group", GROUP, message_id, "THUMBSUP")
    assert lark.reactions[-1]["emoji_type"] == "THUMBSUP"
    await api.delete_message("group", GROUP, message_id)
    assert lark.messages[message_id]["deleted"]
    with pytest.raises(LarkAPIError) as failure:
        await api.get_message("group", GROUP, message_id)
    assert failure.value.permanent and failure.value.code == 230001
    with pytest.raises(RenderError):
        await api.edit_message("group", GROUP, message_id, MessageChain.of(Image(data=b"x")))


async def test_streamed_replies_patch_one_card_throttled(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_chat(GROUP, name="Team", members=[ANN])
    config = lark_fleet(tmp_path, lark, handlers="", adapter="stream_replies: true\nstream_interval: 0.5")
    async with running(config) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0], timeout=20)
        api = adapter(fleet)
        event = incoming(lark, GROUP, "tell me")
        first = await api.reply_message(event, MessageChain.of("Once"))
        card_id = str(first.message_id)
        assert lark.messages[card_id]["msg_type"] == "interactive"
        text = "Once"
        edits = []
        for word in ["upon", "a", "time", "there", "was", "a", "card"]:
            text += " " + word
            edits.append(
                asyncio.ensure_future(api.edit_message("group", GROUP, card_id, MessageChain.of(text)))
            )
            await asyncio.sleep(0.05)
        await asyncio.gather(*edits)
        patches = lark.messages[card_id]["patches"]
        assert 1 <= len(patches) < len(edits)  # throttled: superseded updates never went out
        final = orjson.loads(patches[-1])
        assert final["elements"][0]["content"] == text  # the last text always lands
        # a card the adapter has not seen (after a restart) is recognised by its type
        api._cards.clear()
        await api.edit_message("group", GROUP, card_id, MessageChain.of("restarted"))
        assert orjson.loads(lark.messages[card_id]["patches"][-1])["elements"][0]["content"] == "restarted"


# ---------------------------------------------------------------------- groups, users, files


async def test_groups_and_users(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    for index in range(120):
        lark.add_chat(f"oc_many{index:03d}", name=f"G{index}", members=[ANN])
    group = await api.get_group_info(GROUP)
    assert (group.id, group.name, group.description, group.member_count, group.owner_id) == (
        GROUP,
        "Team",
        "the team",
        2,
        ANN,
    )
    groups = await api.get_group_list()
    assert len(groups) == 121 and len(lark.calls_of("get_group_list")) == 2  # paged
    members = await api.get_group_member_list(GROUP)
    assert [(m.user.id, m.user.nickname, m.role) for m in members] == [
        (ANN, "Ann", MemberRole.OWNER),
        (BOB, "Bob", MemberRole.MEMBER),
    ]
    bob = await api.get_group_member_info(GROUP, BOB)
    assert (bob.user.nickname, bob.role, bob.group_id) == ("Bob", MemberRole.MEMBER, GROUP)
    with pytest.raises(LarkAPIError, match="not a member"):
        await api.get_group_member_info(GROUP, "ou_stranger")
    await api.set_group_name(GROUP, "Renamed")
    assert lark.chats[GROUP]["name"] == "Renamed"
    await api.kick_member(GROUP, BOB)
    assert lark.chats[GROUP]["members"] == [ANN]
    user = await api.get_user_info(ANN)
    assert (user.id, user.nickname, user.raw["email"], user.raw["union_id"]) == (
        ANN,
        "Ann",
        "ann@example.invalid",
        "on_ann",
    )
    assert user.avatar_url
    await api.leave_group(GROUP)
    assert not lark.chats[GROUP]["bot_in"]
    with pytest.raises(LarkAPIError):
        await api.get_group_info(GROUP)
    assert not api.supports("mute_member") and api.supports("upload_file")


async def test_files_up_and_down(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    image_key = await api.upload_file(b"png-bytes", "chart.png")
    file_key = await api.upload_file(b"%PDF-1", "report.pdf")
    assert image_key.startswith("img_") and file_key.startswith("file_")
    assert lark.files[file_key] == ("report.pdf", "pdf", b"%PDF-1")
    url = await api.get_file_url(image_key)
    assert url.startswith("file://") and Path(url[7:]).read_bytes() == b"png-bytes"
    lark.add_resource("om_x", "img_in", b"inbound", "image/jpeg")
    url = await api.get_file_url(resource_ref("om_x", "image", "img_in"))
    assert Path(url[7:]).read_bytes() == b"inbound"
    with pytest.raises(LarkAPIError):
        await api.get_file_url(resource_ref("om_x", "image", "missing"))


# ---------------------------------------------------------------------- platform actions


async def test_platform_actions(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    card = {"config": {"update_multi": True}, "elements": [{"tag": "markdown", "content": "v1"}]}
    sent = await api.call_platform_api("send_card", {"chat_id": GROUP, "card": card})
    assert lark.messages[sent["message_id"]]["msg_type"] == "interactive"
    card["elements"][0]["content"] = "v2"  # type: ignore[index]
    assert await api.call_platform_api("update_card", {"message_id": sent["message_id"], "card": card}) == {
        "updated": True
    }
    assert content(lark.messages[sent["message_id"]])["elements"][0]["content"] == "v2"  # type: ignore[index]
    chat = await api.call_platform_api("get_chat", {"chat_id": GROUP})
    assert chat["name"] == "Team" and chat["chat_mode"] == "group"
    lark.add_resource("om_y", "file_in", b"doc", "application/pdf")
    got = await api.call_platform_api("get_message_resource", {"message_id": "om_y", "file_key": "file_in"})
    assert got["size"] == 3 and Path(got["url"][7:]).read_bytes() == b"doc"
    grants = lark.token_grants["tenant"]
    assert await api.call_platform_api("refresh_tokens") == {"ok": True}
    assert lark.token_grants["tenant"] == grants + 1
    assert await api.call_platform_api("check_tenant_access_token") == {"ok": True}
    with pytest.raises(ValueError, match="chat_id"):
        await api.call_platform_api("send_card", {"card": {}})
    with pytest.raises(NotSupportedError):
        await api.call_platform_api("pin_message", {})
    assert {a.action for a in api.manifest().platform_actions} >= {"send_card", "update_card", "get_chat"}


# ---------------------------------------------------------------------- errors and tokens


async def test_errors_are_classified(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    lark.fail("send_message", Failure.rate_limited(3))
    with pytest.raises(LarkAPIError) as limited:
        await api.send_message("group", GROUP, MessageChain.of("x"))
    assert not limited.value.permanent and limited.value.retry_after == 3 and limited.value.code == 99991400
    lark.fail("send_message", Failure.server_error(502))
    with pytest.raises(LarkAPIError) as broken:
        await api.send_message("group", GROUP, MessageChain.of("x"))
    assert not broken.value.permanent
    lark.fail("send_message", Failure.drop())
    with pytest.raises(LarkAPIError) as dropped:
        await api.send_message("group", GROUP, MessageChain.of("x"))
    assert not dropped.value.permanent
    with pytest.raises(LarkAPIError) as refused:
        await api.send_message("group", "oc_unknown", MessageChain.of("x"))
    assert refused.value.permanent and refused.value.code == 230002


async def test_tokens_are_shared_cached_and_refreshed_when_refused(fleet: Running, lark: FakeLark) -> None:
    api = adapter(fleet)
    api.api.forget_tokens()
    before = lark.token_grants["tenant"]
    await asyncio.gather(*(api.send_message("group", GROUP, MessageChain.of(f"m{i}")) for i in range(20)))
    assert lark.token_grants["tenant"] == before + 1  # one fetch for twenty concurrent calls
    lark.expire_tokens()  # two hours later, as Lark sees it
    await api.send_message("group", GROUP, MessageChain.of("after expiry"))
    assert lark.token_grants["tenant"] == before + 2 and lark.texts_sent()[-1] == "after expiry"
    assert [c.code for c in lark.calls_of("send_message")][-2:] == [99991663, 0]


async def test_a_store_app_gets_its_ticket_and_per_tenant_tokens(tmp_path: Path) -> None:
    lark = await FakeLark(app_type="isv").start()
    try:
        lark.add_user(ANN, "Ann")
        chat = lark.p2p(ANN)
        config = lark_fleet(tmp_path, lark, mode="webhook", adapter="app_type: isv")
        async with running(config) as fleet:
            await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0], timeout=20)
            assert lark.calls_of("app_ticket_resend")  # asked at start
            lark.webhook_url = f"{fleet.base_url}/lark/{BOT}/events"
            lark.queue.clear()
            lark.push_app_ticket()
            lark.push(lark.message_event(chat, ANN, "hello store app"))
            await lark.wait_calls("send_message", 1)
            assert lark.texts_sent() == ["hello store app"]
            await eventually(lambda: adapter(fleet).bot_open_id == BOT_OPEN_ID)  # read once a tenant wrote
            assert lark.token_grants == {"app": 1, "tenant": 1}
    finally:
        await lark.close()
