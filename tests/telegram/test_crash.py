"""kill -9 in the middle of polling: after a restart every update is answered
exactly once. The kill lands while a delivered batch is in the journal but not
yet confirmed to Telegram, so the new process reads it again."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import pytest

from callboard.bench.harness import free_port, wait_ready
from callboard.testing.fake_telegram import FakeBotAPI, private_chat, user
from tests.support import assert_stored_once, crash_fleet, engine_process

pytestmark = pytest.mark.timeout(180)

TOTAL = 400


def _answered(api: FakeBotAPI) -> collections.Counter[str]:
    return collections.Counter(c["text"] for c in api.answered("sendMessage"))


async def test_kill_9_mid_polling_answers_every_update_exactly_once(tmp_path: Path, api: FakeBotAPI) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    journal = tmp_path / "journal.sqlite3"
    config = tmp_path / "fleet.yaml"
    config.write_text(crash_fleet(journal, port, "tg", api.adapter_yaml() + "request_timeout: 2\n"))
    people = [user(2000 + i, f"U{i}") for i in range(10)]
    chats = [api.add_chat(private_chat(person)) for person in people]
    texts = [f"m{i}" for i in range(TOTAL)]

    async def pusher() -> None:
        for i, text in enumerate(texts):
            # Stay a bounded lead ahead of the answers, so updates are still arriving (and a
            # delivered batch is still unconfirmed) when the kill lands, however slow the machine.
            while i - len(api.answered("sendMessage")) > 40:
                await asyncio.sleep(0.01)
            api.push("message", api.message(chats[i % 10], people[i % 10], text))
            await asyncio.sleep(0.004)

    engine = engine_process(config)
    feeding = asyncio.ensure_future(pusher())
    try:
        await wait_ready(f"{base}/readyz", engine)
        await api.wait_calls("sendMessage", 120, timeout=60)
        # freeze the platform's side: sends and polls in flight from now on are never carried out,
        # so every answered send has its receipt stored by the time of the kill
        api.hold("getUpdates", "sendMessage")
        await asyncio.sleep(0.6)
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        unconfirmed_at_kill = {u["update_id"] for u in api.pending if api.served[u["update_id"]]}
        before = sum(_answered(api).values())
        api.release()  # the dead process's waiting calls are dropped: their client is gone
    finally:
        if engine.poll() is None:
            engine.kill()
    assert unconfirmed_at_kill, "the kill should land with a delivered batch not yet confirmed"

    engine = engine_process(config)
    try:
        await wait_ready(f"{base}/readyz", engine)
        await feeding
        deadline = time.monotonic() + 60
        while set(_answered(api)) != set(texts) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await api.wait_confirmed()
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
    answered = _answered(api)
    missing = set(texts) - set(answered)
    twice = {text: n for text, n in answered.items() if n > 1}
    print(
        f"\nanswered before the kill {before}, re-read after it {len(unconfirmed_at_kill)}, "
        f"missing {len(missing)}, answered twice {len(twice)}"
    )
    assert not missing, sorted(missing)[:10]
    assert not twice, dict(list(twice.items())[:10])
    assert all(api.served[u] >= 2 for u in unconfirmed_at_kill)  # really read again
    assert api.conflicts == 0  # never two pollers at once
    assert_stored_once(journal, "tg", lambda event: event["raw"]["update_id"], TOTAL)
