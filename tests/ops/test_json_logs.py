"""`engine.logging.format: json`: every line a JSON object; a failed run's lines carry the
actor path, bot, session, run and event ids; secrets stay masked."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from callboard.bench.harness import free_port
from tests.support import chat_client

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]
SECRET = "hook-secret-that-must-not-leak"

FLEET = """
name: logs
engine:
  journal: {journal}
  admin: {{host: 127.0.0.1, port: {port}}}
  logging: {{format: json}}
bots:
  - id: demo
    adapter: {{type: web}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: webhook
        handler_config:
          url: http://127.0.0.1:{dead}/hook?key={secret}
          secret: {secret}
          timeout: 1s
          retries: {{count: 0}}
"""


async def test_json_lines_carry_the_run_and_mask_secrets(tmp_path: Path) -> None:
    port = free_port()
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(journal=tmp_path / "j.sqlite3", port=port, dead=free_port(), secret=SECRET))
    engine = subprocess.Popen(
        [sys.executable, "-m", "callboard.cli", "run", str(fleet)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                async with chat_client(base) as client:
                    await client.subscribe("c1")
                    await client.say("hello")
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(3)  # the delivery fails within its 1 s timeout
    finally:
        engine.terminate()
        _, errors = engine.communicate(timeout=30)
    text = errors.decode()
    assert SECRET not in text
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    failed = [line for line in lines if line["level"] == "ERROR" and line.get("run") is not None]
    assert failed, text[-2000:]
    entry = failed[0]
    assert entry["bot"] == "demo"
    assert entry["session"].startswith("private:")
    assert entry["actor"].startswith("/fleet/demo/sessions/")
    assert isinstance(entry["events"], list) and len(entry["events"][0]) == 32
