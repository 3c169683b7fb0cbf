"""Plugin runners in real Podman containers (``isolation: container``): a plugin
answers through the engine, cannot reach the network or write outside /workspace
and /tmp, is restarted after ``os._exit``, and its container is removed on stop
and after an engine ``kill -9``. Also prints the added latency per event against a
host-process runner (never asserted)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from callboard.actors.config_file import parse_fleet
from callboard.actors.plugin_container import LABEL_FLEET, LABEL_OWNER, LABEL_RUNNER
from callboard.bench.harness import free_port, wait_ready
from tests.plugins.support import (
    FAST_RUNTIME,
    FIXTURES,
    ROOT,
    fleet_plugins,
    fleet_text,
    groups,
    say,
    soon,
    texts,
)
from tests.sandbox.conftest import FLEET_PREFIX, Engine, engine  # noqa: F401  (the Podman service, the image)
from tests.support import chat_client, running_fleet

pytestmark = pytest.mark.timeout(300)  # container starts on a shared 2-core machine
_names = itertools.count(1)

PROBER_RULE = """
- event_type: message.received
  handler_type: plugin
  handler_config: {plugin_filter: [prober]}
  when: {chat_id: [c]}
"""
RULES = (
    PROBER_RULE
    + """
- event_type: message.received
  handler_type: plugin
  handler_config: {plugin_filter: [echoer]}
  when: {chat_id: [h]}
"""
)


def container_fleet(
    tmp_path: Path, podman: Engine, plugins: str, rules: str = RULES, sandbox: str = "", **options: Any
) -> tuple[str, str]:
    """(fleet name, fleet file text) with the test engine as the fleet's sandbox."""
    name = f"{FLEET_PREFIX}-plug{next(_names)}"
    block = f"sandbox: {{engine_url: '{podman.url}', image: '{podman.image}'{sandbox}}}\n"
    text = fleet_text(tmp_path, plugins, rules, **options)
    return name, text.replace("name: test\n", f"name: {name}\n{block}", 1)


def plugin_containers(podman: Engine, fleet: str) -> list[dict[str, Any]]:
    found = podman.client.api.containers(all=True, filters={"label": [f"{LABEL_FLEET}={fleet}"]})
    return list(found)


def info(fleet: object, name: str) -> dict[str, Any]:
    return next(p for p in fleet_plugins(fleet) if p["name"] == name)  # type: ignore[arg-type]


async def round_trips(client: Any, chat: str, prefix: str, count: int) -> list[float]:
    """Seconds from sending to seeing the answer, one message at a time."""
    seconds = []
    for i in range(count):
        before = len(texts(client, chat))
        started = time.perf_counter()
        await say(client, chat, f"t{i}")
        await soon(lambda before=before: len(texts(client, chat)) > before)
        seconds.append(time.perf_counter() - started)
        assert texts(client, chat)[-1] == f"{prefix}: t{i}"
    return seconds


async def test_a_container_runner_answers_is_contained_restarts_and_is_removed(
    tmp_path: Path,
    engine: Engine,  # noqa: F811
) -> None:
    plugins = (
        f"- path: {FIXTURES / 'prober'}\n  isolation: container\n"
        f"- path: {FIXTURES / 'echoer'}\n"  # a host-process runner, side by side
    )
    name, text = container_fleet(tmp_path, engine, plugins)
    async with running_fleet(parse_fleet(text, "test.yaml")) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "c", "h")
        await say(client, "c", "hi")
        await soon(lambda: texts(client, "c") == ["prober: hi"])
        (first,) = plugin_containers(engine, name)
        assert first["Labels"][LABEL_RUNNER] == "prober" and LABEL_OWNER in first["Labels"]
        assert first["State"] == "running"
        inspected = engine.client.api.inspect_container(first["Id"])
        host = inspected["HostConfig"]
        assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none"
        assert "no-new-privileges" in " ".join(host["SecurityOpt"])
        assert host["Memory"] == 512 << 20 and host["PidsLimit"] == 128
        assert not [e for e in inspected["Config"]["Env"] if "TOKEN=" in e]  # only the file's path
        assert info(fleet, "prober")["pid"] == inspected["State"]["Pid"]

        port = int(fleet.base_url.rstrip("/").rsplit(":", 1)[1])  # the engine's own HTTP port
        await say(client, "c", f"probe {port} {tmp_path / 'journal.sqlite3'}")
        await soon(lambda: len(texts(client, "c")) == 2)
        report = json.loads(texts(client, "c")[1].removeprefix("prober: "))
        assert report["uid"] == 1000, report  # the sandbox profile's user, not root
        assert report["outside"] != "connected" and report["host_loopback"] != "connected", report
        assert report["own_folder"] in ("OSError", "PermissionError"), report  # read-only mounts
        assert report["root"] in ("OSError", "PermissionError"), report
        assert report["workspace"] == "written" and report["tmp"] == "written", report
        assert report["token_env"] == [] and report["token_file"] is False, report
        assert report["journal"] == "FileNotFoundError", report  # the engine's files are not there
        assert not (FIXTURES / "prober" / "written.txt").exists()

        await say(client, "c", "crash")
        await say(client, "c", "after")
        await soon(lambda: texts(client, "c")[-1:] == ["prober: after"], timeout=120)
        assert info(fleet, "prober")["restarts"] == 1
        (second,) = plugin_containers(engine, name)  # the crashed one was removed
        assert second["Id"] != first["Id"]

        # added latency per event: the same plugin shape in a container and in a host process
        container = await round_trips(client, "c", "prober", 20)
        process = await round_trips(client, "h", "echoer", 20)
        print(
            f"\nround trip per message, median of 20: container runner "
            f"{statistics.median(container) * 1000:.1f} ms, host-process runner "
            f"{statistics.median(process) * 1000:.1f} ms, ratio "
            f"{statistics.median(container) / statistics.median(process):.2f}"
        )
    assert plugin_containers(engine, name) == []  # a stop removes the container


async def test_engine_kill_9_leaves_no_running_container_and_a_restart_sweeps_it(
    tmp_path: Path,
    engine: Engine,  # noqa: F811
) -> None:
    port = free_port()
    name, text = container_fleet(
        tmp_path,
        engine,
        f"- path: {FIXTURES / 'prober'}\n  isolation: container\n",
        PROBER_RULE,
        admin=f"{{host: 127.0.0.1, port: {port}}}",
    )
    config = tmp_path / "fleet.yaml"
    config.write_text(text)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "callboard.cli", "--log-level", "WARNING", "run", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def running() -> list[dict[str, Any]]:
        return [c for c in plugin_containers(engine, name) if c["State"] == "running"]

    engine_process = start()
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", engine_process, timeout=60)
        (old,) = await soon(running)
    finally:
        engine_process.send_signal(signal.SIGKILL)
        engine_process.wait()
    # its socket closed: the runner exits and its container stops by itself
    await soon(lambda: not running(), timeout=30)
    engine_process = start()
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", engine_process, timeout=60)
        (new,) = await soon(running)
        assert new["Id"] != old["Id"]
        await soon(lambda: [c["Id"] for c in plugin_containers(engine, name)] == [new["Id"]])
    finally:
        engine_process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(engine_process.wait, 60)
    assert plugin_containers(engine, name) == []
    assert engine_process.stderr is not None
    log = engine_process.stderr.read().decode()
    # the restarted engine's sweep removed it (before its runner's start could replace it by name)
    assert f"removed plugin containers a dead engine left: callboard-plugin-{name}-prober" in log, log


async def test_stopping_while_the_container_starts_leaves_none_behind(
    tmp_path: Path,
    engine: Engine,  # noqa: F811
) -> None:
    name, text = container_fleet(
        tmp_path, engine, f"- path: {FIXTURES / 'prober'}\n  isolation: container\n", PROBER_RULE
    )
    async with running_fleet(parse_fleet(text, "test.yaml")):
        pass  # stop at once: the container is being created or its runner is on its handshake
    await asyncio.sleep(1.0)  # a creation that was under way when the stop came has finished by now
    assert plugin_containers(engine, name) == []


async def test_a_stuck_container_runner_is_stopped_by_sigterm_and_removed(
    tmp_path: Path,
    engine: Engine,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    rule = PROBER_RULE.replace("prober", "hanger")
    runtime = (  # no restart; a short event deadline, and stages that fit the engine's stop budget
        FAST_RUNTIME.replace("health_interval: 500ms", "health_interval: 60s")
        .replace("event_timeout: 5s", "event_timeout: 1s")
        .replace("stop_timeout: 2s", "stop_timeout: 1s")
    )
    name, text = container_fleet(
        tmp_path, engine, f"- path: {FIXTURES / 'hanger'}\n  isolation: container\n", rule, runtime=runtime
    )
    async with running_fleet(parse_fleet(text, "test.yaml")) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "c")
        await say(client, "c", "hi")
        await soon(lambda: texts(client, "c") == ["hanger: hi"])
        ref = fleet.system.lookup("/fleet/plugins/hanger")
        assert ref is not None
        proc = ref._cell.actor.proc  # type: ignore[attr-defined]
        await say(client, "c", "hang")  # blocks the runner's event loop: drain and shutdown go unanswered
        await soon(lambda: any("did not answer in time" in r.getMessage() for r in caplog.records))
    assert proc.returncode == -signal.SIGTERM  # the SIGTERM stage ended it (PID 1 handles TERM)
    assert any("did not stop; sending SIGTERM" in r.getMessage() for r in caplog.records)
    assert plugin_containers(engine, name) == []


async def test_a_new_folder_restarts_the_container_runner_with_it_mounted(
    tmp_path: Path,
    engine: Engine,  # noqa: F811
) -> None:
    copy = tmp_path / "prober_copy"
    shutil.copytree(FIXTURES / "prober", copy)
    code = (copy / "plugin.py").read_text()
    (copy / "plugin.py").write_text(code.replace('f"prober: {ctx.text}"', 'f"copy: {ctx.text}"'))
    plugin = "- path: {}\n  isolation: container\n"
    name, text = container_fleet(tmp_path, engine, plugin.format(FIXTURES / "prober"), PROBER_RULE)
    async with running_fleet(parse_fleet(text, "test.yaml")) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "c")
        await say(client, "c", "one")
        await soon(lambda: texts(client, "c") == ["prober: one"])
        before = info(fleet, "prober")["pid"]
        await fleet.reload(parse_fleet(text.replace(str(FIXTURES / "prober"), str(copy)), "test.yaml"))
        await soon(lambda: info(fleet, "prober")["pid"] not in (None, before))  # a new container
        await say(client, "c", "two")
        await soon(lambda: texts(client, "c") == ["prober: one", "copy: two"])
    assert plugin_containers(engine, name) == []


async def test_a_leak_past_the_container_memory_limit_is_reported_and_restarted(
    tmp_path: Path,
    engine: Engine,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugin = f"- path: {FIXTURES / 'leaker'}\n  isolation: container\n  sandbox_profile: small\n"
    runtime = FAST_RUNTIME.replace("health_timeout: 1s", "health_timeout: 30s")  # the limit ends it
    name, text = container_fleet(
        tmp_path,
        engine,
        plugin,
        PROBER_RULE.replace("prober", "leaker"),
        sandbox=", profiles: {small: {memory: 96m}}",
        runtime=runtime,
    )
    async with running_fleet(parse_fleet(text, "test.yaml")) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "c")
        await say(client, "c", "leak")
        await say(client, "c", "after")
        await soon(lambda: texts(client, "c") == ["leaker: after"], timeout=120)
        assert info(fleet, "leaker")["restarts"] == 1
    reasons = [r.getMessage() for r in caplog.records if "exited" in r.getMessage()]
    assert any("out of memory" in m and "its container's" in m for m in reasons), reasons
    assert plugin_containers(engine, name) == []
