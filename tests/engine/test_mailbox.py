"""Bounded mailboxes: fail, drop_oldest, drop_newest, and send() backpressure."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from callboard.engine import ActorSystem, MailboxFull, MailboxPolicy
from tests.engine.helpers import Block, Gate


def bounded(policy: MailboxPolicy, capacity: int = 2) -> type[Gate]:
    class Bounded(Gate):
        mailbox_capacity: ClassVar[int | None] = capacity
        mailbox_policy: ClassVar[MailboxPolicy] = policy

    return Bounded


async def _blocked(system: ActorSystem, policy: MailboxPolicy) -> tuple[Any, asyncio.Event, list[Any]]:
    gate = asyncio.Event()
    log: list[Any] = []
    ref = system.spawn(bounded(policy), policy, gate, log)
    ref.tell(Block())
    await system.quiesce()  # Block is being handled; the mailbox is empty
    return ref, gate, log


async def test_fail_policy_raises(system: ActorSystem) -> None:
    ref, gate, log = await _blocked(system, "fail")
    ref.tell(1)
    ref.tell(2)
    with pytest.raises(MailboxFull, match="2 messages"):
        ref.tell(3)
    gate.set()
    await system.quiesce()
    assert log == [Block(), 1, 2]


async def test_drop_oldest(system: ActorSystem) -> None:
    ref, gate, log = await _blocked(system, "drop_oldest")
    for i in (1, 2, 3, 4):
        ref.tell(i)
    gate.set()
    await system.quiesce()
    assert log == [Block(), 3, 4]
    assert system.metrics.dropped == 2


async def test_drop_newest(system: ActorSystem) -> None:
    ref, gate, log = await _blocked(system, "drop_newest")
    for i in (1, 2, 3, 4):
        ref.tell(i)
    gate.set()
    await system.quiesce()
    assert log == [Block(), 1, 2]
    assert system.metrics.dropped == 2


async def test_dropped_ask_fails_fast(system: ActorSystem) -> None:
    ref, gate, _ = await _blocked(system, "drop_newest")
    ref.tell(1)
    ref.tell(2)
    with pytest.raises(MailboxFull):
        await ref.ask(3)
    gate.set()


async def test_send_waits_for_room(system: ActorSystem) -> None:
    ref, gate, log = await _blocked(system, "fail")
    ref.tell(1)
    ref.tell(2)
    sender = asyncio.ensure_future(ref.send(3))
    await asyncio.sleep(0.01)
    assert not sender.done()  # backpressure: waits instead of failing
    gate.set()
    await sender
    await system.quiesce()
    assert log == [Block(), 1, 2, 3]


async def test_many_senders_keep_fifo_per_sender(system: ActorSystem) -> None:
    ref, gate, log = await _blocked(system, "fail")

    async def produce(tag: str) -> None:
        for i in range(20):
            await ref.send((tag, i))

    producers = [asyncio.ensure_future(produce(t)) for t in "abc"]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*producers)
    await system.quiesce()
    for tag in "abc":
        assert [i for t, i in log[1:] if t == tag] == list(range(20))
