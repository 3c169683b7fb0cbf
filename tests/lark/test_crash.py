"""kill -9 in the middle of a stream of events, in both modes: after a restart
every event is answered (acknowledged to Lark) and replied to exactly once.
The fake platform's own send dedup (``uuid``) is off, so a duplicate reply by
the engine would show."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import pytest

from callboard.bench.harness import free_port, wait_ready
from callboard.testing.fake_lark import ENCRYPT_KEY, FakeLark
from tests.support import assert_stored_once, crash_fleet, engine_process

pytestmark = pytest.mark.timeout(180)

TOTAL = 300


@pytest.mark.parametrize("mode", ["ws", "webhook"])
async def test_kill_9_mid_stream_answers_every_event_exactly_once(tmp_path: Path, mode: str) -> None:
    lark = await FakeLark(encrypt_key=ENCRYPT_KEY, honour_uuid=False).start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    journal = tmp_path / "journal.sqlite3"
    config = tmp_path / "fleet.yaml"
    config.write_text(crash_fleet(journal, port, "lk", lark.adapter_yaml(mode)))
    if mode == "webhook":
        lark.webhook_url = f"{base}/lark/lk/events"
        lark.webhook_retry = 0.05
    people = [f"ou_u{i}" for i in range(10)]
    chats = []
    for person in people:
        lark.add_user(person, person)
        chats.append(lark.p2p(person))
    texts = [f"m{i}" for i in range(TOTAL)]
    event_ids: list[str] = []

    async def pusher() -> None:
        for i, text in enumerate(texts):
            event_ids.append(lark.push(lark.message_event(chats[i % 10], people[i % 10], text)))
            await asyncio.sleep(0.004)

    engine = engine_process(config, tmp_path / "engine.log")
    feeding = asyncio.ensure_future(pusher())
    try:
        await wait_ready(f"{base}/readyz", engine)
        await lark.wait_calls("send_message", 80, timeout=60)
        # freeze sends: every send answered so far has its receipt stored by the time of the kill
        lark.hold("send_message")
        await asyncio.sleep(0.5)
        # a burst, and the kill as it arrives: events delivered and not yet answered (or stored);
        # their answers, if any make it out, are lost with the process (ws)
        lark.lose_answers = mode == "ws"
        for i in range(40):
            event_ids.append(lark.push(lark.message_event(chats[i % 10], people[i % 10], f"burst{i}")))
        texts.extend(f"burst{i}" for i in range(40))
        await asyncio.sleep(0.01)
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        unanswered_at_kill = {d.event_id for d in lark.deliveries.values() if d.served and not d.acked}
        before = len(lark.answered("send_message"))
        deadline = time.monotonic() + 10
        while lark.connections and time.monotonic() < deadline:  # answers still buffered are lost too
            await asyncio.sleep(0.02)
        lark.lose_answers = False
        lark.release()
    finally:
        if engine.poll() is None:
            engine.kill()

    engine = engine_process(config, tmp_path / "engine.log")
    try:
        await wait_ready(f"{base}/readyz", engine)
        await feeding
        deadline = time.monotonic() + 60
        while set(lark.texts_sent()) != set(texts) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await lark.wait_acked(timeout=30)
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
        await lark.close()
    replies = collections.Counter(lark.texts_sent())
    missing = set(texts) - set(replies)
    twice = {text: n for text, n in replies.items() if n > 1}
    answers: collections.Counter[str] = collections.Counter()
    for delivery in lark.deliveries.values():
        answers[delivery.event_id] += sum(1 for code in delivery.answers if code == 200)
    print(
        f"\n{mode}: replied before the kill {before}, unanswered at the kill {len(unanswered_at_kill)}, "
        f"missing {len(missing)}, replied twice {len(twice)}"
    )
    assert unanswered_at_kill, "the kill should land with a delivered event not yet answered"
    assert not missing, sorted(missing)[:10]
    assert not twice, dict(list(twice.items())[:10])
    assert set(answers) == set(event_ids), "every event answered"
    not_once = {e: n for e, n in answers.items() if n != 1}
    assert not not_once, f"answered 200 other than once: {not_once}"
    assert all(lark.served(e) >= 2 for e in unanswered_at_kill)  # really delivered again
    assert lark.overlaps == 0, "a new connection opened while an old one was still open"
    assert_stored_once(journal, "lk", lambda event: event["dedup_key"], len(texts))
