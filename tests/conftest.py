"""Shared test configuration: every async test runs on uvloop, as the engine does; ``model``
is a fake OpenAI-compatible server for the agents' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
import uvloop
from pytest_asyncio.plugin import LoopFactory

from callboard.testing.fake_openai import FakeOpenAI
from tests.support import API_KEY


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, LoopFactory]:
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAI]:
    """The fake model, scripted by the test, accepting ``API_KEY``."""
    server = await FakeOpenAI(api_key=API_KEY).start()
    try:
        yield server
    finally:
        await server.stop()
