"""The narrow actor context: what an actor may use of the runtime, and nothing else."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from callboard.engine import Actor, ActorContext, ActorRef, ActorSystem, ManualClock, Terminated

PUBLIC = {
    "cancel_timer",
    "log",
    "parent",
    "ref",
    "schedule_once",
    "set_receive_timeout",
    "spawn",
    "stop",
    "system",
    "unwatch",
    "watch",
}


class WhoAmI:
    __slots__ = ()


class Boom:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Say:
    text: str


class Probe(Actor):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def receive(self, message: Any) -> Any:
        if isinstance(message, WhoAmI):
            ctx = self.context
            return ctx, ctx.ref, ctx.parent
        if isinstance(message, Boom):
            raise RuntimeError("boom")
        if isinstance(message, Say):
            self.context.log.info("said %s", message.text)
        return None


class Parent(Actor):
    async def on_start(self) -> None:
        self.child = self.context.spawn(Probe, "child")

    async def receive(self, message: Any) -> Any:
        return self.child


def test_context_offers_only_the_public_surface() -> None:
    names = {n for n in dir(ActorContext) if not n.startswith("_")}
    assert names == PUBLIC
    for internal in ("run", "enqueue", "finalize", "kill", "request_stop", "mailbox", "actor"):
        assert not hasattr(ActorContext, internal)


async def test_ref_parent_and_same_context_across_restart(system: ActorSystem) -> None:
    parent = system.spawn(Parent, "p")
    child: ActorRef = await parent.ask(WhoAmI())
    ctx, ref, parent_ref = await child.ask(WhoAmI())
    assert isinstance(ctx, ActorContext)
    assert ref is child and parent_ref is parent
    top_ctx, _, top_parent = await system.spawn(Probe, "top").ask(WhoAmI())
    assert top_parent is None and top_ctx is not ctx
    child.tell(Boom())  # restarted by the default strategy: a fresh instance, the same context
    again, _, _ = await child.ask(WhoAmI())
    assert again is ctx


async def test_stop_and_watch_through_the_context(manual: ActorSystem, clock: ManualClock) -> None:
    seen: list[Terminated] = []

    class Watcher(Actor):
        async def receive(self, message: Any) -> Any:
            if isinstance(message, Terminated):
                seen.append(message)
            elif isinstance(message, ActorRef):
                self.context.watch(message)

    class Quitter(Actor):
        async def on_start(self) -> None:
            self.context.schedule_once(5.0, Boom(), key="quit")

        async def receive(self, message: Any) -> Any:
            self.context.stop(reason="done")

    watcher = manual.spawn(Watcher, "w")
    quitter = manual.spawn(Quitter, "q")
    watcher.tell(quitter)
    await clock.advance(4.9)
    assert seen == [] and quitter.is_alive
    await clock.advance(0.2)
    assert [(t.ref, t.reason) for t in seen] == [(quitter, "done")]


async def test_log_names_the_actor(system: ActorSystem, caplog: pytest.LogCaptureFixture) -> None:
    ref = system.spawn(Probe, "talker")
    with caplog.at_level(logging.INFO, logger="callboard.actor"):
        await ref.ask(Say("hello"))
    assert [r.getMessage() for r in caplog.records if r.name == "callboard.actor"] == ["/talker: said hello"]
