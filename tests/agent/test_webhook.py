"""Webhook deliveries over the web chat: signature, retries, final failure, actions, async mode."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from callboard import cli
from callboard.actors.config import AdminConfig
from callboard.app import start
from callboard.bench.harness import free_port
from callboard.testing.webhook_receiver import Answer, WebhookReceiver, verify_signature
from tests.support import PIPELINE_ECHO, chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)
SECRET = "whsec-test-0123456789"
ADMIN_TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = await WebhookReceiver(SECRET).start()
    try:
        yield server
    finally:
        await server.stop()


def webhook_rule(url: str, extra: str = "", event_type: str = '"*"', cont: bool = False) -> str:
    lines = "".join(f"\n    {line}" for line in extra.strip().splitlines())
    return f"""
- event_type: {event_type}
  handler_type: webhook
  continue: {str(cont).lower()}
  handler_config:
    url: "{url}"
    secret: "{SECRET}"
    timeout: 2s
    retries: {{count: 3, interval: 20ms}}{lines}
"""


async def _json(method: str, url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, await response.json()


async def test_delivery_is_signed_and_keyed_and_continue_runs_the_next_rule(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    handlers = webhook_rule(receiver.url, cont=True) + textwrap.dedent(PIPELINE_ECHO)
    async with (
        running_fleet(fleet_config(tmp_path, handlers=handlers)) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.say("hello hook")
        chat = client.chat("c1")
        echo = await client.wait_for(lambda f: f["op"] == "message")
        deliveries = await receiver.wait_for(1)
    assert echo["text"] == "hello hook"  # the pipeline after the webhook ran too
    delivery = deliveries[0]
    assert delivery.verified
    assert verify_signature(SECRET, delivery.raw, delivery.headers["X-Callboard-Signature"])
    assert not verify_signature("wrong", delivery.raw, delivery.headers["X-Callboard-Signature"])
    body = delivery.body
    assert delivery.headers["Idempotency-Key"] == body["delivery_id"]
    assert body["event"]["type"] == "message.received" and body["events"] == [body["event"]]
    assert body["bot"] == {"id": "demo", "adapter": "web"} and body["session"]["chat_id"] == chat


async def test_transient_failures_are_retried_with_the_same_key(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script(Answer(status=503), Answer(status=429, retry_after=0), Answer(status=200))
    async with running_fleet(fleet_config(tmp_path, handlers=webhook_rule(receiver.url))) as fleet:
        async with chat_client(fleet.base_url) as client:
            await client.say("retry me")
            deliveries = await receiver.wait_for(3)
        counters = fleet.stats.runtimes["demo"].counters
        await eventually(lambda: counters.runs == 1)
        assert counters.failed_runs == 0 and counters.usage["webhook_retries"] == 2
    assert len({d.headers["Idempotency-Key"] for d in deliveries}) == 1
    assert [d.status for d in deliveries] == [503, 429, 200]


async def test_final_failure_is_listed_and_retryable(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script(*[Answer(status=500)] * 4)  # the first attempt and three retries
    async with running_fleet(fleet_config(tmp_path, handlers=webhook_rule(receiver.url))) as fleet:
        async with chat_client(fleet.base_url) as client:
            await client.say("doomed")
            await receiver.wait_for(4)
        base = fleet.base_url
        failed = await eventually(lambda: _listed(base))
        assert len(failed) == 1 and "HTTP 500" in failed[0]["error"] and "4 attempts" in failed[0]["error"]
        run = failed[0]
        # callboard retry: every failed run of the bot, through the admin API
        code = await asyncio.to_thread(cli.main, ["--log-level", "WARNING", "retry", "demo", "--admin", base])
        assert code == 0
        await receiver.wait_for(5)
        assert await eventually(lambda: _listed(base, empty=True))
        (record,) = await fleet.journal.query("SELECT status FROM receipts WHERE key LIKE 'failed:%'")
        assert record == ("retried",)
        status, answer = await _json(
            "POST", f"{base}/api/bots/demo/failed/{run['run_id']}/{run['rule']}/retry"
        )
        assert status == 404 and "not a failed run" in answer["error"]  # retried already
    keys = {d.headers["Idempotency-Key"] for d in receiver.deliveries}
    assert len(keys) == 1  # the manual retry kept the key


async def _listed(base: str, empty: bool = False) -> Any:
    status, failed = await _json("GET", f"{base}/api/bots/demo/failed")
    assert status == 200
    return (failed == []) if empty else failed


async def test_client_errors_are_final_at_once(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script(Answer(status=400))
    async with running_fleet(fleet_config(tmp_path, handlers=webhook_rule(receiver.url))) as fleet:
        async with chat_client(fleet.base_url) as client:
            await client.say("bad request")
            await receiver.wait_for(1)
        failed = await eventually(lambda: _listed(fleet.base_url))
    assert len(receiver.deliveries) == 1 and "not retried" in failed[0]["error"]


async def test_response_actions_run_in_order_and_bad_ones_are_recorded(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    handlers = webhook_rule(receiver.url, "response_actions: true", event_type="message.received")
    async with (
        running_fleet(fleet_config(tmp_path, handlers=handlers)) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        other = client.chat("c2")  # the user's second private chat
        receiver.default = Answer(
            body={
                "actions": [
                    {"type": "reply", "params": {"text": "got it"}},
                    {"type": "teleport", "params": {}},
                    {
                        "type": "send_message",
                        "params": {"target_type": "private", "target_id": other, "text": "fyi"},
                    },
                    {"type": "reply", "params": {}},
                    {"type": "reply", "params": {"message": [{"type": "Plain", "text": "last"}]}},
                ]
            }
        )
        await client.subscribe("c1")
        await client.subscribe("c2")
        await client.say("act")
        await client.wait_count("message", 3)
        texts = [(f["chat_id"], f["text"]) for f in client.of("message")]
        (record,) = await eventually(
            lambda: fleet.journal.query("SELECT status, error FROM receipts WHERE key LIKE 'failed:%'")
        )
        (listed,) = await _listed(fleet.base_url)
    here = client.chat("c1")
    assert texts == [(here, "got it"), (other, "fyi"), (here, "last")]
    assert listed["status"] == "errors" and "teleport" in listed["error"]
    status, error = record
    assert status == "errors"
    assert "action 1: unknown action type 'teleport'" in error and "action 3: reply" in error


async def test_async_mode_takes_signed_callbacks(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.default = Answer(status=202)
    port = free_port()  # the receiver reaches us at the fleet's own address
    base = f"http://127.0.0.1:{port}"
    rule = webhook_rule(receiver.url, f'mode: async\ncallback_base: "{base}"')
    fleet = await start(fleet_config(tmp_path, handlers=rule), port=port)
    try:
        async with chat_client(fleet.base_url) as client:
            await client.subscribe("c1")
            await client.say("later please")
            (delivery,) = await receiver.wait_for(1)
            url = delivery.body["callback_url"]
            assert url == f"{base}/api/webhooks/{delivery.body['delivery_id']}"
            actions = [{"type": "reply", "params": {"text": "done later"}}]
            assert await receiver.callback(url, actions, "wrong-secret") == 401
            assert await receiver.callback(url, actions) == 202
            reply = await client.wait_for(lambda f: f["op"] == "message")
            assert await receiver.callback(url, actions) == 202  # repeated: not sent twice
            await asyncio.sleep(0.3)
            assert len(client.of("message")) == 1
    finally:
        await fleet.stop()
    assert reply["text"] == "done later"


async def test_the_admin_token_guards_failed_runs_but_not_signed_callbacks(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.default = Answer(status=202)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = fleet_config(
        tmp_path, handlers=webhook_rule(receiver.url, f'mode: async\ncallback_base: "{base}"')
    )
    admin = AdminConfig(host="127.0.0.1", port=port, auth="token", token=SecretStr(ADMIN_TOKEN))
    config = config.model_copy(update={"engine": config.engine.model_copy(update={"admin": admin})})
    fleet = await start(config, port=port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/bots/demo/failed") as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.get(f"{base}/api/bots/demo/failed", headers=headers) as response:
                assert response.status == 200 and await response.json() == []
        async with chat_client(fleet.base_url) as client:
            await client.subscribe("c1")
            await client.say("later")
            (delivery,) = await receiver.wait_for(1)
            url = delivery.body["callback_url"]
            assert await receiver.callback(url, [{"type": "reply", "params": {"text": "ok"}}], "wrong") == 401
            assert await receiver.callback(url, [{"type": "reply", "params": {"text": "ok"}}]) == 202
            await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "ok")
    finally:
        await fleet.stop()


async def test_an_unreachable_receiver_is_retried_then_a_failed_run(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    async with running_fleet(fleet_config(tmp_path, handlers=webhook_rule(url))) as fleet:
        async with chat_client(fleet.base_url) as client:
            await client.say("anyone?")
            (failed,) = await eventually(lambda: _listed(fleet.base_url))
        counters = fleet.stats.runtimes["demo"].counters
    assert "connection failed" in failed["error"] and "after 4 attempts" in failed["error"]
    assert counters.usage["webhook_retries"] == 3 and counters.usage["webhook_failures"] == 1
