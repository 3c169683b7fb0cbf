"""The HTTP Events API through a running engine: signatures checked before
anything else, url_verification answered, 200 only after the commit, Slack's
retries recognised, interactivity and slash commands on the same path."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import orjson
import pytest

from callboard.bench.harness import free_port
from callboard.engine.events import FeedbackReceived, MessageReceived, PlatformSpecific
from callboard.testing.fake_slack import BOT_TOKEN, SIGNING_SECRET, Failure, FakeSlack
from tests.slack.conftest import (
    ANN,
    BOT,
    GENERAL,
    UNLIMITED,
    running,
    slack_fleet,
    stored_events,
    texts,
)
from tests.support import eventually, stall_appends

pytestmark = pytest.mark.timeout(60)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/slack/{BOT}/events"


async def test_url_verification_and_an_event_end_to_end(tmp_path: Path, slack: FakeSlack) -> None:
    port = free_port()
    async with running(slack_fleet(tmp_path, slack, mode="http", port=port)) as fleet:
        status, body = await slack.post(
            url(port), orjson.dumps({"type": "url_verification", "challenge": "ch-4711", "token": "t"})
        )
        assert status == 200 and orjson.loads(body) == {"challenge": "ch-4711"}
        slack.deliver_to(url(port))
        dm = slack.im(ANN)
        slack.push(slack.message(dm, ANN, "over http"))
        await slack.wait_calls("chat.postMessage", 1)
        await slack.wait_acked()
        assert texts(slack) == ["over http"]
        assert slack.http_statuses[0] == 200
        events = [e for e in await stored_events(fleet) if isinstance(e, MessageReceived)]
        assert [e.text for e in events] == ["over http"]
        assert fleet.stats.connections[BOT][0]


@pytest.mark.parametrize(
    "forge",
    [
        {"secret": "0000000000000000wrongsecret00000"},
        {"skew": -301},  # seconds from now, taken when the request is made: the window is 300 s
        {"skew": 400},
        {"signature": "v0=deadbeef"},
        {"signature": ""},
    ],
)
async def test_a_bad_or_stale_signature_gets_401_and_touches_nothing(
    tmp_path: Path, slack: FakeSlack, forge: dict[str, object]
) -> None:
    port = free_port()
    async with running(slack_fleet(tmp_path, slack, mode="http", port=port)) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        if "skew" in forge:
            forge = {"timestamp": int(time.time()) + int(str(forge["skew"]))}
        event = slack.message(slack.im(ANN), ANN, "forged")
        payload = {"type": "event_callback", "team_id": "T0CALLTEAM", "event_id": "EvFORGED", "event": event}
        if forge.get("signature") == "":
            status, body = await slack.post(
                url(port), orjson.dumps(payload), headers={"X-Slack-Signature": ""}
            )
        else:
            status, body = await slack.post(url(port), orjson.dumps(payload), **forge)  # type: ignore[arg-type]
        assert status == 401, body
        assert b"forged" not in body and SIGNING_SECRET.encode() not in body
        assert await stored_events(fleet) == []
        assert slack.calls_of("chat.postMessage") == []


async def test_retries_are_recognised_and_200_waits_for_the_commit(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    async with running(slack_fleet(tmp_path, slack, mode="http", port=port)) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        dm = slack.im(ANN)
        event = slack.message(dm, ANN, "retried")
        payload = {"type": "event_callback", "team_id": "T0CALLTEAM", "event_id": "EvRETRY1", "event": event}
        body = orjson.dumps(payload)
        stall_appends(monkeypatch, fleet, seconds=0.8, count=1)
        started = time.monotonic()
        status, _ = await slack.post(url(port), body)
        assert status == 200 and time.monotonic() - started >= 0.7  # answered once durable
        for attempt in (1, 2, 3):
            retry = {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_timeout"}
            status, _ = await slack.post(url(port), body, headers=retry)
            assert status == 200
        await slack.wait_calls("chat.postMessage", 1)
        assert texts(slack) == ["retried"]
        assert len(await stored_events(fleet)) == 1


async def test_the_fake_retries_until_stored_and_each_event_is_handled_once(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    async with running(slack_fleet(tmp_path, slack, mode="http", port=port)) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        slack.deliver_to(url(port))
        real_append = fleet.journal.append
        failures = 3

        def failing_append(*args: object, **kwargs: object) -> object:
            nonlocal failures
            if failures:
                failures -= 1
                raise OSError("disk hiccup")
            return real_append(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(fleet.journal, "append", failing_append)
        dm = slack.im(ANN)
        for i in range(20):
            slack.push(slack.message(dm, ANN, f"n{i}"))
        await slack.wait_calls("chat.postMessage", 20, timeout=30)
        await slack.wait_acked()
        assert 500 in slack.http_statuses
        assert collections.Counter(texts(slack)) == {f"n{i}": 1 for i in range(20)}


async def test_interactivity_and_slash_commands_on_the_same_path(tmp_path: Path, slack: FakeSlack) -> None:
    port = free_port()
    async with running(slack_fleet(tmp_path, slack, mode="http", port=port, handlers="")) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        slack.deliver_to(url(port))
        posted = slack.message(GENERAL, ANN, "<@U0CALLBOT> rate me")
        slack.push_interactive(slack.block_action(GENERAL, posted["ts"], ANN, "feedback", "like"))
        slack.push_command(slack.slash_command(GENERAL, ANN, "/callboard", "status"))
        await slack.wait_acked()
        events = await stored_events(fleet)
        feedback = [e for e in events if isinstance(e, FeedbackReceived)]
        assert len(feedback) == 1
        assert feedback[0].feedback_type == 1 and feedback[0].feedback_id == "feedback"
        assert feedback[0].chat_id == GENERAL and feedback[0].message_id == posted["ts"]
        assert feedback[0].user_id == ANN
        commands = [e for e in events if isinstance(e, PlatformSpecific)]
        assert len(commands) == 1 and commands[0].action == "slash_command"
        assert commands[0].data["command"] == "/callboard" and commands[0].chat_id == GENERAL


async def test_garbage_gets_400_with_a_reason(tmp_path: Path, slack: FakeSlack) -> None:
    port = free_port()
    async with running(slack_fleet(tmp_path, slack, mode="http", port=port)) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        status, body = await slack.post(url(port), b"{not json")
        assert status == 400 and b"JSON" in body
        status, body = await slack.post(url(port), orjson.dumps({"type": "block_suggestion"}))
        assert status == 400 and b"unknown Slack request type" in body
        status, body = await slack.post(url(port), b"a=b", "application/x-www-form-urlencoded")
        assert status == 400
        assert await stored_events(fleet) == []


async def test_a_busy_engine_answers_429_and_stores_nothing_of_it(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    config = slack_fleet(tmp_path, slack, mode="http", port=port, session="max_pending: 2")
    async with running(config) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        stall_appends(monkeypatch, fleet, seconds=1.0, count=10)
        dm = slack.im(ANN)
        bodies = [
            orjson.dumps(
                {
                    "type": "event_callback",
                    "team_id": "T0CALLTEAM",
                    "event_id": f"EvBUSY{i}",
                    "event": slack.message(dm, ANN, f"busy {i}"),
                }
            )
            for i in range(5)
        ]
        answers = await asyncio.gather(*(slack.post(url(port), body) for body in bodies))
        statuses = sorted(status for status, _ in answers)
        assert statuses.count(200) == 2 and statuses.count(429) == 3, statuses
        assert all(b"busy" in body for status, body in answers if status == 429)
        await slack.wait_calls("chat.postMessage", 2)
        assert len(await stored_events(fleet)) == 2


async def test_slacks_ssl_check_is_answered(tmp_path: Path, slack: FakeSlack) -> None:
    port = free_port()
    async with running(slack_fleet(tmp_path, slack, mode="http", port=port)) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        status, _ = await slack.post(url(port), b"ssl_check=1&token=x", "application/x-www-form-urlencoded")
        assert status == 200
        assert await stored_events(fleet) == []


async def test_the_token_is_checked_while_events_flow_in(tmp_path: Path, slack: FakeSlack) -> None:
    port = free_port()
    config = slack_fleet(
        tmp_path, slack, mode="http", port=port, adapter=UNLIMITED + "token_check_interval: 0.3"
    )
    async with running(config) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        slack.fail("auth.test", Failure.server_error(503), Failure.server_error(503))
        await eventually(lambda: "Slack unreachable" in fleet.stats.connections[BOT][1])
        assert not fleet.stats.connections[BOT][0]
        await eventually(lambda: fleet.stats.connections[BOT][0])  # answered again: up
        slack.revoke(BOT_TOKEN)
        await eventually(lambda: BOT not in fleet.stats.runtimes)
