"""Refs, mailbox order, ask, dead letters, names, death watch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callboard.engine import (
    Actor,
    ActorDeadError,
    ActorSystem,
    AskTimeout,
    InvalidNameError,
    ManualClock,
    NameTakenError,
    SystemShutDownError,
    Terminated,
)
from tests.engine.helpers import Block, Gate, Get, Note, Recorder


async def test_tell_keeps_order(system: ActorSystem) -> None:
    ref = system.spawn(Recorder, "r")
    for i in range(5000):
        ref.tell(i)
    assert await ref.ask(Get()) == list(range(5000))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), max_size=200))
def test_per_actor_order_under_interleaving(ops: list[tuple[int, bool]]) -> None:
    """Whatever the interleaving of tells and asks over several actors, each
    actor sees its own messages in the order they were sent."""

    async def scenario() -> None:
        system = ActorSystem("prop")
        refs = [system.spawn(Recorder, f"r{i}") for i in range(5)]
        sent: list[list[int]] = [[] for _ in refs]
        for n, (target, use_ask) in enumerate(ops):
            sent[target].append(n)
            if use_ask:
                await refs[target].ask(n)
            else:
                refs[target].tell(n)
        for i, ref in enumerate(refs):
            assert await ref.ask(Get()) == sent[i]
        await system.shutdown()

    asyncio.run(scenario())


async def test_ask_returns_and_raises(system: ActorSystem) -> None:
    class Calc(Actor):
        async def receive(self, message: Any) -> Any:
            return 10 // message

    ref = system.spawn(Calc, "calc")
    assert await ref.ask(2) == 5
    with pytest.raises(ZeroDivisionError):
        await ref.ask(0)
    assert await ref.ask(5) == 2  # restarted, still answering


async def test_ask_timeout_on_manual_clock(manual: ActorSystem, clock: ManualClock) -> None:
    gate = asyncio.Event()
    ref = manual.spawn(Gate, "g", gate, [])
    ask = asyncio.ensure_future(ref.ask(Block(), timeout=2.0))
    await clock.advance(1.9)
    assert not ask.done()
    await clock.advance(0.2)
    with pytest.raises(AskTimeout) as info:
        await ask
    assert info.value.path == "/g"
    gate.set()


async def test_ask_dead_actor(system: ActorSystem) -> None:
    ref = system.spawn(Recorder, "r")
    await ref.stop()
    assert not ref.is_alive
    with pytest.raises(ActorDeadError):
        await ref.ask(Get())


async def test_ask_queued_behind_a_kill_fails(system: ActorSystem) -> None:
    gate = asyncio.Event()
    ref = system.spawn(Gate, "g", gate, [])
    ref.tell(Block())
    pending = asyncio.ensure_future(ref.ask(Note("after")))
    await asyncio.sleep(0.01)
    await ref._cell.kill()
    with pytest.raises(ActorDeadError):
        await pending


async def test_dead_letters_are_counted_not_raised(system: ActorSystem) -> None:
    ref = system.spawn(Recorder, "r")
    await ref.stop()
    before = system.metrics.dead_letters
    ref.tell(Note("late"))
    ref.tell(Note("later"))
    assert system.metrics.dead_letters == before + 2


async def test_graceful_stop_handles_queued_messages(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = system.spawn(Recorder, "r", log)
    for i in range(100):
        ref.tell(i)
    reason = await ref.stop()
    assert reason == "normal"
    assert log == list(range(100))


async def test_names(system: ActorSystem) -> None:
    system.spawn(Recorder, "dup")
    with pytest.raises(NameTakenError, match="dup"):
        system.spawn(Recorder, "dup")
    with pytest.raises(InvalidNameError):
        system.spawn(Recorder, "a/b")
    with pytest.raises(InvalidNameError):
        system.spawn(Recorder, "")
    anonymous = system.spawn(Recorder)
    assert anonymous.path.startswith("/$")


async def test_spawn_after_shutdown() -> None:
    system = ActorSystem("s")
    await system.shutdown()
    with pytest.raises(SystemShutDownError, match="shut down"):
        system.spawn(Recorder, "late")


async def test_actor_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError, match="spawn"):
        Recorder()


async def test_paths_and_lookup(system: ActorSystem) -> None:
    class Parent(Actor):
        def __init__(self) -> None:
            # the context already works inside __init__
            self.child = self.context.spawn(Recorder, "sessions")

        async def receive(self, message: Any) -> Any:
            return self.child

    fleet = system.spawn(Parent, "fleet")
    child = await fleet.ask(Get())
    assert child.path == "/fleet/sessions"
    assert system.lookup("/fleet/sessions") is child
    assert system.lookup("/fleet/missing") is None
    assert system.tree()["children"][0]["children"][0]["path"] == "/fleet/sessions"


async def test_death_watch(system: ActorSystem) -> None:
    got: list[Terminated] = []

    class Watcher(Actor):
        async def receive(self, message: Any) -> Any:
            if isinstance(message, Terminated):
                got.append(message)
            else:
                self.context.watch(message)

    target = system.spawn(Recorder, "target")
    watcher = system.spawn(Watcher, "watcher")
    await watcher.ask(target)
    await target.stop()
    await system.quiesce()
    assert [(t.ref, t.reason) for t in got] == [(target, "normal")]
    # watching an actor that is already gone delivers at once
    await watcher.ask(target)
    await system.quiesce()
    assert len(got) == 2


async def test_metrics_snapshot(system: ActorSystem) -> None:
    ref = system.spawn(Recorder, "r")
    ref.tell(1)
    await ref.ask(Get())
    snap = system.metrics.snapshot()
    assert snap["actors_live"] == 1
    assert snap["messages_total"] >= 2
    assert set(snap) >= {
        "dead_letters_total",
        "restarts_total",
        "failures_total",
        "mailbox_depth_total",
        "mailbox_depth_max",
    }


async def test_tree(system: ActorSystem) -> None:
    class Parent(Actor):
        def __init__(self) -> None:
            self.context.spawn(Recorder, "kid")

        async def receive(self, message: Any) -> Any:
            return None

    system.spawn(Parent, "p")
    tree = system.tree()
    assert tree["children"][0]["path"] == "/p"
    assert tree["children"][0]["children"][0]["class"] == "Recorder"


async def test_tree_caps_children_and_counts_classes(system: ActorSystem) -> None:
    class Parent(Actor):
        def __init__(self) -> None:
            for n in range(7):
                self.context.spawn(Recorder, f"kid{n}")

        async def receive(self, message: Any) -> Any:
            return None

    parent = system.spawn(Parent, "p")
    assert system.metrics.live_by_class["Recorder"] == 7
    capped = system.tree(max_children=3)["children"][0]
    assert [c["name"] for c in capped["children"]] == ["kid0", "kid1", "kid2"]
    assert capped["more"] == 4
    assert "more" not in system.tree()["children"][0]
    await parent.stop()
    assert system.metrics.live_by_class["Recorder"] == 0
    assert system.metrics.live_by_class["Parent"] == 0
