from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callboard.engine import ActorSystem, ManualClock


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    sys_ = ActorSystem("test")
    yield sys_
    await sys_.shutdown(timeout=5)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manual(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    """An actor system on a clock that only moves when the test advances it."""
    sys_ = ActorSystem("test", clock=clock)
    yield sys_
    await sys_.shutdown(timeout=5)
