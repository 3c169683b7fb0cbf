"""A crash storm over 10k actors leaves no task, registry entry or child behind."""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.engine import Actor, ActorSystem, SupervisorStrategy
from callboard.engine.dispatcher import MAX_PARKED
from tests.engine.helpers import Boom, Note


class Fragile(Actor):
    async def receive(self, message: Any) -> Any:
        if isinstance(message, Boom):
            raise RuntimeError("storm")
        return message


class Pool(Actor):
    def __init__(self, size: int) -> None:
        strategy = SupervisorStrategy(max_restarts=1, within_seconds=60, escalate_on_limit=False)
        self.kids = [self.context.spawn(Fragile, f"s{i}", supervisor=strategy) for i in range(size)]

    async def receive(self, message: Any) -> Any:
        for kid in self.kids:
            kid.tell(message)


async def test_crash_storm_leaves_nothing_behind() -> None:
    before = set(asyncio.all_tasks())
    system = ActorSystem("storm", dead_letter_log_interval=60)
    pool = system.spawn(Pool, "pool", 10_000)
    pool.tell(Boom())  # every child fails and is restarted
    pool.tell(Boom())  # every child fails again: over the limit, stopped
    await system.quiesce(timeout=60)
    assert system.metrics.failures["Fragile"] == 20_000
    assert system.metrics.restarts["Fragile"] == 10_000
    assert system.metrics.live_actors() == 1  # only the pool
    assert system._cells.keys() == {"/pool"}
    assert pool._cell.child_cells == {}
    assert system.dispatcher.active == 0 and not system.dispatcher.runq
    assert len(set(asyncio.all_tasks()) - before) <= MAX_PARKED  # parked workers only
    # the pool itself is healthy
    assert await pool.ask(Note("ok")) is None
    await system.shutdown()
    assert set(asyncio.all_tasks()) - before == set()
