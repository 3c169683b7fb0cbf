"""The demo pipeline's /run command, end to end: web chat -> session -> the
session's sandbox container -> reply."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.actors.config import FleetConfig
from tests.sandbox.conftest import Engine
from tests.support import chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(240)


def _config(tmp_path: Path, engine: Engine, fleet: str, enabled: bool = True) -> FleetConfig:
    sandbox = (
        f"sandbox:\n  engine_url: {engine.url}\n  image: {engine.image}\n"
        "  profiles:\n    default: {exec_timeout: 3s}\n"
    )
    config = fleet_config(
        tmp_path,
        extra=sandbox,
        bot_extra=f"sandbox: {{enabled: {str(enabled).lower()}}}",
    )
    return config.model_copy(update={"name": fleet})


async def test_run_executes_python_in_the_session_sandbox(tmp_path: Path, engine: Engine, fleet: str) -> None:
    config = _config(tmp_path, engine, fleet)
    async with running_fleet(config) as running, chat_client(running.base_url) as client:
        await client.subscribe("c1")
        await client.say("/run import os; print(6 * 7, os.getuid() != 0)")
        reply = await client.wait_for(lambda f: f["op"] == "message", timeout=120)
        assert reply["text"] == "42 True"
        # the same session keeps its workspace between commands
        await client.say("/run open('/workspace/n', 'w').write('kept')")
        await client.say("/run print(open('/workspace/n').read())")
        replies = await client.wait_count("message", 3, timeout=60)
        assert replies[2]["text"] == "kept"
        await client.say("/run while True: pass")
        looped = await client.wait_count("message", 4, timeout=60)
        assert "timed out" in looped[3]["text"]
        assert len(engine.containers(fleet)) == 1


async def test_run_says_off_when_the_bot_has_no_sandbox(tmp_path: Path, engine: Engine, fleet: str) -> None:
    config = _config(tmp_path, engine, fleet, enabled=False)
    async with running_fleet(config) as running, chat_client(running.base_url) as client:
        await client.subscribe("c1")
        await client.say("/run print(1)")
        reply = await client.wait_for(lambda f: f["op"] == "message", timeout=30)
        assert "sandbox is off" in reply["text"]
        assert engine.containers(fleet) == []
