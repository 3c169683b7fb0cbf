"""Handler deadlines: one watchdog timer per session (``RunDeadline``), on a ManualClock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from callboard.actors.deadline import RunDeadline
from callboard.engine import ManualClock
from callboard.engine.clock import sleep
from callboard.handlers.context import HandlerContext
from callboard.handlers.pipeline import EchoStage, Flow
from tests.support import chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


async def run(deadline: RunDeadline, timeout: float, work: Any) -> str:
    """What the session does around one handler: 'done', 'expired', or the exception's name."""
    deadline.begin(timeout)
    try:
        try:
            await work()
        finally:
            expired = deadline.end()
    except asyncio.CancelledError:
        if not expired:
            raise
        return "expired"
    return "done"


async def test_a_run_past_its_deadline_is_cancelled() -> None:
    clock = ManualClock()
    deadline = RunDeadline(clock)
    reached_end = False

    async def hang() -> None:
        nonlocal reached_end
        await sleep(clock, 100)
        reached_end = True

    task = asyncio.ensure_future(run(deadline, 5, hang))
    await asyncio.sleep(0)
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.2)
    assert await task == "expired"
    assert not reached_end
    assert task.cancelling() == 0  # the watchdog's cancel was taken back, as asyncio.timeout does


async def test_one_timer_serves_every_run_and_lapses_when_idle() -> None:
    clock = ManualClock()
    deadline = RunDeadline(clock)

    async def quick() -> None:
        await sleep(clock, 0.5)

    for _ in range(20):  # 20 runs, 10 s of clock time: still one armed timer
        task = asyncio.ensure_future(run(deadline, 30, quick))
        await asyncio.sleep(0)
        await clock.advance(0.5)
        assert await task == "done"
        assert len(clock.pending()) == 1
    assert clock.pending() == [30.0]  # armed by the first run, not re-armed per run
    await clock.advance(25)  # fires at 30 with no run in progress: lapses
    assert clock.pending() == []
    task = asyncio.ensure_future(run(deadline, 30, quick))  # the next run arms it again
    await asyncio.sleep(0)
    assert clock.pending() == [35.5, 65.0]  # (the run's own sleep, and the watchdog)
    await clock.advance(0.5)
    assert await task == "done"


async def test_a_moved_deadline_re_arms_and_still_fires() -> None:
    clock = ManualClock()
    deadline = RunDeadline(clock)

    async def quick() -> None:
        await sleep(clock, 1)

    async def hang() -> None:
        await sleep(clock, 100)

    first = asyncio.ensure_future(run(deadline, 10, quick))
    await asyncio.sleep(0)
    await clock.advance(4)
    assert await first == "done"
    second = asyncio.ensure_future(run(deadline, 10, hang))  # started at 4: due at 14
    await asyncio.sleep(0)
    await clock.advance(6)  # the timer armed for 10 fires, finds 14, re-arms
    assert not second.done() and 14.0 in clock.pending()
    await clock.advance(4)
    assert await second == "expired"


async def test_a_shorter_timeout_is_kept() -> None:
    """A reload that shortens handler_timeout: the armed timer is too late, so it moves."""
    clock = ManualClock()
    deadline = RunDeadline(clock)

    async def hang() -> None:
        await sleep(clock, 100)

    async def quick() -> None:
        await sleep(clock, 1)

    first = asyncio.ensure_future(run(deadline, 60, quick))
    await asyncio.sleep(0)
    await clock.advance(1)
    assert await first == "done"
    second = asyncio.ensure_future(run(deadline, 2, hang))
    await asyncio.sleep(0)
    await clock.advance(2)
    assert await second == "expired"


async def test_another_cancel_is_passed_on() -> None:
    """An interrupting message cancels the run: that is not a missed deadline,
    even when the deadline passes at the same moment."""
    clock = ManualClock()
    deadline = RunDeadline(clock)

    async def hang() -> None:
        await sleep(clock, 100)

    task = asyncio.ensure_future(run(deadline, 5, hang))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    both = asyncio.ensure_future(run(deadline, 5, hang))
    await asyncio.sleep(0)
    await clock.advance(5)  # the watchdog cancels...
    both.cancel()  # ...and so does someone else before the run resumes
    with pytest.raises(asyncio.CancelledError):
        await both


async def test_close_disarms() -> None:
    clock = ManualClock()
    deadline = RunDeadline(clock)
    deadline.begin(5)
    deadline.end()
    assert clock.pending() == [5.0]
    deadline.close()
    assert clock.pending() == []


async def test_session_counts_a_missed_deadline_on_the_manual_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the session actor: the run past its deadline is cancelled and
    counted, the next event is handled, and both are marked."""
    clock = ManualClock()
    original = EchoStage.run
    hanging = asyncio.Event()

    async def stuck(self: EchoStage, ctx: HandlerContext) -> Flow:
        if ctx.texts == ["hang"]:
            hanging.set()
            await sleep(clock, 3600)
        return await original(self, ctx)

    monkeypatch.setattr(EchoStage, "run", stuck)
    config = fleet_config(tmp_path)
    config.bots[0].session.handler_timeout = 20
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        counters = fleet.stats.runtimes["demo"].counters
        await client.subscribe("c1")
        await client.say("hang")
        await client.say("next")
        await asyncio.wait_for(hanging.wait(), 10)  # the run began at 0: due at 20
        await clock.advance(19)
        assert counters.timed_out_runs == 0 and not client.of("message")
        await clock.advance(2)
        assert (await client.wait_for(lambda f: f["op"] == "message"))["text"] == "next"
        assert counters.timed_out_runs == 1 and counters.runs == 2

        async def statuses() -> Any:
            rows = await fleet.journal.query("SELECT status FROM events ORDER BY seq")
            return rows if len(rows) == 2 and all(r[0] for r in rows) else None

        assert await eventually(statuses) == [("timeout",), ("done",)]
