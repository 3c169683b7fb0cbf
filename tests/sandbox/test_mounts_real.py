"""An allowed host mount, seen from inside a real container: present and read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, spawn_manager

pytestmark = pytest.mark.timeout(120)


async def test_allowed_mount_is_read_only_inside(
    engine: Engine, system: ActorSystem, fleet: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.csv").write_text("a,b\n1,2\n")
    data.chmod(0o755)
    settings = SandboxSettings.model_validate(
        {
            "engine_url": engine.url,
            "image": engine.image,
            "allowed_mount_roots": [str(tmp_path)],
            "profiles": {"data": {"mounts": [{"source": str(data), "target": "/mnt/data"}]}},
        }
    )
    tools = chat_tools(spawn_manager(system, fleet, settings), profile="data")
    read = await tools.exec(ExecArgs(argv=["cat", "/mnt/data/input.csv"]))
    assert read.stdout == "a,b\n1,2\n"
    write = await tools.exec(ExecArgs(argv=["touch", "/mnt/data/new"]))
    assert write.exit_code != 0 and "Read-only file system" in write.stderr
    assert not (data / "new").exists()
