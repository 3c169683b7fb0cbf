"""Every hardening item, verified from inside a real container."""

from __future__ import annotations

import json

import pytest

from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs, SandboxTools
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, spawn_manager

pytestmark = pytest.mark.timeout(180)

PROBE = r"""
import json, os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
def first(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
    return None
print(json.dumps({
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
    "caps": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "no_new_privs": status["NoNewPrivs"].strip(),
    "interfaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]),
    "routes": open("/proc/net/route").read().splitlines()[1:],
    "memory": first("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
    "pids": first("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
    "cpu": first("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max"),
}))
"""

FORK_COUNT = r"""
import os, time
children = []
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print(len(children))
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""

FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


def make_settings(engine: Engine, **profile: object) -> SandboxSettings:
    return SandboxSettings.model_validate(
        {"engine_url": engine.url, "image": engine.image, "profiles": {"default": profile}}
    )


async def probe(tools: SandboxTools) -> dict[str, object]:
    result = await tools.exec(ExecArgs(argv=["python3", "-c", PROBE]))
    assert result.exit_code == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout)
    return found


async def test_identity_capabilities_network_and_limits(
    engine: Engine, system: ActorSystem, fleet: str
) -> None:
    settings = make_settings(engine, memory="96m", pids=48, cpus=0.5)
    tools = chat_tools(spawn_manager(system, fleet, settings))
    inside = await probe(tools)
    assert inside["uid"] != 0 and inside["euid"] != 0 and inside["gid"] != 0
    assert inside["caps"] == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), "0000000000000000"
    )
    assert inside["no_new_privs"] == "1"
    assert inside["interfaces"] == ["lo"]
    assert inside["routes"] == []
    assert inside["memory"] == str(96 << 20)
    assert inside["pids"] == "48"
    assert inside["cpu"] in ("50000", "50000 100000")
    (container,) = engine.containers(fleet)
    assert container.labels["callboard.fleet"] == fleet
    assert container.labels["callboard.session"].startswith("bot-private-1-")


async def test_the_engine_api_is_out_of_reach_from_inside(
    engine: Engine, system: ActorSystem, fleet: str
) -> None:
    tools = chat_tools(spawn_manager(system, fleet, make_settings(engine)))
    sockets = ["/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock"]
    if engine.url.startswith("unix://"):
        sockets.append(engine.url[len("unix://") :])
    code = f"import os; print([p for p in {sockets!r} if os.path.exists(p)])"
    seen = await tools.exec(ExecArgs(argv=["python3", "-c", code]))
    assert seen.stdout == "[]\n"  # no engine socket inside, and (above) no network to reach a TCP one


async def test_read_only_root_with_writable_workspace_and_tmp(
    engine: Engine, system: ActorSystem, fleet: str
) -> None:
    tools = chat_tools(spawn_manager(system, fleet, make_settings(engine)))
    for path in ("/usr/evil", "/etc/evil", "/evil", "/home/evil"):
        result = await tools.exec(ExecArgs(argv=["touch", path]))
        assert result.exit_code != 0
        assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr
    assert (await tools.exec(ExecArgs(command="touch /workspace/ok /tmp/ok && ls /workspace/ok /tmp/ok"))).ok
    escalate = await tools.exec(ExecArgs(command="su -c id root </dev/null"))
    assert escalate.exit_code != 0


async def test_network_is_opt_in_per_profile(engine: Engine, system: ActorSystem, fleet: str) -> None:
    tools = chat_tools(spawn_manager(system, fleet, make_settings(engine, network=True)))
    inside = await probe(tools)
    assert "lo" in inside["interfaces"] and len(inside["interfaces"]) > 1  # type: ignore[arg-type]
    fleet_off = spawn_manager(system, f"{fleet}-off", make_settings(engine, network=True), name="off")
    off = chat_tools(fleet_off, network=False)
    assert (await probe(off))["interfaces"] == ["lo"]  # a bot policy can force it off


IDLE = r"""
import json, os
def uid(pid):
    return open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[0]
print(json.dumps(sorted([int(p), uid(p)] for p in os.listdir("/proc") if p.isdigit() and uid(p) != "1000")))
"""


async def test_untrusted_code_cannot_signal_pid_1_or_its_sleep(
    engine: Engine, system: ActorSystem, fleet: str
) -> None:
    tools = chat_tools(spawn_manager(system, fleet, make_settings(engine)))
    idle = json.loads((await tools.exec(ExecArgs(argv=["python3", "-c", IDLE]))).stdout)
    assert len(idle) == 2 and all(uid == "65534" for _, uid in idle)  # PID 1 and its sleep
    attack = await tools.exec(ExecArgs(command=f"kill -9 1; kill -9 {idle[1][0]}; kill -9 -1"))
    assert attack.exit_code is not None  # the attacker may die in its own kill -1; nothing else does
    after = json.loads((await tools.exec(ExecArgs(argv=["python3", "-c", IDLE]))).stdout)
    assert after == idle


async def test_pids_limit_holds_against_a_fork_bomb(engine: Engine, system: ActorSystem, fleet: str) -> None:
    tools = chat_tools(spawn_manager(system, fleet, make_settings(engine, pids=32, exec_timeout="3s")))
    counted = await tools.exec(ExecArgs(argv=["python3", "-c", FORK_COUNT], timeout=20))
    assert counted.exit_code == 0, counted.stderr
    assert 10 < int(counted.stdout) < 32  # forks fail at the limit, shared with PID 1 and the exec
    bomb = await tools.exec(ExecArgs(argv=["python3", "-c", FORK_BOMB]))
    assert bomb.timed_out
    after = await tools.exec(
        ExecArgs(
            argv=["python3", "-c", "import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]))"]
        )
    )
    assert after.exit_code == 0
    assert int(after.stdout) < 10  # the bomb was killed, PID 1 survived


async def test_memory_limit_kills_a_hog(engine: Engine, system: ActorSystem, fleet: str) -> None:
    tools = chat_tools(spawn_manager(system, fleet, make_settings(engine, memory="64m")))
    hog = await tools.exec(ExecArgs(argv=["python3", "-c", "x = bytearray(512 << 20); print('survived')"]))
    assert hog.exit_code == 137  # SIGKILL from the OOM killer
    assert "survived" not in hog.stdout
    assert (await tools.exec(ExecArgs(argv=["echo", "alive"]))).stdout == "alive\n"
