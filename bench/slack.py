"""Slack benchmark: events handled per second through Socket Mode and through
the HTTP Events API, end to end, against the web adapter on the same load in
the same run.

The engine runs as its own process pinned to one core. The fake Slack
(``callboard/testing/fake_slack.py``, the server the tests use too) runs in
this process on the other core. It queues ``chats x messages`` direct
messages at once and delivers them: in Socket Mode as envelopes on the
websocket, acknowledged by the engine after the journal commit; over HTTP as
signed Events API requests (up to 8 in flight per channel and 64 in all, as
Slack sends them concurrently and without order; each answered 200 after the
commit). The engine journals each event
(SQLite, synchronous=FULL), routes it to an echo pipeline and answers with a
chat.postMessage through slack_sdk's AsyncWebClient; as Slack does, the fake
sends each reply back to the bot as a ``message`` event, which the engine
acknowledges and filters (so the engine reads two events per message). An
event counts as handled when its reply arrives. The same ``chats x messages``
then go through the web adapter's websocket (``bench.e2e.drive``) to a fresh
engine, which gives the ratio. Outbound rate limits and method tiers are off
(Slack's one message a second per channel would otherwise be the result).

The cost note breaks the engine's CPU time per event down: the adapter's own
conversion and rendering are timed here in-process on the same payloads; the
rest (slack_sdk's websocket/HTTP handling, JSON, the journal, routing, the
echo) is what the total has beyond them, next to the web adapter's total.

    callboard bench slack [--quick] [--json]
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from callboard.adapters.slack.convert import Converter, Identity
from callboard.adapters.slack.render import render
from callboard.adapters.slack.request import SlackWeb
from callboard.bench import platforms
from callboard.bench.e2e import Scenario
from callboard.bench.harness import cpu_seconds, free_port, print_report, report_parser, verdicts
from callboard.engine.clock import LoopClock
from callboard.engine.entities import MessageChain
from callboard.engine.loop import run as run_loop
from callboard.testing.fake_slack import (
    BOT_ID,
    BOT_TOKEN,
    BOT_USER,
    TEAM,
    FakeSlack,
)

MODES = ("socket", "http")
#: Events API requests in flight per channel: Slack sends events concurrently, without order
HTTP_PER_CHANNEL = 8


@dataclass
class SlackResult:
    events: int = 0
    acked_per_s: float = 0.0
    handled_per_s: float = 0.0
    seconds: float = 0.0
    out_of_order: int = 0
    duplicates: int = 0
    engine_cpu_us_per_event: float = 0.0
    engine_busy: float = 0.0  # the engine's CPU time / wall time
    fake_busy: float = 0.0  # this process's (the fake Slack's) CPU time / wall time
    notes: list[str] = field(default_factory=list)


async def _run_slack(
    slack: FakeSlack, scenario: Scenario, index: int, say: Any, timeout: float, pid: int, mode: str
) -> SlackResult:
    """Queue every event at once; wait for every reply."""
    people = [f"U{index}{c:07d}" for c in range(scenario.chats)]
    for person in people:
        slack.add_user(person, person.lower())
    dms = [slack.im(person) for person in people]
    answered_before = slack.answered_count["chat.postMessage"]
    calls_before = len(slack.calls)
    say(f"slack {mode} {scenario.name} ({scenario.events:,} events)")
    cpu_before = cpu_seconds(pid)
    fake_before = time.process_time()
    start = time.monotonic()
    for i in range(scenario.messages):
        for c in range(scenario.chats):
            slack.push(slack.message(dms[c], people[c], f"{c}:{i}"))
    deadline = start + timeout
    acked_at, end = await platforms.wait_replies(
        deadline,
        lambda: not slack.pending,
        lambda: slack.answered_count["chat.postMessage"] - answered_before >= scenario.events,
    )
    engine_cpu = cpu_seconds(pid) - cpu_before
    fake_cpu = time.process_time() - fake_before
    await slack.wait_acked(timeout=max(5.0, deadline - time.monotonic()))  # the echoes too
    replies = [c for c in slack.calls[calls_before:] if c.method == "chat.postMessage" and c.ok]
    result = SlackResult(events=scenario.events, seconds=(replies[-1].at if replies else end) - start)
    result.handled_per_s = len(replies) / max(1e-9, result.seconds)
    result.acked_per_s = scenario.events / max(1e-9, (acked_at or end) - start)
    result.engine_cpu_us_per_event = engine_cpu / max(1, scenario.events) * 1e6
    result.engine_busy = engine_cpu / max(1e-9, end - start)
    result.fake_busy = fake_cpu / max(1e-9, end - start)
    answered, result.duplicates, result.out_of_order = platforms.check_replies(
        str(call.get("text")) for call in replies
    )
    if answered < scenario.events:
        result.notes.append(f"only {answered} of {scenario.events} events answered")
    return result


async def _slack(
    tmp: Path, cpu: int | None, scenarios: list[Scenario], say: Any, mode: str
) -> dict[str, Any]:
    slack = await FakeSlack().start()
    slack.http_concurrency = 64
    slack.http_per_channel = HTTP_PER_CHANNEL
    slack.redeliver_after = 5.0  # what a busy engine left unacknowledged comes again
    port = free_port()
    config = tmp / f"fleet-slack-{mode}.yaml"
    adapter = slack.adapter_yaml(mode) + "tier_limits: false\n"
    journal = tmp / f"journal-slack-{mode}.sqlite3"
    config.write_text(platforms.fleet("slack", journal, port, adapter, session="max_pending: 100000"))

    async def ready() -> None:
        if mode == "http":
            slack.deliver_to(f"http://127.0.0.1:{port}/slack/bench/events")
        else:
            await slack.wait_socket()

    try:
        return await platforms.run_scenarios(
            config,
            port,
            cpu,
            scenarios,
            200,
            lambda scenario, index, timeout, pid: _run_slack(slack, scenario, index, say, timeout, pid, mode),
            ready,
        )
    finally:
        await slack.close()


def adapter_costs(n: int = 20_000) -> dict[str, float]:
    """The adapter's own work per event, in-process: parsing an envelope, converting
    its Events API payload, rendering the echo reply (microseconds each); and what one
    chat.postMessage costs through slack_sdk's AsyncWebClient against the same request
    made with plain aiohttp (CPU of client and fake server together, both in this process)."""
    slack = FakeSlack()
    slack.add_user("U0ANN", "ann")
    dm = slack.im("U0ANN")
    payloads = [
        {
            "type": "event_callback",
            "team_id": TEAM,
            "event_id": f"Ev{i}",
            "event": slack.message(dm, "U0ANN", f"0:{i}"),
        }
        for i in range(n)
    ]
    converter = Converter(
        "bench", Identity(BOT_USER, BOT_ID, TEAM), channel_messages="mention", thread_sessions=True
    )
    raw = [
        orjson.dumps({"envelope_id": f"e{i}", "type": "events_api", "payload": p})
        for i, p in enumerate(payloads)
    ]
    started = time.perf_counter()
    for frame in raw:
        orjson.loads(frame)
    parse = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for payload in payloads:
        converter.event_callback(payload)
    convert = (time.perf_counter() - started) / n * 1e6
    chains = [MessageChain.of(f"0:{i}") for i in range(n)]
    started = time.perf_counter()
    for chain in chains:
        render(chain)
    rendering = (time.perf_counter() - started) / n * 1e6
    sdk, plain = run_loop(_post_costs(max(200, n // 10)))
    return {
        "parse_envelope_us": parse,
        "convert_us": convert,
        "render_us": rendering,
        "post_sdk_cpu_us": sdk,
        "post_aiohttp_cpu_us": plain,
    }


async def _post_costs(n: int) -> tuple[float, float]:
    """CPU microseconds per chat.postMessage: through SlackWeb (slack_sdk), then plain aiohttp."""
    slack = await FakeSlack(echo=False).start()
    slack.add_channel("C0BENCH", "bench")
    web = SlackWeb(BOT_TOKEN, slack.base_url, 10.0, LoopClock(), paced=False)
    headers = {"Authorization": f"Bearer {BOT_TOKEN}", "Content-Type": "application/json"}
    body = orjson.dumps({"channel": "C0BENCH", "text": "0:1"})
    try:

        async def through_sdk() -> None:
            await web.call("chat.postMessage", lambda c: c.chat_postMessage(channel="C0BENCH", text="0:1"))

        async def through_aiohttp() -> None:
            async with web.session.post(f"{slack.base_url}chat.postMessage", data=body, headers=headers) as r:
                await r.read()

        costs = []
        for call in (through_sdk, through_aiohttp):
            await call()  # warm: the connection is open
            started = time.process_time()
            for _ in range(n):
                await call()
            costs.append((time.process_time() - started) / n * 1e6)
        return costs[0], costs[1]
    finally:
        await web.close()
        await slack.close()


def measure(quick: bool, quiet: bool = False) -> dict[str, Any]:
    loads = platforms.scenarios(quick, one=3_000, hundred=50, thousand=5)
    load_before = os.getloadavg()[0]
    slack, web, head = platforms.against_web(
        "slack",
        quick,
        quiet,
        loads,
        lambda tmp, cpu, say: {mode: run_loop(_slack(tmp, cpu, loads, say, mode)) for mode in MODES},
    )
    return {
        **head,
        "load_average": [load_before, os.getloadavg()[0]],
        "slack": slack,
        "web": web,
        "ratio_handled_slack_vs_web": {mode: platforms.ratios(slack[mode], web) for mode in MODES},
        "adapter_costs": adapter_costs(2_000 if quick else 20_000),
        "checks": {
            "all_answered": all(not r["notes"] for mode in MODES for r in slack[mode].values()),
            # Socket Mode delivers in order; concurrent Events API requests may arrive in any order
            "in_order_socket": all(r["out_of_order"] == 0 for r in slack["socket"].values()),
            "no_duplicates": all(r["duplicates"] == 0 for mode in MODES for r in slack[mode].values()),
        },
    }


def render_report(report: dict[str, Any]) -> str:
    lines = [
        f"callboard Slack benchmark (engine on CPU {report['engine_cpu']}, fake Slack and load on CPU "
        f"{report['load_cpu']}; journal {report['journal']}; outbound rate limits and tiers off; "
        f"machine load average {report['load_average'][0]:.1f} before, "
        f"{report['load_average'][1]:.1f} after)",
        "",
        f"{'mode':<8}{'scenario':<10}{'events':>8}{'acked/s':>10}{'handled/s':>11}{'reordered':>10}"
        f"{'CPU us/ev':>11}{'engine':>8}{'fake':>6}"
        f"{'web handled/s':>15}{'web us/ev':>11}{'slack/web':>11}",
    ]
    for mode in MODES:
        for name, entry in report["slack"][mode].items():
            web = report["web"][name]
            lines.append(
                f"{mode:<8}{name:<10}{entry['events']:>8,}{entry['acked_per_s']:>10,.0f}"
                f"{entry['handled_per_s']:>11,.0f}{entry['out_of_order']:>10,}{entry['engine_cpu_us_per_event']:>11,.0f}"
                f"{entry['engine_busy']:>8.0%}{entry['fake_busy']:>6.0%}"
                f"{web['handled_per_s']:>15,.0f}{web['engine_cpu_us_per_event']:>11,.0f}"
                f"{report['ratio_handled_slack_vs_web'][mode][name]:>11.2f}"
            )
            for note in entry["notes"]:
                lines.append(f"    note ({mode}): {note}")
            for note in web["notes"] if mode == MODES[0] else []:
                lines.append(f"    note (web): {note}")
    costs = report["adapter_costs"]
    lines += [
        "",
        "acked/s: events acknowledged to Slack (envelope ack or HTTP 200, after the journal commit); "
        "handled/s: replies received by chat.postMessage; reordered: replies not in the order the fake sent "
        "the events (HTTP: concurrent requests); CPU us/ev: the engine process's CPU time per event; "
        "engine, fake: CPU time / wall time of the engine and of the fake Slack (near 100%: that side is "
        "the limit)",
        f"cost per event, in-process: parse envelope {costs['parse_envelope_us']:.1f} us, convert "
        f"{costs['convert_us']:.1f} us, render reply {costs['render_us']:.1f} us; one chat.postMessage "
        f"through slack_sdk {costs['post_sdk_cpu_us']:.0f} us CPU against "
        f"{costs['post_aiohttp_cpu_us']:.0f} us through plain aiohttp (client and fake server together); "
        "the rest of the engine's CPU per event is slack_sdk (websocket frames or the aiohttp route, "
        "AsyncWebClient's request and response handling), the journal, routing, the pipeline, and "
        "acknowledging and filtering the echo of each reply, against the web adapter's total in the same run",
        verdicts("checks", report["checks"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = report_parser("callboard bench slack", __doc__, "a fifth of the events per scenario")
    args = parser.parse_args(argv)
    print_report(measure(args.quick, quiet=args.json), args.json, render_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
