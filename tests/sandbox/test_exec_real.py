"""exec against real containers: exit codes, stdin, env, cwd, timeouts that kill, truncation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs, SandboxTools
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, spawn_manager

pytestmark = pytest.mark.timeout(120)

PROCESSES = "import os; print(sorted(open(f'/proc/{p}/cmdline').read().replace(chr(0), ' ').strip() for p in os.listdir('/proc') if p.isdigit()))"  # noqa: E501


@pytest.fixture
async def tools(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> SandboxTools:
    return chat_tools(spawn_manager(system, fleet, settings()))


async def test_exit_codes_and_both_streams(tools: SandboxTools) -> None:
    ok = await tools.exec(ExecArgs(argv=["python3", "-c", "print(6 * 7)"]))
    assert (ok.exit_code, ok.stdout, ok.stderr, ok.ok) == (0, "42\n", "", True)
    failed = await tools.exec(ExecArgs(command="echo out; echo err >&2; exit 3"))
    assert (failed.exit_code, failed.stdout, failed.stderr, failed.ok) == (3, "out\n", "err\n", False)
    missing = await tools.exec(ExecArgs(argv=["no-such-program"]))
    assert missing.exit_code == 127
    assert "not found" in missing.stderr


async def test_stdin_env_and_working_directory(tools: SandboxTools) -> None:
    echoed = await tools.exec(
        ExecArgs(argv=["python3", "-c", "import sys; print(sys.stdin.read()[::-1])"], stdin="abc")
    )
    assert echoed.stdout == "cba\n"
    env = await tools.exec(ExecArgs(command='echo "$GREETING"', env={"GREETING": "hello there"}))
    assert env.stdout == "hello there\n"
    await tools.exec(ExecArgs(command="mkdir -p sub/dir"))
    cwd = await tools.exec(ExecArgs(argv=["pwd"], cwd="sub/dir"))
    assert cwd.stdout == "/workspace/sub/dir\n"
    nowhere = await tools.exec(ExecArgs(argv=["pwd"], cwd="missing"))
    assert nowhere.exit_code == 126
    assert "can't cd" in nowhere.stderr


async def test_large_stdin_does_not_deadlock_against_output(tools: SandboxTools) -> None:
    data = "x" * 500_000
    result = await tools.exec(ExecArgs(argv=["cat"], stdin=data, output_limit=1 << 20))
    assert result.exit_code == 0
    assert result.stdout_bytes == len(data)


async def test_timeout_kills_the_process_and_its_children(tools: SandboxTools) -> None:
    result = await tools.exec(ExecArgs(command="sleep 300 & sleep 301; echo never", timeout=1))
    assert result.timed_out
    assert result.exit_code is None
    assert "never" not in result.stdout
    assert 1 <= result.duration < 30
    left = await tools.exec(ExecArgs(argv=["python3", "-c", PROCESSES]))
    assert "sleep 300" not in left.stdout and "sleep 301" not in left.stdout, left.stdout
    again = await tools.exec(ExecArgs(argv=["echo", "still usable"]))
    assert again.stdout == "still usable\n"


async def test_timeout_is_capped_by_the_profile(engine: Engine, system: ActorSystem, fleet: str) -> None:
    settings = SandboxSettings.model_validate(
        {
            "engine_url": engine.url,
            "image": engine.image,
            "profiles": {"default": {"exec_timeout": "1s", "max_exec_timeout": "2s"}},
        }
    )
    tools = chat_tools(spawn_manager(system, fleet, settings))
    capped = await tools.exec(ExecArgs(argv=["sleep", "30"], timeout=600))
    assert capped.timed_out and capped.duration < 15
    default = await tools.exec(ExecArgs(argv=["sleep", "30"]))
    assert default.timed_out and default.duration < 15


async def test_output_keeps_head_and_tail(tools: SandboxTools) -> None:
    code = "import sys; sys.stdout.write('START' + 'x' * 100000 + 'END'); sys.stderr.write('e' * 10)"
    result = await tools.exec(ExecArgs(argv=["python3", "-c", code], output_limit=1000))
    assert result.truncated
    assert result.stdout_bytes == 100008
    assert result.stdout.startswith("START")
    assert result.stdout.endswith("END")
    assert "bytes truncated" in result.stdout
    assert result.stderr == "e" * 10
    assert len(result.stdout) < 1100


async def test_output_limit_is_capped_by_the_profile(tools: SandboxTools) -> None:
    result = await tools.exec(ExecArgs(argv=["head", "-c", "100000", "/dev/zero"], output_limit=10_000_000))
    assert result.truncated
    assert len(result.stdout.encode()) < 17_000  # the default profile keeps 16 KiB
