"""``isolation: container`` without a usable sandbox is refused, never run as a host
process instead; the pieces a container runner relies on (no engine needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from callboard.actors.config_file import ConfigError, parse_fleet
from callboard.actors.plugin_container import _BOOT, EXIT_PYTHON_MISMATCH, RUNNER_ROOMS, code_mounts
from tests.plugins.support import FAST_RUNTIME, FIXTURES, fleet_plugins, fleet_text, soon
from tests.support import running_fleet

pytestmark = pytest.mark.timeout(120)

RULE = "- {event_type: message.received, handler_type: plugin, handler_config: {}}"
CONTAINED = f"- path: {FIXTURES / 'echoer'}\n  isolation: container\n"


@pytest.mark.parametrize(
    ("sandbox", "problem"),
    [
        ("", "plugins[0] (echoer): isolation: container needs the fleet's sandbox block, enabled"),
        ("sandbox: {enabled: false}\n", "needs the fleet's sandbox block, enabled"),
        ("sandbox: {}\n", None),
    ],
)
def test_a_container_runner_needs_an_enabled_sandbox(
    tmp_path: Path, sandbox: str, problem: str | None
) -> None:
    text = fleet_text(tmp_path, CONTAINED, RULE).replace("name: test\n", "name: test\n" + sandbox, 1)
    if problem is None:
        parse_fleet(text, "fleet.yaml")
        return
    with pytest.raises(ConfigError) as caught:
        parse_fleet(text, "fleet.yaml")
    assert problem in str(caught.value) and "fleet.yaml" in str(caught.value)


def test_an_unknown_profile_and_mixed_shared_runners_are_refused(tmp_path: Path) -> None:
    def refused(plugins: str) -> str:
        text = fleet_text(tmp_path, plugins, RULE).replace("name: test\n", "name: test\nsandbox: {}\n", 1)
        with pytest.raises(ConfigError) as caught:
            parse_fleet(text, "fleet.yaml")
        return str(caught.value)

    assert "sandbox_profile is not one of the sandbox.profiles" in refused(
        CONTAINED + "  sandbox_profile: nope\n"
    )
    shared = (
        f"- path: {FIXTURES / 'echoer'}\n  runner: one\n  isolation: container\n"
        f"- path: {FIXTURES / 'crasher'}\n  runner: one\n"
    )
    assert "plugins sharing runner 'one' must have the same isolation" in refused(shared)


async def test_an_unreachable_engine_stops_the_plugin_and_starts_no_host_runner(tmp_path: Path) -> None:
    engine_url = f"unix://{tmp_path}/no-engine.sock"
    text = fleet_text(tmp_path, CONTAINED, RULE, runtime=FAST_RUNTIME + "  max_restarts: 1\n")
    text = text.replace("name: test\n", f"name: test\nsandbox: {{engine_url: '{engine_url}'}}\n", 1)
    config = parse_fleet(text, "fleet.yaml")
    async with running_fleet(config) as fleet:
        info = await soon(lambda: next((p for p in fleet_plugins(fleet) if p["status"] == "stopped"), None))
        assert "its container did not start" in info["error"] and "unreachable" in info["error"], info
        assert info["pid"] is None
        runners = [
            pid
            for pid in _children(os.getpid())
            if b"callboard.plugin.runner" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert runners == []  # no fallback to a process on this machine


def test_the_boot_check_refuses_another_python_with_a_clear_message() -> None:
    other = (sys.version_info[0], sys.version_info[1] + 1)
    boot = _BOOT.format(major=other[0], minor=other[1], code=EXIT_PYTHON_MISMATCH)
    done = subprocess.run([sys.executable, "-S", "-c", boot], capture_output=True, text=True, check=False)
    assert done.returncode == EXIT_PYTHON_MISMATCH
    found = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"python3 is {found}; the runner needs the engine's {other[0]}.{other[1]}" in done.stderr


def test_the_mounted_rooms_are_all_the_runner_imports() -> None:
    """A runner importing a room that is not mounted would fail only in a container."""
    code = (
        "import json, sys, callboard.plugin.runner; "
        "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules if m.startswith('callboard.')})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(json.loads(done.stdout)) == set(RUNNER_ROOMS)
    mounts = [Path(m) for m in code_mounts([])]
    package = Path(sys.modules["callboard"].__file__ or "").parent
    for room in RUNNER_ROOMS:
        assert any((package / room).resolve().is_relative_to(m) for m in mounts), room


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(x) for x in (task / "children").read_text().split())
    return found
