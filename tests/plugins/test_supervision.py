"""Runner supervision: plugins that crash, hang, leak or flood are each handled,
the other plugins keep answering, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.plugins.support import FIXTURES, fleet_plugins, groups, plugin_fleet, say, soon, texts
from tests.support import ChatClient, chat_client, running_fleet

pytestmark = pytest.mark.timeout(180)  # the machine is shared: generous deadlines, no timing asserts


def routed(*pairs: tuple[str, str]) -> str:
    """One plugin rule per (chat id, plugin): chat X is served by plugin Y only."""
    return "".join(
        f"""
- event_type: message.received
  handler_type: plugin
  handler_config: {{plugin_filter: [{plugin}]}}
  when: {{chat_id: [{chat}]}}
"""
        for chat, plugin in pairs
    )


def fixtures(*names: str, extra: str = "") -> str:
    return "".join(f"- path: {FIXTURES / name}\n{extra}" for name in names)


replies = texts


async def echo_burst(client: ChatClient, count: int, tag: str) -> None:
    """``count`` messages to the echoer's chat, all answered."""
    for i in range(count):
        await say(client, "b", f"{tag}{i}")
    await soon(lambda: sum(t.startswith(f"echoer: {tag}") for t in replies(client, "b")) == count, timeout=60)


def plugin(fleet: object, name: str) -> dict[str, object]:
    return next(p for p in fleet_plugins(fleet) if p["name"] == name)  # type: ignore[arg-type]


async def test_os_exit_is_a_failed_run_and_the_runner_comes_back(tmp_path: Path) -> None:
    config = plugin_fleet(tmp_path, fixtures("crasher", "echoer"), routed(("a", "crasher"), ("b", "echoer")))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a", "b")
        await say(client, "a", "hi")
        await soon(lambda: replies(client, "a") == ["crasher: hi"])
        first_pid = plugin(fleet, "crasher")["pid"]
        await say(client, "a", "crash")
        for text in ("after1", "after2"):  # acknowledged while the runner is down or restarting
            await say(client, "a", text)
        await echo_burst(client, 20, "x")  # the other plugin is not affected
        await soon(lambda: replies(client, "a") == ["crasher: hi", "crasher: after1", "crasher: after2"])
        assert len([a for a in client.of("ack") if a["message_id"]]) == 24  # the messages, not the joins
        info = plugin(fleet, "crasher")
        assert info["restarts"] == 1 and info["pid"] != first_pid
        assert info["counters"]["failures"] == 1  # type: ignore[index]
        assert fleet.stats.runtimes["demo"].counters.failed_runs == 1
        assert plugin(fleet, "echoer")["restarts"] == 0


async def test_an_idempotent_listener_is_retried_once_after_its_runner_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRIER_MARKER", str(tmp_path))
    config = plugin_fleet(tmp_path, fixtures("retrier"), routed(("a", "retrier")))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a")
        await say(client, "a", "crash once")
        await soon(lambda: replies(client, "a") == ["retrier: crash once"])
        info = plugin(fleet, "retrier")
        assert info["restarts"] == 1 and info["counters"]["retries"] == 1  # type: ignore[index]
        assert fleet.stats.runtimes["demo"].counters.failed_runs == 0


async def test_a_hung_runner_fails_its_health_check_and_is_replaced(tmp_path: Path) -> None:
    config = plugin_fleet(tmp_path, fixtures("hanger", "echoer"), routed(("a", "hanger"), ("b", "echoer")))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a", "b")
        first_pid = plugin(fleet, "hanger")["pid"]
        await say(client, "a", "hang")
        await say(client, "a", "ping")  # queued behind the hung run in its session
        await echo_burst(client, 10, "y")
        await soon(lambda: plugin(fleet, "hanger")["restarts"] == 1, timeout=60)
        await soon(lambda: replies(client, "a") == ["hanger: ping"], timeout=60)
        assert plugin(fleet, "hanger")["pid"] != first_pid
        assert fleet.stats.runtimes["demo"].counters.failed_runs == 1


async def test_a_leak_past_the_memory_limit_restarts_only_that_runner(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = """
    plugin_runtime:
      health_timeout: 30s   # on a busy machine the leak may take a while: the limit, not the check, ends it
      backoff_min: 100ms
      backoff_max: 500ms
      watch: false
    """
    config = plugin_fleet(
        tmp_path,
        fixtures("leaker", extra="  memory_limit: 400MiB\n") + fixtures("echoer"),
        routed(("a", "leaker"), ("b", "echoer")),
        runtime=runtime,
    )
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a", "b")
        await say(client, "a", "leak")
        await say(client, "a", "after")
        await echo_burst(client, 10, "z")
        await soon(lambda: replies(client, "a") == ["leaker: after"], timeout=60)
        assert plugin(fleet, "leaker")["restarts"] == 1
        assert plugin(fleet, "echoer")["restarts"] == 0
    assert any("out of memory" in r.getMessage() for r in caplog.records)


async def test_a_log_flood_is_bounded_and_the_others_keep_answering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runtime = """
    plugin_runtime:
      health_interval: 500ms
      log_queue: 500
      log_rate: 1000
      watch: false
    """
    config = plugin_fleet(
        tmp_path, fixtures("flooder", "echoer"), routed(("a", "flooder"), ("b", "echoer")), runtime=runtime
    )
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a", "b")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await say(client, "a", "flood")
        await echo_burst(client, 10, "w")
        await soon(lambda: replies(client, "a") == ["flooder: flood"], timeout=60)
        elapsed = loop.time() - started
        await asyncio.sleep(0.5)
        assert plugin(fleet, "flooder")["restarts"] == 0
    lines = [r for r in caplog.records if r.name == "callboard.plugin.flooder"]
    assert 0 < len(lines) <= 1000 * (elapsed + 1.5)  # 50,000 logged; the host wrote at most its rate
    assert any("log records dropped" in r.getMessage() for r in caplog.records)


async def test_an_undeclared_api_call_is_refused_and_counted(tmp_path: Path) -> None:
    config = plugin_fleet(tmp_path, fixtures("sneaky"), routed(("a", "sneaky")))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a")
        await say(client, "a", "go")
        await soon(lambda: replies(client, "a"))
        [text] = replies(client, "a")
        assert text.startswith("sneaky refused:") and "'delete_message' is not declared" in text
        assert "code 403" in text
        assert plugin(fleet, "sneaky")["counters"]["refused"] == 1  # type: ignore[index]
        assert not [f for f in client.of("deleted")]
