"""Agent memory lives in the journal: a conversation survives kill -9 of the engine."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from callboard.bench.harness import free_port, wait_ready
from callboard.testing.fake_openai import Call, FakeOpenAI, Reply
from tests.support import API_KEY, ChatClient, eventually

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]

FLEET = """
name: agent-crash
engine:
  journal: {journal}
  admin: {{port: {port}}}
bots:
  - id: demo
    adapter: {{type: web}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: agent
        handler_config:
          runner: openai
          runner_config: {{base_url: "{base_url}", api_key: "{api_key}", model: fake}}
          stream: false
"""


def _engine(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callboard.cli", "--log-level", "WARNING", "run", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_conversation_survives_kill_9(tmp_path: Path, model: FakeOpenAI) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "fleet.yaml"
    config.write_text(
        FLEET.format(journal=tmp_path / "j.sqlite3", port=port, base_url=model.base_url, api_key=API_KEY)
    )
    engine = _engine(config)
    try:
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base)
        await client.subscribe("c1")
        await client.say("remember the word tangerine")
        await client.wait_for(lambda f: f["op"] == "message")
        token = client.token  # the same user (and so the same chat) after the restart
        await client.close()
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        engine = _engine(config)
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base, token=token)
        await client.subscribe("c1", since=1)
        await client.say("which word?")
        answer = await client.wait_for(lambda f: f["op"] == "message")
        await client.close()
    finally:
        engine.kill()
        engine.wait()
    assert answer["text"] == "echo: which word?"
    history = model.requests[-1]["messages"]
    assert [m["content"] for m in history[1:3]] == [
        "remember the word tangerine",
        "echo: remember the word tangerine",
    ]


FLEET_TOOLS = (
    FLEET
    + """          tools: {{platform: [send_message]}}
"""
)


async def test_a_run_replayed_after_kill_9_resumes_from_its_recorded_tool_results(
    tmp_path: Path, model: FakeOpenAI
) -> None:
    """Round 1 calls a tool (it sends "working on it"), round 2 is held by the model
    when the engine is killed. The replayed run starts from the recorded round: the
    tool does not run again, nothing is sent twice, and the answer comes once."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "fleet.yaml"
    config.write_text(
        FLEET_TOOLS.format(
            journal=tmp_path / "j.sqlite3", port=port, base_url=model.base_url, api_key=API_KEY
        )
    )
    model.script(
        Reply(calls=[Call("send_message", {"text": "working on it"})]),
        Reply(text="never answered", hold=True),
    )
    engine = _engine(config)
    try:
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base)
        await client.subscribe("c1")
        await client.say("do the long thing")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "working on it")
        await eventually(lambda: model.in_flight == 1)  # round 2 is waiting on the model
        token = client.token
        await client.close()
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        model.script(Reply(text="done: 42"))
        requests_before = len(model.requests)
        engine = _engine(config)
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base, token=token)
        await client.subscribe("c1")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "done: 42", timeout=20)
        await asyncio.sleep(0.3)
        texts = [f["text"] for f in client.of("message")]
        await client.close()
    finally:
        model.release()
        engine.kill()
        engine.wait()
    assert texts == ["working on it", "done: 42"]
    (resumed,) = model.requests[requests_before:]  # one call after the restart, not a new round 1
    assert [m["role"] for m in resumed["messages"]] == ["system", "user", "assistant", "tool"]
    assert resumed["messages"][2]["tool_calls"][0]["function"]["name"] == "send_message"
