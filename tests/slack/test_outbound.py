"""Replies through the engine's outbound: Slack's pace per channel, 429 with
Retry-After honoured, transient errors retried, permanent ones recorded on
the receipt, long replies split in order, and method tiers paced."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from callboard.adapters.slack.adapter import SlackAdapter
from callboard.adapters.slack.render import TEXT_LIMIT
from callboard.app import Running
from callboard.engine.entities import MessageChain
from callboard.testing.fake_slack import Failure, FakeSlack
from tests.slack.conftest import ANN, BOT, GENERAL, running, slack_fleet, texts
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


async def receipts(fleet: Running) -> list[tuple[str, str | None]]:
    return await fleet.journal.query("SELECT status, error FROM receipts ORDER BY at")


async def test_replies_keep_slacks_pace_per_channel(tmp_path: Path, slack: FakeSlack) -> None:
    """No override: about one message a second per channel; channels do not wait for each other."""
    async with running(slack_fleet(tmp_path, slack, adapter="")):
        await slack.wait_socket()
        dm = slack.im(ANN)
        for text in ("p1", "p2", "p3"):
            slack.push(slack.message(dm, ANN, text))
        for text in ("g1", "g2"):
            slack.push(slack.message(GENERAL, ANN, f"<@U0CALLBOT> {text}"))
        await slack.wait_calls("chat.postMessage", 5, timeout=20)
    private = [c.at for c in slack.answered("chat.postMessage") if c["channel"] == dm]
    group = [c.at for c in slack.answered("chat.postMessage") if c["channel"] == GENERAL]
    assert len(private) == 3 and len(group) == 2
    assert min(b - a for a, b in itertools.pairwise(private)) >= 0.95
    assert group[1] - group[0] >= 0.95
    assert group[0] - private[0] < 0.9  # the other channel did not wait


async def test_ratelimited_waits_for_retry_after_then_sends(tmp_path: Path, slack: FakeSlack) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        slack.fail("chat.postMessage", Failure.ratelimited(1), Failure.server_error(500), Failure.drop())
        slack.push(slack.message(slack.im(ANN), ANN, "patience"))
        await slack.wait_calls("chat.postMessage", 1, timeout=30)
        attempts = slack.calls_of("chat.postMessage")
        assert [c.status for c in attempts[:2]] == [429, 500] and attempts[-1].ok
        assert attempts[1].at - attempts[0].at >= 0.95  # Retry-After: 1
        await eventually(lambda: receipts(fleet))
        assert (await receipts(fleet))[0] == ("sent", None)
        assert texts(slack) == ["patience"]


async def test_a_permanent_refusal_is_recorded_not_retried(tmp_path: Path, slack: FakeSlack) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        slack.fail("chat.postMessage", Failure.error("is_archived"))
        slack.push(slack.message(slack.im(ANN), ANN, "into the void"))
        await eventually(lambda: receipts(fleet))
        await eventually(
            lambda: fleet.journal.query(
                "SELECT 1 FROM receipts WHERE error LIKE '%chat.postMessage: is_archived%'"
            )
        )
        assert all(status == "failed" for status, _ in await receipts(fleet))
        assert len(slack.calls_of("chat.postMessage")) == 1


async def test_a_long_reply_is_split_in_order_and_a_retry_sends_only_the_rest(
    tmp_path: Path, slack: FakeSlack
) -> None:
    async with running(slack_fleet(tmp_path, slack)):
        await slack.wait_socket()
        long = "\n".join(f"line {i:05d} " + "x" * 80 for i in range(110))  # about 9,900 characters
        slack.fail("chat.postMessage", Failure.none(), Failure.server_error(502))
        slack.push(slack.message(slack.im(ANN), ANN, long))
        await slack.wait_calls("chat.postMessage", 3, timeout=30)
        parts = texts(slack)
        assert len(parts) == 3 and all(len(p) <= TEXT_LIMIT for p in parts)
        assert "\n".join(parts) == long  # the failed second part was sent once, after the first


async def test_method_tiers_pace_calls(tmp_path: Path, slack: FakeSlack) -> None:
    """Tier 2 (20 a minute) bursts to 20, then one every 3 s."""
    async with running(slack_fleet(tmp_path, slack, adapter="", handlers="")) as fleet:
        await slack.wait_socket()
        bot = fleet.stats.runtimes[BOT].api
        assert isinstance(bot, SlackAdapter)
        started = time.monotonic()
        for i in range(21):
            await bot.set_group_name(GENERAL, f"room-{i}")
        assert time.monotonic() - started >= 2.9
        assert slack.channels[GENERAL]["name"] == "room-20"
        sent = await bot.send_message("group", GENERAL, MessageChain.of("chat.postMessage is not tiered"))
        assert sent.message_id
