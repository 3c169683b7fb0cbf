"""Hypothesis against the other inbound parsers: web chat websocket frames, the Slack Events
API route and the Lark webhook route. Every input gets an answer of its kind (an error frame,
a 4xx, a 200), nothing crashes the engine, nothing echoes a secret, and the engine still
serves afterwards. 500 cases per parser by default, 10,000 under the ``slow`` marker (CI)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callboard.app import Running, start
from callboard.bench.harness import free_port
from callboard.testing.fake_lark import ENCRYPT_KEY, FakeLark
from callboard.testing.fake_lark import sign as lark_sign
from callboard.testing.fake_slack import SIGNING_SECRET, FakeSlack
from callboard.testing.fake_slack import sign as slack_sign
from tests.lark.conftest import BOT as LARK_BOT
from tests.lark.conftest import lark_fleet
from tests.security.engine_thread import LoopThread, loop_thread, raw_request
from tests.slack.conftest import BOT as SLACK_BOT
from tests.slack.conftest import slack_fleet, workspace
from tests.support import ChatClient, eventually, fleet_config

pytestmark = pytest.mark.timeout(900)
QUICK = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
LONG = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=24,
)


def _objects(fields: dict[str, Any]) -> Any:
    """Objects shaped like the protocol's, with any value in any field, and anything else."""
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in fields.items()}) | json_values


# ---------------------------------------------------------------------- web chat frames

web_frames = (
    _objects(
        {
            "op": st.sampled_from(["send", "edit", "delete", "react", "join", "leave", "subscribe", "nope"]),
            "chat_id": st.text(max_size=80),
            "chat_type": st.sampled_from(["private", "group", "x"]),
            "client_msg_id": st.text(max_size=40),
            "text": st.text(max_size=200),
            "since": st.integers(min_value=-(2**70), max_value=2**70),
            "message_id": st.text(max_size=20),
            "user_id": st.text(max_size=20),
            "reply_to": st.text(max_size=20),
        }
    ).map(lambda frame: json.dumps(frame))
    | st.text(max_size=300)
    | st.binary(max_size=300)
)


@dataclass
class Web:
    thread: LoopThread
    fleet: Running
    client: ChatClient


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp: Path = tmp_path_factory.mktemp("web")
    with loop_thread() as thread:
        fleet = thread.run(lambda: start(fleet_config(tmp)))
        client = thread.run(lambda: ChatClient.connect(fleet.base_url))
        try:
            yield Web(thread, fleet, client)
        finally:
            thread.run(client.close)
            thread.run(fleet.stop)


def _web_case(web: Web, frame: str | bytes) -> None:
    client = web.client

    async def exchange() -> None:
        before = len(client.frames)
        await client.raw(frame)
        probe = await client.op(op="subscribe", chat_id="probe", since=0)
        # frames are answered in order, so the probe's answer means the fuzzed one was handled
        await client.wait_for(lambda f: f.get("op") == "subscribed" or f.get("client_msg_id") == probe)
        assert not client.ws.closed
        for answer in client.frames[before:]:
            assert answer.get("op") != "error" or answer.get("code"), answer

    web.thread.run(exchange)


@QUICK
@given(frame=web_frames)
def test_fuzz_web_frames(web: Web, frame: str | bytes) -> None:
    _web_case(web, frame)


@pytest.mark.slow
@LONG
@given(frame=web_frames)
def test_fuzz_web_frames_long(web: Web, frame: str | bytes) -> None:
    _web_case(web, frame)


def test_web_still_serves_after_the_fuzz(web: Web) -> None:
    async def chat() -> None:
        await web.client.subscribe("after")
        await web.client.say("still here", chat_id="after")
        await web.client.wait_for(lambda f: f.get("op") == "message" and f.get("text") == "still here")

    web.thread.run(chat)


# ---------------------------------------------------------------------- Slack Events API

slack_bodies = _objects(
    {
        "type": st.sampled_from(["event_callback", "url_verification", "block_actions", "x"]),
        "token": st.text(max_size=10),
        "challenge": st.text(max_size=20),
        "team_id": st.text(max_size=12),
        "event_id": st.text(max_size=12),
        "event_time": st.integers(),
        "event": _objects(
            {
                "type": st.sampled_from(
                    ["message", "app_mention", "reaction_added", "member_joined_channel"]
                ),
                "subtype": st.sampled_from(
                    ["message_changed", "message_deleted", "bot_message", "file_share"]
                ),
                "channel": st.text(max_size=12),
                "user": st.text(max_size=12),
                "text": st.text(max_size=100),
                "ts": st.text(max_size=20),
                "thread_ts": st.text(max_size=20),
                "files": json_values,
                "message": json_values,
            }
        ),
    }
).map(lambda body: json.dumps(body).encode()) | st.binary(max_size=300)


@dataclass
class Route:
    thread: LoopThread
    fleet: Running
    port: int
    path: str

    def healthy(self) -> bool:
        return raw_request(self.port, "GET", "/healthz")[0] == 200


@pytest.fixture(scope="module")
def slack_route(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Route]:
    tmp: Path = tmp_path_factory.mktemp("slack")
    port = free_port()
    with loop_thread() as thread:
        slack = thread.run(lambda: FakeSlack().start())
        workspace(slack)
        fleet = thread.run(lambda: start(slack_fleet(tmp, slack, mode="http", port=port)))
        thread.run(lambda: eventually(lambda: fleet.stats.connections.get(SLACK_BOT, (False, ""))[0]))
        try:
            yield Route(thread, fleet, port, f"/slack/{SLACK_BOT}/events")
        finally:
            thread.run(fleet.stop)
            thread.run(slack.close)


def _slack_case(route: Route, body: bytes, signed: bool, form: bool) -> None:
    timestamp = str(int(time.time()))
    if form:
        body = b"payload=" + body
    headers = {
        "Content-Type": "application/x-www-form-urlencoded" if form else "application/json",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_sign(SIGNING_SECRET if signed else "wrong-secret", timestamp, body),
    }
    status, answer = raw_request(route.port, "POST", route.path, body, headers)
    assert status in {200, 400, 401, 413, 415, 422, 429, 503}, (status, answer[:300])
    if not signed:
        assert status == 401
    assert SIGNING_SECRET.encode() not in answer


@QUICK
@given(body=slack_bodies, signed=st.booleans(), form=st.booleans())
def test_fuzz_slack_events(slack_route: Route, body: bytes, signed: bool, form: bool) -> None:
    _slack_case(slack_route, body, signed, form)


@pytest.mark.slow
@LONG
@given(body=slack_bodies, signed=st.booleans(), form=st.booleans())
def test_fuzz_slack_events_long(slack_route: Route, body: bytes, signed: bool, form: bool) -> None:
    _slack_case(slack_route, body, signed, form)


def test_slack_still_healthy_after_the_fuzz(slack_route: Route) -> None:
    assert slack_route.healthy()


# ---------------------------------------------------------------------- Lark webhook

lark_bodies = _objects(
    {
        "schema": st.sampled_from(["2.0", "1.0"]),
        "type": st.sampled_from(["url_verification", "event_callback"]),
        "challenge": st.text(max_size=20),
        "token": st.text(max_size=20),
        "encrypt": st.text(max_size=64),
        "header": _objects(
            {
                "event_id": st.text(max_size=16),
                "event_type": st.sampled_from(
                    ["im.message.receive_v1", "im.message.recalled_v1", "card.action.trigger", "x"]
                ),
                "token": st.text(max_size=16),
                "app_id": st.text(max_size=16),
                "create_time": st.text(max_size=16),
            }
        ),
        "event": _objects({"message": json_values, "sender": json_values, "chat_id": st.text(max_size=16)}),
    }
).map(lambda body: json.dumps(body).encode()) | st.binary(max_size=300)


@pytest.fixture(scope="module")
def lark_route(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Route]:
    tmp: Path = tmp_path_factory.mktemp("lark")
    port = free_port()
    with loop_thread() as thread:
        lark = thread.run(lambda: FakeLark(encrypt_key=ENCRYPT_KEY).start())
        fleet = thread.run(lambda: start(lark_fleet(tmp, lark, mode="webhook", port=port)))
        thread.run(lambda: eventually(lambda: fleet.stats.connections.get(LARK_BOT, (False, ""))[0]))
        try:
            yield Route(thread, fleet, port, f"/lark/{LARK_BOT}/events")
        finally:
            thread.run(fleet.stop)
            thread.run(lark.close)


def _lark_case(route: Route, body: bytes, signed: bool) -> None:
    timestamp, nonce = str(int(time.time())), "n0nce"
    headers = {
        "Content-Type": "application/json",
        "X-Lark-Request-Timestamp": timestamp,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": lark_sign(timestamp, nonce, ENCRYPT_KEY if signed else "wrong-key", body),
    }
    status, answer = raw_request(route.port, "POST", route.path, body, headers)
    assert status in {200, 400, 401, 413, 415, 422, 429, 503}, (status, answer[:300])
    if not signed:
        assert status in {400, 401}
    assert ENCRYPT_KEY.encode() not in answer


@QUICK
@given(body=lark_bodies, signed=st.booleans())
def test_fuzz_lark_webhook(lark_route: Route, body: bytes, signed: bool) -> None:
    _lark_case(lark_route, body, signed)


@pytest.mark.slow
@LONG
@given(body=lark_bodies, signed=st.booleans())
def test_fuzz_lark_webhook_long(lark_route: Route, body: bytes, signed: bool) -> None:
    _lark_case(lark_route, body, signed)


def test_lark_still_healthy_after_the_fuzz(lark_route: Route) -> None:
    assert lark_route.healthy()
