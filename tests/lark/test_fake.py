"""The fake platform is what lark-oapi expects: the SDK's own API client, its
models and its webhook dispatcher (decryption, signature, token) accept what
the fake serves and sends."""

from __future__ import annotations

import asyncio
from typing import Any

import lark_oapi as lark_sdk
import orjson
from lark_oapi.api.im.v1 import (
    CreateMessageRequest,
    CreateMessageRequestBody,
    GetChatRequest,
    GetMessageRequest,
)
from lark_oapi.core.model import RawRequest

from callboard.testing.fake_lark import APP_ID, APP_SECRET, ENCRYPT_KEY, VERIFICATION_TOKEN, FakeLark


async def test_lark_oapi_client_calls_the_fake() -> None:
    lark = await FakeLark().start()
    try:
        lark.add_chat("oc_team", name="Team", members=["ou_ann"])
        client = lark_sdk.Client.builder().app_id(APP_ID).app_secret(APP_SECRET).domain(lark.base_url).build()

        def calls() -> tuple[Any, Any, Any]:
            body = CreateMessageRequestBody.builder().receive_id("oc_team").msg_type("text")
            request = (
                CreateMessageRequest.builder()
                .receive_id_type("chat_id")
                .request_body(body.content(orjson.dumps({"text": "from the SDK"}).decode()).build())
                .build()
            )
            created = client.im.v1.message.create(request)
            got = client.im.v1.message.get(
                GetMessageRequest.builder().message_id(created.data.message_id).build()
            )
            chat = client.im.v1.chat.get(GetChatRequest.builder().chat_id("oc_team").build())
            return created, got, chat

        created, got, chat = await asyncio.to_thread(calls)
        assert created.success(), created.msg
        assert created.data.chat_id == "oc_team" and created.data.msg_type == "text"
        assert got.success() and got.data.items[0].body.content == '{"text":"from the SDK"}'
        assert chat.success() and chat.data.name == "Team" and chat.data.chat_mode == "group"
        assert lark.token_grants["tenant"] == 1  # the SDK's token manager got a token the fake accepts
    finally:
        await lark.close()


def test_lark_oapi_dispatcher_accepts_the_fakes_webhooks() -> None:
    lark = FakeLark(encrypt_key=ENCRYPT_KEY)
    seen: list[Any] = []
    handler = (
        lark_sdk.EventDispatcherHandler.builder(ENCRYPT_KEY, VERIFICATION_TOKEN)
        .register_p2_im_message_receive_v1(seen.append)
        .build()
    )
    lark.add_user("ou_ann", "Ann")
    body, headers = lark.webhook_body(lark.message_event(lark.p2p("ou_ann"), "ou_ann", "signed"))
    request = RawRequest()
    request.uri = "/events"
    request.body = body
    request.headers = headers
    response = handler.do(request)
    assert response.status_code == 200, response.content
    assert orjson.loads(seen[0].event.message.content) == {"text": "signed"}
    headers["X-Lark-Signature"] = "0" * 64
    request.headers = headers
    assert handler.do(request).status_code == 500  # the SDK refuses a bad signature too
