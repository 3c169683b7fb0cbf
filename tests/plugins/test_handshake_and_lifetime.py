"""The runner handshake refuses a wrong token, and runners never outlive the engine."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callboard.bench.harness import free_port, wait_ready
from callboard.engine.plugin_protocol import (
    ENV_PARENT,
    ENV_RUNNER,
    ENV_SOCKET,
    ENV_TOKEN,
    Action,
    Code,
    Link,
    RemoteError,
)
from callboard.handlers.plugin.config import PluginRuntimeConfig, PluginSpec
from callboard.handlers.plugin.connection import HandshakeRefused, RunnerConnection
from callboard.handlers.plugin.hub import PluginHub
from tests.plugins.support import FIXTURES, ROOT, fleet_plugins, plugin_fleet, soon
from tests.support import running_fleet

pytestmark = pytest.mark.timeout(60)


def _connection(token: str) -> tuple[PluginHub, RunnerConnection]:
    spec = PluginSpec(path=str(FIXTURES / "echoer"))
    hub = PluginHub(PluginRuntimeConfig())
    hub.configure([spec])
    return hub, RunnerConnection(hub, "echoer", token, [spec], 20)


async def test_a_wrong_token_is_refused_and_uses_the_token_up() -> None:
    _, conn = _connection("right-token")
    with pytest.raises(RemoteError) as refused:
        await conn.on_request(Action.HELLO, {"token": "wrong", "protocol": 1, "pid": 1})
    assert refused.value.code == Code.UNAUTHORIZED
    with pytest.raises(HandshakeRefused):
        conn.hello.result()
    with pytest.raises(RemoteError):  # one attempt only: the right token is no good now
        await conn.on_request(Action.HELLO, {"token": "right-token", "protocol": 1, "pid": 1})
    with pytest.raises(RemoteError) as before:  # nothing else is served without a handshake
        await conn.on_request(Action.CALL, {"ctx": 1, "op": "send"})
    assert before.value.code == Code.UNAUTHORIZED


async def test_a_runner_with_a_wrong_token_is_turned_away(tmp_path: Path) -> None:
    """The real runner process, started with the wrong token, is refused and exits."""
    hub, conn = _connection("right-token")
    links: list[Link] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(reader, writer, conn.on_request)
        links.append(link)
        await link.run()

    path = str(tmp_path / "runner.sock")
    server = await asyncio.start_unix_server(accept, path)
    env = {
        **os.environ,
        ENV_SOCKET: path,
        ENV_TOKEN: "wrong-token",
        ENV_RUNNER: "echoer",
        ENV_PARENT: str(os.getpid()),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callboard.plugin.runner", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    server.close()
    assert proc.returncode == 2
    assert b"refused the handshake" in err
    assert conn.hello.done() and isinstance(conn.hello.exception(), HandshakeRefused)
    assert not conn.ready.done() and hub.runners["echoer"].link is None


FLEET = """
name: lifetime
engine:
  journal: {journal}
  admin: {{port: {port}}}
plugins:
  - path: {echoer}
  - path: {crasher}
bots:
  - id: demo
    adapter: {{type: web}}
    default: plugins
"""


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(x) for x in text)
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_kill_9_of_the_engine_leaves_no_runner_behind(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "fleet.yaml"
    config.write_text(
        FLEET.format(
            journal=tmp_path / "j.sqlite3",
            port=port,
            echoer=FIXTURES / "echoer",
            crasher=FIXTURES / "crasher",
        )
    )
    engine = subprocess.Popen(
        [sys.executable, "-m", "callboard.cli", "--log-level", "WARNING", "run", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", engine, timeout=30)
        deadline = time.monotonic() + 30
        runners: set[int] = set()
        while len(runners) < 2 and time.monotonic() < deadline:
            runners = {
                pid
                for pid in _children(engine.pid)
                if b"callboard.plugin.runner" in Path(f"/proc/{pid}/cmdline").read_bytes()
            }
            await asyncio.sleep(0.1)
        assert len(runners) == 2, "two runner processes, one per plugin"
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in runners) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not [pid for pid in runners if _alive(pid)]


async def test_a_graceful_stop_unloads_plugins_and_flushes_their_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    plugins = f"- path: {FIXTURES / 'echoer'}"
    config = plugin_fleet(
        tmp_path, plugins, "- {event_type: message.received, handler_type: plugin, handler_config: {}}"
    )
    async with running_fleet(config) as fleet:
        pid = await soon(lambda: fleet_plugins(fleet)[0]["pid"])
        assert _alive(pid)
    # stopped in stages: the runner unloaded its plugin, its last log line arrived, and it exited
    lines = [r.getMessage() for r in caplog.records if r.name == "callboard.plugin.echoer"]
    assert "echoer unloaded cleanly" in lines
    assert not any("did not stop" in r.getMessage() for r in caplog.records)
    assert not _alive(pid)


async def test_stopping_while_runners_start_leaves_nothing_behind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = f"- path: {FIXTURES / 'echoer'}\n- path: {FIXTURES / 'crasher'}"
    rules = "- {event_type: message.received, handler_type: plugin, handler_config: {}}"
    async with running_fleet(plugin_fleet(tmp_path, plugins, rules)):
        pass  # stop at once: the runners are still on their handshake
    await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records
    ]
    leftovers = [
        pid
        for pid in _children(os.getpid())
        if b"callboard.plugin.runner" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert not [pid for pid in leftovers if _alive(pid)]
