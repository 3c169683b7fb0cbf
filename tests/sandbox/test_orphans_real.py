"""Orphans after a crash: SIGKILL a process that owns sandboxes, then a new manager sweeps them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from callboard.engine import ActorSystem
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import REPO, eventually, spawn_manager, status

pytestmark = pytest.mark.timeout(120)


async def test_orphans_of_a_killed_process_are_swept_at_start(
    engine: Engine, system: ActorSystem, fleet: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.sandbox.orphan_child", engine.url, engine.image, fleet],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"  # bounded by the test timeout
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    orphans = engine.containers(fleet)
    assert len(orphans) == 2  # nobody removed them: the owner died without on_stop
    assert all(c.state == "running" for c in orphans)

    manager = spawn_manager(system, fleet, SandboxSettings(engine_url=engine.url, image=engine.image))
    await eventually(lambda: engine.containers(fleet) == [], timeout=30, what="orphans swept")

    async def counted() -> bool:
        return (await status(manager)).orphans_removed == 2

    await eventually(counted, what="sweep reported")
