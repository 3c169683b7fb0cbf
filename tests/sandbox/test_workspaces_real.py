"""Persistent workspaces on real containers: files survive eviction and an engine restart (a
new manager and actor system, same fleet), other scopes do not see them, the quota refuses
writes while the workspace is over it (the measured quota: no ``workspace_dir`` for images),
and ``callboard sandbox prune`` removes them (but not one a container still uses)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import pytest

from callboard.actors.sandbox_admin import sandbox_report
from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs, ReadArgs, SandboxFileError, WriteArgs
from callboard.sandbox import cli
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.workspaces import list_volumes, volume_name
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, eventually, spawn_manager

pytestmark = pytest.mark.timeout(180)


def persistent(settings: Callable[..., SandboxSettings], **overrides: object) -> SandboxSettings:
    profile = {"persistent_workspace": True, "workspace_size": "1m"}
    return settings(profiles={"default": profile}, **overrides)


async def test_files_survive_eviction_and_restart_and_prune_removes_them(
    engine: Engine, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    first = ActorSystem("workspace-1")
    try:
        manager = spawn_manager(first, fleet, persistent(settings, max_sessions=1))
        alice = chat_tools(manager, "alice")
        await alice.write(WriteArgs(path="notes/plan.md", content="step 1"))
        (container,) = engine.containers(fleet)
        bob = chat_tools(manager, "bob")  # max_sessions 1: alice's container is evicted
        assert not (await bob.exec(ExecArgs(command="ls notes 2>&1"))).ok  # bob has his own
        await eventually(
            lambda: container.id not in [c.id for c in engine.containers(fleet)], what="eviction"
        )
        assert (await alice.read(ReadArgs(path="notes/plan.md"))).content == "step 1"  # a new container
        quota = (await sandbox_report(manager))["workspaces"]
        assert quota["kind"] == "measured" and "no sandbox.workspace_dir" in quota["reason"]
    finally:
        await first.shutdown(timeout=30)
    await eventually(lambda: not engine.containers(fleet), what="containers removed at shutdown")

    second = ActorSystem("workspace-2")  # the engine restarted
    try:
        manager = spawn_manager(second, fleet, persistent(settings))
        alice = chat_tools(manager, "alice")
        assert (await alice.read(ReadArgs(path="notes/plan.md"))).content == "step 1"

        # The quota (1 MiB; this machine's volumes cannot enforce sizes, so it is measured).
        filled = await alice.exec(ExecArgs(command="head -c 1200000 /dev/zero > big.bin"))
        assert filled.ok
        with pytest.raises(SandboxFileError, match="over its quota"):
            await alice.write(WriteArgs(path="more.txt", content="x"))
        assert (await alice.exec(ExecArgs(argv=["rm", "big.bin"]))).ok  # commands still run
        await alice.write(WriteArgs(path="more.txt", content="x"))

        names = {v.name for v in list_volumes(engine.client, fleet)}
        assert volume_name(fleet, alice.key) in names and len(names) == 2  # type: ignore[attr-defined]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert cli.main(["prune", "--engine-url", engine.url, "--fleet", fleet]) == 0
        assert "removed 1 workspace(s)" in printed.getvalue() and "kept 1 in use" in printed.getvalue()
    finally:
        await second.shutdown(timeout=30)
    await eventually(lambda: not engine.containers(fleet), what="containers removed at shutdown")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["prune", "--engine-url", engine.url, "--fleet", fleet, "--older-than", "1h"]) == 0
    assert len(list_volumes(engine.client, fleet)) == 1  # younger than an hour: kept
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["prune", "--engine-url", engine.url, "--fleet", fleet]) == 0
    assert list_volumes(engine.client, fleet) == []
