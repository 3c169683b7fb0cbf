"""kill -9 in the middle of a burst: after a restart every acknowledged
message gets its reply, and none gets two."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callboard.bench.harness import free_port, wait_ready
from tests.support import UNLIMITED, ChatClient

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]

FLEET = """
name: crash
engine:
  journal: {journal}
  admin: {{port: {port}}}
bots:
  - id: demo
    adapter: {{type: web, {limits}}}
    session:
      debounce: {{window: {window}, max_wait: 2s}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


def _engine(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callboard.cli", "--log-level", "WARNING", "run", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("window", ["0", "200ms"])
async def test_kill_9_mid_burst_loses_nothing_and_duplicates_nothing(tmp_path: Path, window: str) -> None:
    await kill_9_mid_burst(tmp_path, window, str(tmp_path / "j.sqlite3"))


async def kill_9_mid_burst(tmp_path: Path, window: str, journal: str | list[str]) -> None:
    """The scenario on any journal (a SQLite path, a postgresql:// URL or a list of them: shards)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "fleet.yaml"
    if isinstance(journal, list) or journal.startswith("postgresql://"):
        # secrets and the admin token stay in the test's folder
        journal = f"{{url: {json.dumps(journal)}, path: {tmp_path / 'state.sqlite3'}}}"
    config.write_text(FLEET.format(journal=journal, port=port, window=window, limits=UNLIMITED))
    chats = [f"c{i}" for i in range(20)]

    engine = _engine(config)
    try:
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base)
        sent: dict[str, str] = {}  # client_msg_id -> text
        pause = 0.3 if window != "0" else 0.02  # long enough for bursts to close between rounds
        i = 0
        loading = time.monotonic() + 90
        while len(client.of("ack")) < 600:
            assert time.monotonic() < loading, f"{len(client.of('ack'))} acks in 90 s: the engine stalled"
            for _ in range(3):  # a round: three messages to every chat
                for chat in chats:
                    text = f"m{i}"
                    sent[await client.say(text, chat_id=chat)] = text
                    i += 1
            await asyncio.sleep(pause)
        for chat in chats:  # and a last half-round still open or in flight at the kill
            text = f"m{i}"
            sent[await client.say(text, chat_id=chat)] = text
            i += 1
        await asyncio.sleep(0.01)
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        await asyncio.sleep(0.2)
        acked = {sent[f["client_msg_id"]] for f in client.of("ack")}
        before_kill = len(client.of("message"))
        token = client.token  # the same user reads its chats after the restart (the session survives it)
        await client.close()
    finally:
        if engine.poll() is None:
            engine.kill()
    assert len(acked) >= 600

    engine = _engine(config)
    try:
        await wait_ready(f"{base}/readyz", timeout=30)
        client = await ChatClient.connect(base, token=token)
        try:
            seen: collections.Counter[str] = collections.Counter()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                client.frames.clear()
                for chat in chats:
                    await client.subscribe(chat, since=0)
                seen = collections.Counter(
                    line for f in client.of("message") for line in f["text"].split("\n")
                )
                if acked <= set(seen):
                    break
                await asyncio.sleep(0.5)
        finally:
            await client.close()
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
    missing = acked - set(seen)
    duplicated = {text: n for text, n in seen.items() if n > 1}
    print(
        f"\nwindow={window}: acked {len(acked)}, replies before kill {before_kill}, "
        f"answered {len(set(seen))}, missing {len(missing)}, duplicated {len(duplicated)}"
    )
    assert not missing, f"acknowledged but never answered: {sorted(missing)[:10]}"
    assert not duplicated, f"answered twice: {dict(list(duplicated.items())[:10])}"
    # nothing was invented either
    assert set(seen) <= set(sent.values())
