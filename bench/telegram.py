"""Telegram benchmark: updates handled per second through long polling, end to
end, against the web adapter on the same load in the same run.

The engine runs as its own process pinned to one core. A fake Bot API
(``callboard/testing/fake_telegram.py``, the server the tests use too) runs in this
process on the other core: it queues ``chats x messages`` updates at once and
serves them to getUpdates as fast as the engine asks (100 per call, confirmed
by the next call's offset). The engine journals them (SQLite, synchronous=FULL),
routes them to an echo pipeline and answers each with a sendMessage to the fake
server. An update counts as handled when its reply arrives. The same
``chats x messages`` then go through the web adapter's websocket
(``bench.e2e.drive``) to a fresh engine, which gives the ratio. Outbound rate
limits are off in both (Telegram's 30/s per bot would otherwise be the result).

    callboard bench telegram [--quick] [--json]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callboard.bench import platforms
from callboard.bench.e2e import Scenario
from callboard.bench.harness import cpu_seconds, free_port, print_report, report_parser, verdicts
from callboard.engine.loop import run as run_loop
from callboard.testing.fake_telegram import FakeBotAPI, private_chat, user


@dataclass
class TelegramResult:
    updates: int = 0
    confirmed_per_s: float = 0.0
    handled_per_s: float = 0.0
    seconds: float = 0.0
    batches: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    engine_busy: float = 0.0  # the engine process's CPU time / wall time
    notes: list[str] = field(default_factory=list)


async def _run_telegram(
    api: FakeBotAPI, scenario: Scenario, index: int, say: Any, timeout: float, pid: int
) -> TelegramResult:
    """Queue every update at once; wait for every reply."""
    base = 10_000_000 * (index + 1)  # chat ids of this scenario
    people = [user(base + c, f"u{c}") for c in range(scenario.chats)]
    chats = [api.add_chat(private_chat(person)) for person in people]
    sends_before = len(api.calls_of("sendMessage"))
    polls_before = len(api.calls_of("getUpdates"))
    answered_before = api.answered_count["sendmessage"]
    say(f"telegram {scenario.name} ({scenario.events:,} updates)")
    cpu_before = cpu_seconds(pid)
    start = time.monotonic()  # the clock the fake server stamps calls with
    for i in range(scenario.messages):
        for c in range(scenario.chats):
            api.push("message", api.message(chats[c], people[c], f"{c}:{i}"))
    confirmed_at, end = await platforms.wait_replies(
        start + timeout,
        lambda: not api.pending,
        lambda: api.answered_count["sendmessage"] - answered_before >= scenario.events,
    )
    engine_cpu = cpu_seconds(pid) - cpu_before
    replies = [c for c in api.calls_of("sendMessage")[sends_before:] if c.status == 200]
    result = TelegramResult(updates=scenario.events, seconds=(replies[-1].at if replies else end) - start)
    result.handled_per_s = len(replies) / max(1e-9, result.seconds)
    result.confirmed_per_s = scenario.events / max(1e-9, (confirmed_at or end) - start)
    result.engine_busy = engine_cpu / max(1e-9, end - start)
    result.batches = sum(1 for c in api.calls_of("getUpdates")[polls_before:] if c.status == 200)
    answered, result.duplicates, result.out_of_order = platforms.check_replies(c["text"] for c in replies)
    if answered < scenario.events:
        result.notes.append(f"only {answered} of {scenario.events} updates answered")
    return result


async def _telegram(tmp: Path, cpu: int | None, scenarios: list[Scenario], say: Any) -> dict[str, Any]:
    api = await FakeBotAPI().start()
    port = free_port()
    config = tmp / "fleet-telegram.yaml"
    config.write_text(platforms.fleet("telegram", tmp / "journal-telegram.sqlite3", port, api.adapter_yaml()))
    try:
        return await platforms.run_scenarios(
            config,
            port,
            cpu,
            scenarios,
            500,
            lambda scenario, index, timeout, pid: _run_telegram(api, scenario, index, say, timeout, pid),
        )
    finally:
        await api.close()


def measure(quick: bool, quiet: bool = False) -> dict[str, Any]:
    loads = platforms.scenarios(quick, one=5_000, hundred=100, thousand=10)
    telegram, web, head = platforms.against_web(
        "telegram", quick, quiet, loads, lambda tmp, cpu, say: run_loop(_telegram(tmp, cpu, loads, say))
    )
    return {
        **head,
        "telegram": telegram,
        "web": web,
        "ratio_handled_telegram_vs_web": platforms.ratios(telegram, web),
        "checks": {
            "all_answered": all(not r["notes"] for r in telegram.values()),
            "in_order": all(r["out_of_order"] == 0 for r in telegram.values()),
            "no_duplicates": all(r["duplicates"] == 0 for r in telegram.values()),
        },
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"callboard Telegram benchmark (engine on CPU {report['engine_cpu']}, fake Bot API and load on CPU "
        f"{report['load_cpu']}; journal {report['journal']}; outbound rate limits off)",
        "",
        f"{'scenario':<10}{'updates':>9}{'batches':>9}{'confirmed/s':>13}{'handled/s':>11}"
        f"{'engine CPU':>12}{'web handled/s':>15}{'telegram/web':>14}",
    ]
    for name, entry in report["telegram"].items():
        web = report["web"][name]
        lines.append(
            f"{name:<10}{entry['updates']:>9,}{entry['batches']:>9,}{entry['confirmed_per_s']:>13,.0f}"
            f"{entry['handled_per_s']:>11,.0f}{entry['engine_busy']:>11.0%} {web['handled_per_s']:>15,.0f}"
            f"{report['ratio_handled_telegram_vs_web'][name]:>14.2f}"
        )
        for note in entry["notes"] + web["notes"]:
            lines.append(f"    note: {note}")
    lines.append("")
    lines.append(
        "confirmed/s: updates acknowledged to the Bot API (getUpdates offset past them, after the journal "
        "commit); handled/s: replies received by the Bot API"
    )
    lines.append(verdicts("checks", report["checks"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = report_parser(
        "callboard bench telegram", __doc__, "a fifth of the updates per scenario"
    ).parse_args(argv)
    print_report(measure(args.quick, quiet=args.json), args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
