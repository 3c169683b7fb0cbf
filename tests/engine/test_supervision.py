"""Supervision: directives, restart intensity, backoff, one_for_all, escalation."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from callboard.engine import (
    Actor,
    ActorSystem,
    Backoff,
    Directive,
    ManualClock,
    RestartLimitExceeded,
    SupervisorStrategy,
    Terminated,
)
from tests.engine.helpers import Boom, Flaky, Get, Note


@pytest.fixture(autouse=True)
def _reset() -> None:
    Flaky.instances.clear()


async def test_restart_makes_fresh_instance_and_keeps_mailbox(system: ActorSystem) -> None:
    seen: list[Any] = []
    ref = system.spawn(Flaky, "f", seen)
    ref.tell(1)
    ref.tell(Boom())
    ref.tell(2)
    ref.tell(3)
    assert await ref.ask(4) == 3  # the fresh instance counted 2, 3, 4
    assert seen == [1, 2, 3, 4]
    assert len(Flaky.instances) == 2
    assert system.metrics.restarts["Flaky"] == 1
    assert system.metrics.failures["Flaky"] == 1


async def test_failed_message_is_reported(system: ActorSystem, caplog: pytest.LogCaptureFixture) -> None:
    ref = system.spawn(Flaky, "f")
    with caplog.at_level(logging.ERROR, logger="callboard.engine"):
        ref.tell(Boom())
        await ref.ask(1)
    assert any("/f (Flaky) failed on Boom()" in r.getMessage() for r in caplog.records)


async def test_restart_intensity_escalates(manual: ActorSystem, clock: ManualClock) -> None:
    stops: list[Any] = []

    class Parent(Actor):
        starts = 0

        async def on_start(self) -> None:
            Parent.starts += 1
            self.child = self.context.spawn(
                Flaky,
                "child",
                supervisor=SupervisorStrategy(max_restarts=2, within_seconds=10),
            )
            self.context.watch(self.child)

        async def receive(self, message: Any) -> Any:
            if isinstance(message, Terminated):
                stops.append(message.reason)
                return None
            self.child.tell(message)
            return None

    parent = manual.spawn(Parent, "parent")
    await clock.advance(0)
    parent.tell(Boom())
    await clock.advance(1)
    parent.tell(Boom())
    await clock.advance(1)
    assert Parent.starts == 1
    assert manual.metrics.restarts["Flaky"] == 2
    parent.tell(Boom())  # third failure within 10 s: limit exceeded
    await clock.advance(1)
    assert manual.metrics.restarts["Parent"] == 1
    assert Parent.starts == 2
    assert manual.metrics.failures["Parent"] == 1
    assert manual.lookup("/parent/child") is not None  # the restarted parent spawned a new one


async def test_intensity_window_slides(manual: ActorSystem, clock: ManualClock) -> None:
    ref = manual.spawn(Flaky, "f", supervisor=SupervisorStrategy(max_restarts=2, within_seconds=5))
    for _ in range(6):
        ref.tell(Boom())
        await clock.advance(3)  # never more than 2 failures inside any 5 s window
    assert ref.is_alive
    assert manual.metrics.restarts["Flaky"] == 6


async def test_limit_stops_child_without_escalation(manual: ActorSystem, clock: ManualClock) -> None:
    strategy = SupervisorStrategy(max_restarts=1, within_seconds=60, escalate_on_limit=False)
    ref = manual.spawn(Flaky, "f", supervisor=strategy)
    ref.tell(Boom())
    ref.tell(Boom())
    await clock.advance(0)
    reason = await ref.terminated()
    assert isinstance(reason, RestartLimitExceeded)
    assert not ref.is_alive


async def test_backoff_delays_on_test_clock(manual: ActorSystem, clock: ManualClock) -> None:
    strategy = SupervisorStrategy(
        max_restarts=None, backoff=Backoff(min=1.0, max=4.0, factor=2.0, jitter=0.0, reset_after=100)
    )
    ref = manual.spawn(Flaky, "f", supervisor=strategy)
    expected = [1.0, 2.0, 4.0, 4.0]
    for delay in expected:
        ref.tell(Boom())
        ref.tell(Note("after"))
        await clock.advance(0)
        restarts = manual.metrics.restarts["Flaky"]
        assert clock.pending() == [pytest.approx(clock.now() + delay)]
        await clock.advance(delay - 0.01)
        assert manual.metrics.restarts["Flaky"] == restarts  # still backing off
        await clock.advance(0.01)
        assert manual.metrics.restarts["Flaky"] == restarts + 1
    # messages that arrived during backoff were kept and handled by the fresh instance
    assert [i.seen for i in Flaky.instances] == [[]] + [[Note("after")]] * 4


async def test_backoff_resets_after_quiet_period(manual: ActorSystem, clock: ManualClock) -> None:
    strategy = SupervisorStrategy(
        max_restarts=None, backoff=Backoff(min=1.0, max=8.0, factor=2.0, jitter=0.0, reset_after=10)
    )
    ref = manual.spawn(Flaky, "f", supervisor=strategy)
    ref.tell(Boom())
    await clock.advance(1)
    ref.tell(Boom())
    await clock.advance(0)
    assert clock.pending() == [pytest.approx(clock.now() + 2.0)]
    await clock.advance(30)  # quiet for longer than reset_after
    ref.tell(Boom())
    await clock.advance(0)
    assert clock.pending() == [pytest.approx(clock.now() + 1.0)]


async def test_backoff_jitter_bounds() -> None:
    backoff = Backoff(min=1.0, max=10.0, factor=2.0, jitter=0.5)
    for attempt in range(10):
        base = min(10.0, 2.0**attempt)
        for _ in range(20):
            assert base <= backoff.delay(attempt) <= base * 1.5
    with pytest.raises(ValueError):
        Backoff(min=2, max=1)


async def test_one_for_all_restarts_siblings(system: ActorSystem) -> None:
    group = SupervisorStrategy.one_for_all(max_restarts=5)
    refs = [system.spawn(Flaky, f"f{i}", supervisor=group) for i in range(3)]
    loner = system.spawn(Flaky, "loner")
    for ref in [*refs, loner]:
        await ref.ask(1)
    assert len(Flaky.instances) == 4
    refs[1].tell(Boom())
    # every member of the group answers from a fresh instance
    assert [await r.ask(1) for r in refs] == [1, 1, 1]
    assert await loner.ask(1) == 2  # outside the group: untouched
    assert system.metrics.restarts["Flaky"] == 3


async def test_decider_mapping(system: ActorSystem) -> None:
    strategy = SupervisorStrategy.one_for_one(
        decider={ValueError: "resume", KeyError: Directive.STOP, LookupError: "restart"}
    )
    ref = system.spawn(Flaky, "f", supervisor=strategy)
    await ref.ask(1)
    ref.tell(ValueError("resume me"))
    assert await ref.ask(1) == 2  # resumed: same instance, state kept
    ref.tell(IndexError("restart me"))  # LookupError entry covers IndexError
    assert await ref.ask(1) == 1
    ref.tell(KeyError("stop me"))  # most specific entry wins over LookupError
    reason = await ref.terminated()
    assert isinstance(reason, KeyError)


async def test_escalate_restarts_parent(system: ActorSystem) -> None:
    class Parent(Actor):
        starts = 0

        async def on_start(self) -> None:
            Parent.starts += 1
            self.child = self.context.spawn(
                Flaky, "child", supervisor=SupervisorStrategy(decider=lambda e: Directive.ESCALATE)
            )

        async def receive(self, message: Any) -> Any:
            if isinstance(message, Get):
                return self.child
            self.child.tell(message)
            return None

    parent = system.spawn(Parent, "p")
    old_child = await parent.ask(Get())
    parent.tell(Boom())
    await system.quiesce()
    assert Parent.starts == 2
    assert not old_child.is_alive
    new_child = await parent.ask(Get())
    assert new_child.is_alive and new_child is not old_child


async def test_on_start_failure_is_supervised(manual: ActorSystem, clock: ManualClock) -> None:
    class BadStart(Actor):
        attempts = 0

        async def on_start(self) -> None:
            BadStart.attempts += 1
            if BadStart.attempts < 3:
                raise OSError("not yet")

        async def receive(self, message: Any) -> Any:
            return BadStart.attempts

    strategy = SupervisorStrategy(max_restarts=5, backoff=Backoff(min=0.5, max=1, jitter=0))
    ref = manual.spawn(BadStart, "b", supervisor=strategy)
    await clock.advance(5)
    assert await ref.ask(Get()) == 3


async def test_top_level_escalation_stops_it(system: ActorSystem) -> None:
    ref = system.spawn(Flaky, "f", supervisor=SupervisorStrategy(decider=lambda e: Directive.ESCALATE))
    ref.tell(Boom())
    reason = await ref.terminated()
    assert isinstance(reason, RuntimeError)
