"""Tenants: a bot's tenant id labels its containers and caps how many sandboxes the tenant has
at once (``sandbox.tenant_max_sessions``), without touching other tenants. Against the
in-memory backend of ``test_manager.py``; labels are checked on real containers below."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest

from callboard.actors.sandbox import tools_for
from callboard.actors.sandbox_manager import SandboxManager
from callboard.engine import ActorRef, ActorSystem
from callboard.engine.sandbox_api import ExecArgs, SandboxBusy, SandboxTools
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxPolicy, SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.fakes import FakeBackend, FakeEngine
from tests.sandbox.helpers import eventually, spawn_manager, status

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    actors = ActorSystem("tenant-test")
    yield actors
    await actors.shutdown(timeout=10)


def chat(manager: ActorRef, tenant: str | None, chat_id: str) -> SandboxTools:
    policy = SandboxPolicy(enabled=True, tenant=tenant)
    return tools_for(manager, policy, f"bot-{tenant}", "private", chat_id, "u")


async def test_a_tenant_at_its_limit_reuses_its_own_slots(system: ActorSystem) -> None:
    fake = FakeEngine()
    specs: list[SessionSpec] = []
    fake.on_create = specs.append
    settings = SandboxSettings(max_sessions=10, tenant_max_sessions={"acme": 2})
    manager = system.spawn(SandboxManager, "sandbox", "fleet", settings, partial(FakeBackend, fake))
    true = ExecArgs(argv=["true"])
    for chat_id in ("1", "2"):
        await chat(manager, "acme", chat_id).exec(true)
    for chat_id in ("1", "2", "3"):
        await chat(manager, "other", chat_id).exec(true)
    await chat(manager, "acme", "3").exec(true)  # acme's least recently used idle sandbox goes
    await eventually(lambda: len(fake.containers) == 5, what="acme back to two containers")
    assert sum(1 for s in specs if s.tenant == "acme") == 3 and specs[0].labels["callboard.tenant"] == "acme"

    busy = [asyncio.ensure_future(chat(manager, "acme", c).exec(ExecArgs(argv=["sleep", "1"]))) for c in "23"]

    async def both_busy() -> bool:
        return sum(entry.in_flight for entry in (await status(manager)).live) == 2

    await eventually(both_busy, what="both acme sandboxes busy")
    with pytest.raises(SandboxBusy, match="tenant 'acme' has all 2 of its sandboxes busy"):
        await chat(manager, "acme", "4").exec(true)
    await chat(manager, "other", "4").exec(true)  # other tenants are not held back
    await asyncio.gather(*busy)


async def test_the_tenant_label_is_on_real_containers(
    engine: Engine, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    actors = ActorSystem("tenant-real")
    try:
        manager = spawn_manager(actors, fleet, settings())
        await chat(manager, "acme", "1").exec(ExecArgs(argv=["true"]))
        (container,) = engine.containers(fleet)
        assert container.labels["callboard.tenant"] == "acme"
    finally:
        await actors.shutdown(timeout=30)
