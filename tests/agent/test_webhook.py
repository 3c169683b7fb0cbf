"""Webhook deliveries over the web chat: signature, retries, final failure, actions, async mode."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callboard.testing.webhook_receiver import Answer, WebhookReceiver, verify_signature
from tests.support import PIPELINE_ECHO, chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)
SECRET = "whsec-test-0123456789"


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
    assert body["bot"] == {"id": "demo"} and body["session"]["chat_id"] == "c1"


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
        status, answer = await _json(
            "POST", f"{base}/api/bots/demo/failed/{run['run_id']}/{run['rule']}/retry"
        )
        assert status == 202, answer
        await receiver.wait_for(5)
        assert await eventually(lambda: _listed(base, empty=True))
        (record,) = await fleet.journal.query("SELECT status FROM receipts WHERE key LIKE 'failed:%'")
        assert record == ("retried",)
        status, answer = await _json(
            "POST", f"{base}/api/bots/demo/failed/{run['run_id']}/{run['rule']}/retry"
        )
        assert status == 404
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
    receiver.default = Answer(
        body={
            "actions": [
                {"type": "reply", "params": {"text": "got it"}},
                {"type": "teleport", "params": {}},
                {
                    "type": "send_message",
                    "params": {"target_type": "private", "target_id": "c2", "text": "fyi"},
                },
                {"type": "reply", "params": {}},
                {"type": "reply", "params": {"message": [{"type": "Plain", "text": "last"}]}},
            ]
        }
    )
    handlers = webhook_rule(receiver.url, "response_actions: true", event_type="message.received")
    async with (
        running_fleet(fleet_config(tmp_path, handlers=handlers)) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.subscribe("c2")
        await client.say("act")
        await client.wait_count("message", 3)
        texts = [(f["chat_id"], f["text"]) for f in client.of("message")]
        (record,) = await eventually(
            lambda: fleet.journal.query("SELECT status, error FROM receipts WHERE key LIKE 'failed:%'")
        )
    assert texts == [("c1", "got it"), ("c2", "fyi"), ("c1", "last")]
    status, error = record
    assert status == "errors"
    assert "action 1: unknown action type 'teleport'" in error and "action 3: reply" in error


async def test_async_mode_takes_signed_callbacks(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.default = Answer(status=202)
    async with running_fleet(fleet_config(tmp_path, handlers=webhook_rule(receiver.url))) as fleet:
        # the receiver reaches us at the fleet's own address
        config = fleet_config(
            tmp_path,
            handlers=webhook_rule(receiver.url, f'mode: async\ncallback_base: "{fleet.base_url}"'),
        )
        await fleet.reload(config)
        await eventually(lambda: "demo" in fleet.stats.runtimes and fleet.stats.runtimes["demo"].sessions)
        async with chat_client(fleet.base_url) as client:
            await client.subscribe("c1")
            await client.say("later please")
            (delivery,) = await receiver.wait_for(1)
            url = delivery.body["callback_url"]
            assert url.startswith(fleet.base_url)
            assert (
                await receiver.callback(url, [{"type": "reply", "params": {"text": "done later"}}], "bad")
                == 401
            )
            assert await receiver.callback(url, [{"type": "reply", "params": {"text": "done later"}}]) == 202
            reply = await client.wait_for(lambda f: f["op"] == "message")
    assert reply["text"] == "done later"
