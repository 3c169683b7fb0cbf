"""Replies through the engine's outbound: Telegram's rate limits, flood
control (429 with retry_after), transient errors retried, permanent ones
recorded on the receipt, and long replies split in order."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from callboard.app import Running
from callboard.testing.fake_telegram import Failure, FakeBotAPI, group_chat, private_chat, user, utf16_len
from tests.support import eventually
from tests.telegram.conftest import BOT, running, telegram_fleet

pytestmark = pytest.mark.timeout(60)

ANN = user(1001, "Ann")
PRIVATE = private_chat(ANN)
GROUP = group_chat(-100500, "Team")


async def receipts(fleet: Running) -> list[tuple[str, str | None]]:
    return await fleet.journal.query("SELECT status, error FROM receipts ORDER BY at")


async def receipts_count(fleet: Running, count: int) -> list[tuple[str, str | None]] | None:
    rows = await receipts(fleet)
    return rows if len(rows) >= count else None


def say(api: FakeBotAPI, chat: dict[str, object], *texts: str) -> None:
    if chat["id"] not in api.chats:
        api.add_chat(chat)
    for text in texts:
        api.push("message", api.message(chat, ANN, text))


async def test_telegram_rate_limits_space_the_replies(tmp_path: Path, api: FakeBotAPI) -> None:
    """No override: 1 message a second to a private chat, 20 a minute to a group."""
    async with running(telegram_fleet(tmp_path, api, adapter="")):
        say(api, PRIVATE, "p1", "p2", "p3")
        say(api, GROUP, "g1", "g2")
        await api.wait_calls("sendMessage", 5, timeout=20)
    private = [c.at for c in api.answered("sendMessage") if c["chat_id"] == 1001]
    group = [c.at for c in api.answered("sendMessage") if c["chat_id"] == -100500]
    assert len(private) == 3 and len(group) == 2
    assert min(b - a for a, b in itertools.pairwise(private)) >= 0.95
    assert group[1] - group[0] >= 2.95


async def test_flood_control_waits_retry_after_then_sends_once(tmp_path: Path, api: FakeBotAPI) -> None:
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        api.fail("sendMessage", Failure.flood(2))
        say(api, PRIVATE, "hello")
        (sent,) = await api.wait_calls("sendMessage", 1)
        refused = api.calls_of("sendMessage")[0]
        assert refused.status == 429 and sent.at - refused.at >= 1.95
        assert [c["text"] for c in api.answered("sendMessage")] == ["hello"]
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.send_retries == 1)
        assert await eventually(lambda: receipts_count(fleet, 1)) == [("sent", None)]


@pytest.mark.parametrize(
    "failure",
    [Failure.server_error(500), Failure.server_error(502), Failure.drop(), Failure.invalid_json()],
    ids=["500", "502", "dropped", "garbled"],
)
async def test_transient_send_errors_are_retried(tmp_path: Path, api: FakeBotAPI, failure: Failure) -> None:
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        api.fail("sendMessage", failure)
        say(api, PRIVATE, "again")
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.sends == 1)
        assert len(api.calls_of("sendMessage")) == 2
        assert fleet.stats.runtimes[BOT].counters.send_retries == 1


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Failure.chat_not_found(), "Telegram sendMessage: Chat not found"),
        (Failure.blocked(), "Telegram sendMessage: Forbidden: bot was blocked by the user"),
    ],
)
async def test_permanent_send_errors_are_recorded_not_retried(
    tmp_path: Path, api: FakeBotAPI, failure: Failure, error: str
) -> None:
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        api.fail("sendMessage", failure)
        say(api, PRIVATE, "doomed", "fine")
        await api.wait_calls("sendMessage", 1)
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.send_failures == 1)
        assert [c.status for c in api.calls_of("sendMessage")] == [failure.status, 200]
        rows = await eventually(lambda: receipts_count(fleet, 2))
        assert ("failed", error) in rows and ("sent", None) in rows


async def test_a_long_reply_is_split_in_order(tmp_path: Path, api: FakeBotAPI) -> None:
    text = "\n".join(f"{i:03d} " + "z" * 95 for i in range(90))  # 8,999 characters
    async with running(telegram_fleet(tmp_path, api)):
        say(api, PRIVATE, text)
        parts = await api.wait_calls("sendMessage", 3)
    assert [utf16_len(c["text"]) <= 4096 for c in parts] == [True, True, True]
    assert "\n".join(c["text"] for c in parts) == text


async def test_a_long_reply_failing_half_way_resumes_without_repeating(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    text = " ".join(["word"] * 1500)  # 7,499 characters: two parts
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        api.fail("sendMessage", Failure.none(), Failure.server_error(502))
        say(api, PRIVATE, text)
        await api.wait_calls("sendMessage", 2)
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.sends == 1)
    statuses = [c.status for c in api.calls_of("sendMessage")]
    assert statuses == [200, 502, 200]
    assert " ".join(c["text"] for c in api.answered("sendMessage")) == text
