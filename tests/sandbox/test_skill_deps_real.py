"""A skill's Python dependencies in a real container, through the agent: the fake OpenAI server
scripts ``exec`` calls that run a skill's script, which imports a package vendored as a wheel
in the skill's ``wheels/`` (written by the test). The first use builds the skill's venv in the
workspace (unpacked offline: the profile has no network); the second reuses it; a skill whose
requirement is not vendored gets a clear error as the tool's result and its script never runs.
``list_skills`` lists both, from their SKILL.md."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest

from callboard.actors.sandbox import SessionTools
from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import SandboxError
from callboard.engine.sandbox_processes import ProcessArgs
from callboard.sandbox.config import SandboxSettings
from callboard.testing.fake_openai import Call, FakeOpenAI, Reply
from tests.sandbox.conftest import Engine, sandbox_agent_rule
from tests.sandbox.helpers import chat_tools, spawn_manager
from tests.sandbox.skill_wheels import write_wheel
from tests.support import chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(180)
GREET = "def greet(name):\n    return 'hello, ' + name + ' from a vendored wheel'\n"
RUN = "import sys\nimport tinygreet\nprint(tinygreet.greet(sys.argv[1]))\nprint(sys.prefix)\n"


def skill_folder(root: Path, name: str, requirements: str) -> Path:
    folder = root / name
    (folder / "wheels").mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"# {name}\nRun `python3 .skills/{name}/run.py NAME`.\n")
    (folder / "run.py").write_text(RUN)
    (folder / "requirements.txt").write_text(requirements)
    write_wheel(folder / "wheels", "tinygreet", "1.0", GREET)
    for path in (root, folder, folder / "wheels"):
        path.chmod(0o755)
    return folder


async def test_a_skill_script_imports_its_vendored_package(
    tmp_path: Path, engine: Engine, fleet: str, model: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    skills = tmp_path / "skills"
    greet = skill_folder(skills, "greet", "tinygreet==1.0\n")
    broken = skill_folder(skills, "broken", "tinygreet\nnot-vendored>=2\n")
    run = {"argv": ["python3", ".skills/greet/run.py", "agent"]}
    model.script(
        Reply(calls=[Call("list_skills", {})]),  # (and the container is up before the skill's use)
        Reply(calls=[Call("exec", run)]),
        Reply(calls=[Call("exec", {**run, "argv": ["python3", "run.py", "again"], "cwd": ".skills/greet"})]),
        Reply(calls=[Call("exec", {"argv": ["python3", ".skills/broken/run.py", "x"]})]),
        Reply(text="greeted"),
    )
    handlers = sandbox_agent_rule(model.base_url, "{sandbox: [exec], skills: true}")
    sandbox = f"""sandbox:
  engine_url: {engine.url}
  image: {engine.image}
  allowed_mount_roots: [{tmp_path}]
  profiles:
    default: {{skills: {{greet: {greet}, broken: {broken}}}}}
"""
    config = fleet_config(
        tmp_path,
        handlers=handlers,
        extra=sandbox,
        bot_extra="sandbox: {enabled: true, exec_handlers: [agent]}",
    )
    config = config.model_copy(update={"name": fleet})
    caplog.set_level(logging.INFO, logger="callboard.sandbox")
    async with running_fleet(config) as running, chat_client(running.base_url) as client:
        await client.subscribe("c1")
        await client.say("greet the agent")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "greeted", timeout=120)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{running.base_url}/api/sandbox/audit?tool=exec") as response,
        ):
            audit = list(reversed((await response.json())["rows"]))

    listed, first, second, failed = (
        json.loads(m["content"]) for m in model.requests[4]["messages"] if m["role"] == "tool"
    )
    assert listed["skills"] == [
        {
            "name": name,
            "folder": f".skills/{name}",
            "description": f"Run `python3 .skills/{name}/run.py NAME`.",
        }
        for name in ("broken", "greet")
    ]
    assert first["exit_code"] == 0, first["stderr"]
    assert first["stdout"] == "hello, agent from a vendored wheel\n/workspace/.venvs/greet\n"
    assert second["stdout"].startswith("hello, again from a vendored wheel\n"), second["stderr"]
    assert failed["exit_code"] == 1 and failed["stdout"] == ""
    assert failed["stderr"].startswith("skill 'broken': its Python dependencies could not be installed")
    assert "not-vendored>=2" in failed["stderr"] and "no network" in failed["stderr"]

    # Built once: the second use found the venv (the audit's durations are whole calls, printed).
    installs = [r.getMessage() for r in caplog.records if "skill greet: installed" in r.getMessage()]
    assert len(installs) == 1 and "tinygreet==1.0" in installs[0]
    durations = [row["duration"] for row in audit]
    assert len(durations) == 3
    print(f"skill exec: first use {durations[0] * 1000:.0f} ms, second {durations[1] * 1000:.0f} ms")


SERVE = (
    "import sys\nimport tinygreet\n"
    "for line in sys.stdin:\n    print(tinygreet.greet(line.strip()), flush=True)\n"
)


async def test_a_managed_process_from_a_skill_gets_its_venv(
    engine: Engine, system: ActorSystem, fleet: str, tmp_path: Path
) -> None:
    """A managed process (an MCP server, say) run from a skill folder imports its packages too;
    one whose packages cannot be installed does not start, and its report says why."""
    greet = skill_folder(tmp_path / "skills", "greet", "tinygreet\n")
    (greet / "serve.py").write_text(SERVE)
    broken = skill_folder(tmp_path / "skills", "broken", "not-vendored\n")
    settings = SandboxSettings.model_validate(
        {
            "engine_url": engine.url,
            "image": engine.image,
            "allowed_mount_roots": [str(tmp_path)],
            "profiles": {"default": {"skills": {"greet": str(greet), "broken": str(broken)}}},
        }
    )
    tools = chat_tools(spawn_manager(system, fleet, settings))
    assert isinstance(tools, SessionTools)
    await tools.start_process(ProcessArgs(process_id="greeter", argv=["python3", ".skills/greet/serve.py"]))
    attachment = await tools.attach("greeter")
    await attachment.write(b"process\n")
    assert await asyncio.wait_for(attachment.read(), 10) == b"hello, process from a vendored wheel\n"
    await attachment.close()

    failing = ProcessArgs(
        process_id="broken", argv=["python3", "run.py"], cwd=".skills/broken", max_restarts=0
    )
    with pytest.raises(SandboxError):
        await tools.start_process(failing)
    report = await tools.get_process("broken")
    assert report.state == "failed" and "not installed: not-vendored" in (report.error or "")
