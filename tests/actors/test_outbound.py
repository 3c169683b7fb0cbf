"""Outbound retries and rate limits wait on the bot's clock, with the engine's Backoff.

Unit tests of ``Outlet`` on a ``ManualClock``: the platform is a small in-test
``PlatformAPI`` whose sends fail as told; the journal is a real one in tmp_path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callboard.actors.messages import SendRequest
from callboard.actors.outbound import MAX_ATTEMPTS, RETRY_BACKOFF, Outlet
from callboard.actors.runtime import BotCounters
from callboard.engine.clock import ManualClock
from callboard.engine.entities import MessageChain
from callboard.engine.journal import Journal
from callboard.engine.platform import MessageResult, PlatformAPI, RateLimits, SendError

pytestmark = pytest.mark.timeout(30)


class ScriptedAPI(PlatformAPI):
    """Sends fail with the queued errors first, then succeed; each attempt's time is kept."""

    adapter_name = "scripted"

    def __init__(self, clock: ManualClock, errors: list[Exception]) -> None:
        self.clock = clock
        self.errors = errors
        self.attempts: list[float] = []

    async def send_message(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        thread_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        self.attempts.append(self.clock.now())
        if self.errors:
            raise self.errors.pop(0)
        return MessageResult(message_id=f"m{len(self.attempts)}")


async def _spin() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    clock = ManualClock()
    clock.add_settle_hook(_spin)  # let the sending task run after each timer
    return clock


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = Journal(str(tmp_path / "journal.sqlite3"))
    await journal.open()
    yield journal
    await journal.close()


def request(key: str, chat_id: str = "c1") -> SendRequest:
    return SendRequest(
        chat_type="private",
        chat_id=chat_id,
        chain=MessageChain.of("hi"),
        reply_to=None,
        thread_id=None,
        receipt_key=key,
        run_id=1,
        check_receipt=False,
    )


def outlet(api: PlatformAPI, journal: Journal, clock: ManualClock, **limits: Any) -> Outlet:
    return Outlet("bot", api, journal, BotCounters(), RateLimits(**limits), clock)


def transient() -> SendError:
    return SendError("busy", permanent=False)


async def test_transient_errors_back_off_on_the_clock(journal: Journal, clock: ManualClock) -> None:
    api = ScriptedAPI(clock, [transient(), transient()])
    out = outlet(api, journal, clock)
    sending = asyncio.ensure_future(out.deliver(request("k1")))
    await clock.settle()
    assert api.attempts == [0.0]
    # the first retry waits RETRY_BACKOFF.delay(0): min, plus up to jitter
    (due,) = clock.pending()
    assert RETRY_BACKOFF.min <= due <= RETRY_BACKOFF.min * (1 + RETRY_BACKOFF.jitter)
    await clock.advance(due - 0.01)
    assert len(api.attempts) == 1  # no real sleep moves it on
    await clock.advance(0.01)
    assert api.attempts == [0.0, due]
    (second,) = clock.pending()
    low = RETRY_BACKOFF.min * RETRY_BACKOFF.factor
    assert low <= second - due <= low * (1 + RETRY_BACKOFF.jitter)
    await clock.advance(second - due)
    assert (await sending).message_id == "m3"
    assert out.counters.send_retries == 2 and out.counters.sends == 1


async def test_retry_after_is_honoured_exactly(journal: Journal, clock: ManualClock) -> None:
    api = ScriptedAPI(clock, [SendError("flood", permanent=False, retry_after=7.0)])
    out = outlet(api, journal, clock)
    sending = asyncio.ensure_future(out.deliver(request("k2")))
    await clock.settle()
    assert clock.pending() == [7.0]
    await clock.advance(7.0)
    await sending
    assert api.attempts == [0.0, 7.0]


async def test_gives_up_after_max_attempts_and_records_it(journal: Journal, clock: ManualClock) -> None:
    api = ScriptedAPI(clock, [transient() for _ in range(MAX_ATTEMPTS)])
    out = outlet(api, journal, clock)
    sending = asyncio.ensure_future(out.deliver(request("k3")))
    while not sending.done():
        await clock.advance(RETRY_BACKOFF.max * 2)
    with pytest.raises(SendError):
        await sending
    assert len(api.attempts) == MAX_ATTEMPTS
    assert out.counters.send_failures == 1
    receipt = await journal.receipt("k3")
    assert receipt is not None and receipt.status == "failed"


async def test_chat_interval_waits_on_the_clock(journal: Journal, clock: ManualClock) -> None:
    api = ScriptedAPI(clock, [])
    out = outlet(api, journal, clock, per_private_chat_per_second=1.0)
    first = asyncio.ensure_future(out.deliver(request("a", "c9")))
    await clock.settle()
    second = asyncio.ensure_future(out.deliver(request("b", "c9")))
    await clock.settle()
    assert first.done() and not second.done()
    await clock.advance(0.99)
    assert not second.done()
    await clock.advance(0.01)
    assert second.done()
    assert api.attempts == [0.0, 1.0]
