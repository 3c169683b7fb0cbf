"""kill -9 in the middle of a stream of Slack events, in both modes: after a
restart every event is answered exactly once. In Socket Mode the acks of the
last envelopes before the kill are lost on the way, so Slack sends those
events again to the new process, which already has them in its journal; in
HTTP mode the requests in flight at the kill fail and Slack retries them."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import pytest

from callboard.bench.harness import free_port, wait_ready
from callboard.testing.fake_slack import FakeSlack
from tests.slack.conftest import workspace
from tests.support import assert_stored_once, crash_fleet, engine_process

pytestmark = pytest.mark.timeout(180)

TOTAL = 400


def _answered(slack: FakeSlack) -> collections.Counter[str]:
    return collections.Counter(str(c.get("text")) for c in slack.answered("chat.postMessage"))


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_kill_9_mid_stream_answers_every_event_exactly_once(tmp_path: Path, mode: str) -> None:
    slack = await FakeSlack().start()
    workspace(slack)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    journal = tmp_path / "journal.sqlite3"
    config = tmp_path / "fleet.yaml"
    adapter = slack.adapter_yaml(mode) + "ping_interval: 0.5\ntier_limits: false\n"
    config.write_text(crash_fleet(journal, port, "sl", adapter))
    people = [f"U1{i:04d}" for i in range(10)]
    for person in people:
        slack.add_user(person, person.lower())
    dms = [slack.im(person) for person in people]
    texts = [f"m{i}" for i in range(TOTAL)]
    if mode == "http":
        slack.retry_delay = 0.1
        slack.deliver_to(f"{base}/slack/sl/events")

    async def pusher() -> None:
        for i, text in enumerate(texts):
            slack.push(slack.message(dms[i % 10], people[i % 10], text))
            await asyncio.sleep(0.004)

    engine = engine_process(config)
    feeding = asyncio.ensure_future(pusher())
    try:
        await wait_ready(f"{base}/readyz", engine)
        await slack.wait_calls("chat.postMessage", 120, timeout=60)
        # freeze the platform's side: sends in flight from now on are never carried out, so every
        # answered send has its receipt stored by the time of the kill; acks from now on are lost
        slack.hold("chat.postMessage")
        slack.lose_acks = True
        await asyncio.sleep(0.6)
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        lost = slack.lost_acks
        before = sum(_answered(slack).values())
        slack.lose_acks = False
        slack.release()  # the dead process's waiting calls are dropped: their client is gone
    finally:
        if engine.poll() is None:
            engine.kill()
    if mode == "socket":
        assert lost > 0, "the kill should land with acknowledged-but-lost envelopes"

    engine = engine_process(config)
    try:
        await wait_ready(f"{base}/readyz", engine)
        await feeding
        deadline = time.monotonic() + 60
        while set(_answered(slack)) != set(texts) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await slack.wait_acked(timeout=30)
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
        await slack.close()
    answered = _answered(slack)
    missing = set(texts) - set(answered)
    twice = {text: n for text, n in answered.items() if n > 1}
    redelivered = sum(1 for n in slack.served.values() if n > 1)
    print(
        f"\n{mode}: answered before the kill {before}, acks lost {lost}, events delivered more than once "
        f"{redelivered}, missing {len(missing)}, answered twice {len(twice)}"
    )
    assert not missing, sorted(missing)[:10]
    assert not twice, dict(list(twice.items())[:10])
    assert redelivered > 0  # the journal really had copies to drop
    assert slack.max_open <= 1  # never two sockets at once
    assert_stored_once(journal, "sl", lambda event: event["message_id"], TOTAL)
