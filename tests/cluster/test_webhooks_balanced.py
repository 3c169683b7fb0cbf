"""Signed Slack Events API requests through a round-robin load balancer in front
of three engine nodes: any node accepts any event, retries of one event id land
on other nodes (one after another and all at once), one node is killed with -9
mid-stream (the balancer skips it; requests it dropped are retried by Slack),
and every event is answered exactly once."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import orjson
import pytest

from callboard.testing.balancer import RoundRobinProxy
from callboard.testing.cluster import RATE_LIMITS_OFF, balanced, echo_bot, make_nodes, start_all
from callboard.testing.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from callboard.testing.nats_server import NatsServer
from callboard.testing.postgres import PostgresServer
from tests.support import WEB

pytestmark = pytest.mark.timeout(150)
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 8
PATH = "/slack/sl/events"
SLACK_HTTP = """
type: slack
mode: http
bot_token: "{token}"
signing_secret: "{secret}"
base_url: "{base_url}"
request_timeout: 5
tier_limits: false
"""


async def test_signed_webhooks_through_a_balancer_are_answered_once(
    tmp_path: Path, postgres: PostgresServer, nats_server: NatsServer
) -> None:
    slack = await FakeSlack(echo=False).start()
    slack.retry_delay = 0.1
    people = [f"U0P{i}" for i in range(6)]
    dms = []
    for person in people:
        slack.add_user(person, person.lower())
        dms.append(slack.im(person))
    url = postgres.create_database("balanced")
    adapter = SLACK_HTTP.format(token=BOT_TOKEN, secret=SIGNING_SECRET, base_url=slack.base_url)
    bots = echo_bot("sl", adapter + RATE_LIMITS_OFF)
    nodes = make_nodes(tmp_path, 3, url=url, nats=nats_server.url, web=WEB, partitions=PARTITIONS, bots=bots)
    balancer = await RoundRobinProxy([node.base for node in nodes]).start()
    sent: list[str] = []
    payloads: dict[str, dict[str, object]] = {}
    n = 0

    def say(count: int) -> list[str]:
        nonlocal n
        ids = []
        for _ in range(count):
            person = people[n % len(people)]
            text = f"m{n}"
            n += 1
            event_id = slack.push(slack.message(dms[people.index(person)], person, text))
            payloads[event_id] = slack.pending[event_id].payload
            sent.append(text)
            ids.append(event_id)
        return ids

    async def redeliver(event_id: str, base: str, attempt: int) -> int:
        status, _ = await slack.post(
            base + PATH,
            orjson.dumps(payloads[event_id]),
            headers={"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_timeout"},
        )
        return status

    try:
        await start_all(nodes, ROOT)
        await balanced(nodes, PARTITIONS)
        slack.deliver_to(balancer.url + PATH)
        retried = 0
        for _ in range(6):
            ids = say(6)
            await slack.wait_acked()
            for event_id in ids[:3]:  # Slack retrying: each retry lands on the next node
                for attempt in (1, 2, 3):
                    assert await redeliver(event_id, balancer.url, attempt) == 200
                    retried += 1
            # one event delivered to every node at the same moment (a retry racing the first)
            (event_id,) = say(1)
            statuses = await asyncio.gather(*(redeliver(event_id, node.base, 1) for node in nodes))
            assert set(statuses) == {200}, statuses
            retried += len(nodes)
        await slack.wait_acked()
        victim = nodes[2]
        killed_at = victim.kill()
        while time.monotonic() - killed_at < 4.0:  # the balancer skips it; Slack retries what it dropped
            say(3)
            await asyncio.sleep(0.1)
        await slack.wait_acked(timeout=30)
        deadline = time.monotonic() + 30
        counts: collections.Counter[str] = collections.Counter()
        while time.monotonic() < deadline:
            counts = collections.Counter(str(c["text"]) for c in slack.answered("chat.postMessage"))
            if set(sent) <= set(counts):
                break
            await asyncio.sleep(0.1)
        missing = [t for t in sent if t not in counts]
        doubled = {t: c for t, c in counts.items() if c > 1}
        failed = sum(1 for status in slack.http_statuses if status != 200)
        print(
            f"\n{len(sent)} events, {retried} extra deliveries of the same event ids, "
            f"requests per node {dict(balancer.served)}, refused by the killed node "
            f"{sum(balancer.refused.values())}, deliveries Slack retried {failed}; "
            f"answered {len(counts)}, missing {len(missing)}, answered twice {len(doubled)}"
        )
        assert all(balancer.served[node.base] > 0 for node in nodes), balancer.served
        assert not missing, f"never answered: {missing[:10]}"
        assert not doubled, f"answered more than once: {doubled}"
    finally:
        await balancer.close()
        for node in nodes:
            node.stop()
        await slack.close()
