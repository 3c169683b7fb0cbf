"""Lark benchmark: events handled per second, long connection and webhook, end
to end, against the web adapter on the same load in the same run.

The engine runs as its own process pinned to one core. The fake Lark open
platform (``callboard/testing/fake_lark.py``, the server the tests use too)
runs in this process on the other core. Long connection: it queues
``chats x messages`` events at once on lark-oapi's websocket, and the SDK in
the engine answers each only after the journal commit (one at a time: the
SDK calls its handler synchronously). Webhook: the same events are posted
encrypted and signed, ``IN_FLIGHT`` at a time; each is answered 200 after the
commit. The engine routes them to an echo pipeline, which replies through
``im/v1/messages``; an event counts as handled when its reply arrives. The
same ``chats x messages`` then go through the web adapter's websocket
(``bench.e2e.drive``) to a fresh engine, which gives the ratio. Outbound rate
limits are off (Lark's 50/s per app would otherwise be the result).

    callboard bench lark [--quick] [--json]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from callboard.bench import platforms
from callboard.bench.e2e import Scenario
from callboard.bench.harness import cpu_seconds, free_port, print_report, report_parser, verdicts
from callboard.engine.loop import run as run_loop
from callboard.testing.fake_lark import ENCRYPT_KEY, FakeLark

#: webhook deliveries in flight at once
IN_FLIGHT = 64
MODES = ("ws", "webhook")


@dataclass
class LarkResult:
    events: int = 0
    answered_per_s: float = 0.0
    handled_per_s: float = 0.0
    seconds: float = 0.0
    out_of_order: int = 0
    duplicates: int = 0
    engine_busy: float = 0.0  # the engine process's CPU time / wall time
    load_busy: float = 0.0  # this process's (the fake platform's) CPU time / wall time
    notes: list[str] = field(default_factory=list)


async def _run_lark(
    lark: FakeLark, mode: str, scenario: Scenario, tag: str, say: Any, timeout: float, pid: int
) -> LarkResult:
    people = [f"ou_{tag}_{c}" for c in range(scenario.chats)]
    chats = []
    for person in people:
        lark.add_user(person, person)
        chats.append(lark.p2p(person))
    payloads = [
        lark.message_event(chats[c], people[c], f"{c}:{i}")
        for i in range(scenario.messages)
        for c in range(scenario.chats)
    ]
    sends_before = len(lark.sent)
    answered_before = lark.answered_count["send_message"]
    say(f"lark {mode} {scenario.name} ({scenario.events:,} events)")
    cpu_before = cpu_seconds(pid)
    load_before = time.process_time()
    start = time.monotonic()
    answered_at = None
    if mode == "ws":
        for payload in payloads:
            lark.push(payload)
    else:
        statuses = await lark.deliver_concurrently(payloads, IN_FLIGHT)
        answered_at = time.monotonic()
        failed = sum(1 for status in statuses if status != 200)
    answered_at, end = await platforms.wait_replies(
        start + timeout,
        lambda: not lark.queue,
        lambda: lark.answered_count["send_message"] - answered_before >= scenario.events,
        answered_at,
    )
    replies = lark.sent[sends_before:]
    result = LarkResult(events=scenario.events, seconds=end - start)
    result.engine_busy = (cpu_seconds(pid) - cpu_before) / max(1e-9, end - start)
    result.load_busy = (time.process_time() - load_before) / max(1e-9, end - start)
    result.handled_per_s = len(replies) / max(1e-9, result.seconds)
    result.answered_per_s = scenario.events / max(1e-9, (answered_at or end) - start)
    answered, result.duplicates, result.out_of_order = platforms.check_replies(
        orjson.loads(reply["body"]["content"])["text"] for reply in replies
    )
    if answered < scenario.events:
        result.notes.append(f"only {answered} of {scenario.events} events answered")
    if mode == "webhook" and failed:
        result.notes.append(f"{failed} deliveries were not answered 200")
    return result


async def _lark(tmp: Path, cpu: int | None, mode: str, scenarios: list[Scenario], say: Any) -> dict[str, Any]:
    # the platform's send dedup off: a reply the engine sent twice would count twice
    lark = await FakeLark(encrypt_key=ENCRYPT_KEY, honour_uuid=False).start()
    port = free_port()
    config = tmp / f"fleet-lark-{mode}.yaml"
    config.write_text(
        platforms.fleet("lark", tmp / f"journal-lark-{mode}.sqlite3", port, lark.adapter_yaml(mode))
    )
    if mode == "webhook":
        lark.webhook_url = f"http://127.0.0.1:{port}/lark/bench/events"
    try:
        return await platforms.run_scenarios(
            config,
            port,
            cpu,
            scenarios,
            200,
            lambda scenario, index, timeout, pid: _run_lark(
                lark, mode, scenario, f"s{index}", say, timeout, pid
            ),
        )
    finally:
        await lark.close()


def measure(quick: bool, quiet: bool = False) -> dict[str, Any]:
    loads = platforms.scenarios(quick, one=3_000, hundred=30, thousand=3)
    lark, web, head = platforms.against_web(
        "lark",
        quick,
        quiet,
        loads,
        lambda tmp, cpu, say: {mode: run_loop(_lark(tmp, cpu, mode, loads, say)) for mode in MODES},
    )
    everything = [r for mode in MODES for r in lark[mode].values()]
    return {
        **head,
        "webhook_in_flight": IN_FLIGHT,
        "lark": lark,
        "web": web,
        "ratio_handled_lark_vs_web": {mode: platforms.ratios(lark[mode], web) for mode in MODES},
        "checks": {
            "all_answered": all(not r["notes"] for r in everything),
            # a webhook's concurrent deliveries carry no order (Lark's neither); the long connection's do
            "ws_in_order": all(r["out_of_order"] == 0 for r in lark["ws"].values()),
            "no_duplicates": all(r["duplicates"] == 0 for r in everything),
        },
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"callboard Lark benchmark (engine on CPU {report['engine_cpu']}, fake Lark and load on CPU "
        f"{report['load_cpu']}; journal {report['journal']}; outbound rate limits off; webhook "
        f"{report['webhook_in_flight']} in flight, encrypted and signed)",
        "",
        f"{'mode':<9}{'scenario':<10}{'events':>8}{'answered/s':>12}{'handled/s':>11}"
        f"{'engine CPU':>12}{'fake CPU':>10}{'reordered':>11}{'web handled/s':>15}{'lark/web':>10}",
    ]
    for mode in MODES:
        for name, entry in report["lark"][mode].items():
            web = report["web"][name]
            lines.append(
                f"{mode:<9}{name:<10}{entry['events']:>8,}{entry['answered_per_s']:>12,.0f}"
                f"{entry['handled_per_s']:>11,.0f}{entry['engine_busy']:>11.0%} {entry['load_busy']:>9.0%} "
                f"{entry['out_of_order']:>10,}"
                f"{web['handled_per_s']:>15,.0f}{report['ratio_handled_lark_vs_web'][mode][name]:>10.2f}"
            )
            for note in entry["notes"] + web["notes"]:
                lines.append(f"    note: {note}")
    lines.append("")
    lines.append(
        "answered/s: events acknowledged to Lark (ws answer frame or webhook 200, after the journal "
        "commit); handled/s: echo replies received by the open API; reordered: replies out of the "
        "order their events were sent in (a webhook's concurrent deliveries have none)"
    )
    lines.append(verdicts("checks", report["checks"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = report_parser("callboard bench lark", __doc__, "a fifth of the events per scenario")
    args = parser.parse_args(argv)
    print_report(measure(args.quick, quiet=args.json), args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
