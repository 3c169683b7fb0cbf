"""Skills: a host folder of instructions and scripts, mounted read-only at
``/workspace/.skills/<name>`` when the container is created; the file tools list and read it,
``exec`` runs its scripts, and nothing in the sandbox can change it. A folder outside
``allowed_mount_roots`` is refused at config load."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs, GlobArgs, ReadArgs, SandboxFileError, WriteArgs
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, spawn_manager

pytestmark = pytest.mark.timeout(120)


def skill(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"# {name}\nRun `sh run.sh NAME` to greet someone.\n")
    (folder / "run.sh").write_text('echo "hello, $1"\n')
    for path in (root, folder):
        path.chmod(0o755)
    return folder


async def test_skills_are_mounted_read_only_and_runnable(
    engine: Engine, system: ActorSystem, fleet: str, tmp_path: Path
) -> None:
    greet = skill(tmp_path / "skills", "greet")
    settings = SandboxSettings.model_validate(
        {
            "engine_url": engine.url,
            "image": engine.image,
            "allowed_mount_roots": [str(tmp_path)],
            "profiles": {"default": {"skills": {"greet": str(greet)}}},
        }
    )
    tools = chat_tools(spawn_manager(system, fleet, settings))
    listed = await tools.glob(GlobArgs(pattern=".skills/*/SKILL.md"))
    assert listed.paths == [".skills/greet/SKILL.md"]
    assert "sh run.sh NAME" in (await tools.read(ReadArgs(path=".skills/greet/SKILL.md"))).content
    ran = await tools.exec(ExecArgs(argv=["sh", "run.sh", "agent"], cwd=".skills/greet"))
    assert ran.ok and ran.stdout == "hello, agent\n"
    with pytest.raises(SandboxFileError):
        await tools.write(WriteArgs(path=".skills/greet/run.sh", content="rm -rf /"))
    changed = await tools.exec(ExecArgs(command="echo evil > .skills/greet/run.sh"))
    assert changed.exit_code != 0 and "Read-only file system" in changed.stderr
    assert (greet / "run.sh").read_text() == 'echo "hello, $1"\n'
    assert (await tools.write(WriteArgs(path="notes.md", content="the rest stays writable"))).size == 23


def test_a_skill_outside_the_allowed_roots_is_refused(tmp_path: Path) -> None:
    outside = skill(tmp_path / "elsewhere", "greet")
    with pytest.raises(ValidationError, match=r"profiles\.default\.skills\.greet"):
        SandboxSettings.model_validate(
            {
                "allowed_mount_roots": [str(tmp_path / "allowed")],
                "profiles": {"default": {"skills": {"greet": str(outside)}}},
            }
        )
