"""Hard workspace quotas and tenant CPU budgets on real containers (Podman).

A persistent workspace is a loop-mounted ext4 image: ``dd`` past the quota gets ENOSPC and the
sandbox carries on; the files survive an engine restart (a new actor system re-attaches the
same image); ``callboard sandbox prune`` deletes volume and image; no loop device or mount is
left behind. A tenant whose command burns more CPU than its budget is refused afterwards."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from callboard.actors.sandbox_admin import sandbox_report
from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs, ReadArgs, SandboxQuotaExceeded, WriteArgs
from callboard.sandbox import cli
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.workspaces import list_volumes, usage
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, eventually, spawn_manager

pytestmark = pytest.mark.timeout(240)

QUOTA = 4 << 20


def loops(directory: Path) -> int:
    """Loop devices backed by an image in ``directory``."""
    count = 0
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            count += backing.read_text().strip().startswith(str(directory))
    return count


def mounts(fleet: str) -> int:
    return Path("/proc/mounts").read_text().count(f"callboard-{fleet}-ws-")


async def test_a_loop_workspace_refuses_writes_past_its_quota_and_survives_a_restart(
    engine: Engine, fleet: str, settings: Callable[..., SandboxSettings], tmp_path: Path
) -> None:
    if not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices here: workspaces fall back to a measured quota")
    images = tmp_path / "workspaces"
    config = settings(
        profiles={"default": {"persistent_workspace": True, "workspace_size": QUOTA}},
        workspace_dir=str(images),
    )
    assert loops(images) == 0 and mounts(fleet) == 0
    first = ActorSystem("quota-1")
    try:
        manager = spawn_manager(first, fleet, config)
        alice = chat_tools(manager, "alice")
        await alice.write(WriteArgs(path="notes.txt", content="keep me"))
        report = await sandbox_report(manager)
        assert report["workspaces"]["kind"] == "loop", report["workspaces"]
        assert loops(images) == 1 and mounts(fleet) == 1

        filled = await alice.exec(ExecArgs(command="dd if=/dev/zero of=big bs=64k count=160"))
        assert filled.exit_code != 0 and "No space left on device" in filled.stderr
        (volume,) = list_volumes(engine.client, fleet)
        held = usage(volume)
        assert held is not None and QUOTA - (128 << 10) <= held <= QUOTA + (128 << 10), held

        done = await alice.exec(ExecArgs(command="rm big && df -B1 --output=avail /workspace | tail -1"))
        assert done.ok and int(done.stdout) >= QUOTA - (64 << 10)  # the sandbox carries on, space back
        assert (await alice.read(ReadArgs(path="notes.txt"))).content == "keep me"
    finally:
        await first.shutdown(timeout=30)
    await eventually(lambda: not engine.containers(fleet), what="containers removed at shutdown")
    await eventually(lambda: loops(images) == 0 and mounts(fleet) == 0, what="loop device and mount gone")
    (volume,) = list_volumes(engine.client, fleet)
    held = usage(volume)  # unmounted: read from the image's superblock
    assert held is not None and held < 64 << 10, held

    second = ActorSystem("quota-2")  # the engine restarted: the same image is attached again
    try:
        manager = spawn_manager(second, fleet, config)
        alice = chat_tools(manager, "alice")
        assert (await alice.read(ReadArgs(path="notes.txt"))).content == "keep me"
    finally:
        await second.shutdown(timeout=30)
    await eventually(lambda: loops(images) == 0 and mounts(fleet) == 0, what="loop device and mount gone")

    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["prune", "--engine-url", engine.url, "--fleet", fleet]) == 0
    assert list_volumes(engine.client, fleet) == [] and list(images.glob("*.img")) == []


async def test_a_tenant_that_burned_its_cpu_budget_is_refused(
    engine: Engine, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    actors = ActorSystem("cpu-budget")
    try:
        manager = spawn_manager(actors, fleet, settings(tenant_max_cpu_seconds={"acme": 1}))
        acme = chat_tools(manager, "1", bot="acme-bot", tenant="acme")
        burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass"
        assert (await acme.exec(ExecArgs(argv=["python3", "-c", burn]))).ok

        async def refused() -> bool:
            return bool((await sandbox_report(manager))["tenants"]["acme"]["refused"])

        await eventually(refused, what="acme over its CPU budget")
        with pytest.raises(SandboxQuotaExceeded, match="tenant 'acme' is over its CPU budget"):
            await acme.exec(ExecArgs(argv=["true"]))
        tenant = (await sandbox_report(manager))["tenants"]["acme"]
        assert 1.5 <= tenant["cpu_seconds"] < 10, tenant
        assert (await chat_tools(manager, "2", tenant="other").exec(ExecArgs(argv=["true"]))).ok
    finally:
        await actors.shutdown(timeout=30)
