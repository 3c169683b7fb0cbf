"""Agent handler benchmark: what an agent run costs the engine, and what a
session waiting on a slow model costs in memory.

1. Overhead: the same messages go through a bot with the echo pipeline and a
   bot with an ``openai`` agent (no streaming, memory on) whose fake model
   answers at once, interleaved, in one run; runs/s of each and the ratio.
   Both bots run in this process with the full engine (journal, sessions,
   outbound, web adapter output); events enter through the adapter's
   ``ingest`` (commit, then route), so only the chat client is left out.
   The fake model runs in its own process on the other core.
2. Waiting sessions: one message each into many sessions at once, with a fake
   model that holds every request until all have arrived and then takes 1-3 s
   per answer. The engine's RSS growth while they all wait (sessions, runs,
   open HTTP requests), per waiting session, against the stated bound.

    callboard bench agent [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from callboard.actors.config_file import parse_fleet
from callboard.adapters.base import Adapter, AdapterHost
from callboard.app import Running, start
from callboard.bench.harness import free_port, pin, process, rss_kib, split_cpus, wait_ready
from callboard.engine.entities import ChatType, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.loop import run as run_loop

#: what one session waiting on the model may cost the engine, at most
BOUND_KIB_PER_WAITING_SESSION = 64

FLEET = """
name: bench-agent
engine:
  journal: {journal}
  admin: {{port: 0}}
bots:
  - id: echo
    adapter: {{type: web}}
    session: {{idle_ttl: 1h, debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
  - id: agent
    adapter: {{type: web}}
    session: {{idle_ttl: 1h, debounce: {{window: 0}}, handler_timeout: 120s}}
    handlers:
      - event_type: message.received
        handler_type: agent
        handler_config:
          runner: openai
          runner_config: {{base_url: "{base_url}", model: fake, max_connections: {connections}}}
          stream: false
          deadline: 110s
          memory: {{max_turns: 4}}
"""


def message(bot: str, session: int, n: int) -> MessageReceived:
    return MessageReceived(
        bot_id=bot,
        adapter="web",
        chat_type=ChatType.PRIVATE,
        chat_id=f"u{session}:bench",
        message_id=f"m{n}",
        message_chain=MessageChain.of(f"message {n}"),
        sender=User(id=f"u{session}"),
    )


def _host(running: Running, bot: str) -> AdapterHost:
    """The adapter's own way in: commit, then route."""
    adapter = running.stats.runtimes[bot].api
    assert isinstance(adapter, Adapter)
    return adapter.host


async def inject(running: Running, bot: str, sessions: int, per_session: int, start_n: int = 0) -> int:
    """Send ``per_session`` messages into each of ``sessions`` sessions; wait until all ran."""
    runtime = running.stats.runtimes[bot]
    host = _host(running, bot)
    target = runtime.counters.runs + sessions * per_session
    n = start_n
    for round_ in range(per_session):
        events = [message(bot, s, n + s) for s in range(sessions)]
        n += sessions
        await host.ingest(events)
        del round_
    while runtime.counters.runs < target:
        await asyncio.sleep(0.005)
    return n


async def overhead(running: Running, runs: int, sessions: int, rounds: int, say: Any) -> dict[str, Any]:
    per_session = max(1, runs // sessions)
    rates: dict[str, list[float]] = {"echo": [], "agent": []}
    n = 0
    for bot in ("echo", "agent"):  # warm-up: sessions exist, connections open
        n = await inject(running, bot, sessions, 1, n)
    for _ in range(rounds):
        for bot in ("echo", "agent"):
            gc.collect()
            started = time.perf_counter()
            n = await inject(running, bot, sessions, per_session, n)
            elapsed = time.perf_counter() - started
            rates[bot].append(sessions * per_session / elapsed)
            say(f"  {bot}: {rates[bot][-1]:,.0f} runs/s")
    echo, agent = statistics.median(rates["echo"]), statistics.median(rates["agent"])
    return {
        "runs": sessions * per_session,
        "sessions": sessions,
        "echo_runs_per_s": round(echo),
        "agent_runs_per_s": round(agent),
        "agent_to_echo": round(agent / echo, 3),
        "agent_ms_per_run": round(1000 / agent, 3),
        "echo_ms_per_run": round(1000 / echo, 3),
    }


async def waiting(running: Running, model_url: str, sessions: int, say: Any) -> dict[str, Any]:
    """One message into each of ``sessions`` sessions. The fake model holds every
    request until all are in flight (its gate), then answers each in 1-3 s, so
    all sessions really wait at once; RSS is read while they do."""
    runtime = running.stats.runtimes["agent"]
    counters = runtime.counters
    host = _host(running, "agent")
    pid = os.getpid()
    gc.collect()
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    runs_before = counters.runs
    started_before = counters.usage.get("agent_runs", 0.0)
    started = time.perf_counter()
    await host.ingest([message("agent", 100_000 + s, 10_000_000 + s) for s in range(sessions)])
    waiting_at_once = 0
    peak = before
    while counters.runs < runs_before + sessions:
        # runs started and not finished: sessions waiting on the model (read here, not over HTTP)
        begun = int(counters.usage.get("agent_runs", 0.0) - started_before)
        in_progress = begun - (counters.runs - runs_before)
        if in_progress >= waiting_at_once:
            waiting_at_once = in_progress
            peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    async with aiohttp.ClientSession() as http, http.get(f"{model_url}/health") as response:
        held = int((await response.json())["max_in_flight"])
    per_session = (peak - before) / max(1, waiting_at_once)
    say(f"  {waiting_at_once:,} waiting at once: RSS {before / 1024:.0f} -> {peak / 1024:.0f} MiB")
    return {
        "sessions": sessions,
        "waiting_at_once": waiting_at_once,
        "model_held_at_once": held,
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "kib_per_waiting_session": round(per_session, 1),
        "bound_kib": BOUND_KIB_PER_WAITING_SESSION,
        "within_bound": per_session <= BOUND_KIB_PER_WAITING_SESSION,
        "seconds_for_all": round(elapsed, 1),
        "failed_runs": counters.failed_runs + counters.timed_out_runs,
        "model_retries": int(counters.usage.get("agent_retries", 0)),
    }


def _serve_model(port: int, latency: tuple[float, float], cpu: int | None, gate: int = 0) -> Any:
    argv = [sys.executable, "-m", "callboard.testing.fake_openai", "--port", str(port), "--gate", str(gate)]
    return process([*argv, "--latency", str(latency[0]), str(latency[1])], cpu)


async def _scenario(quick: bool, say: Any) -> dict[str, Any]:
    engine_cpu, load_cpu = split_cpus()
    pin(engine_cpu)
    report: dict[str, Any] = {"quick": quick}
    sessions = 1_000 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="callboard-bench-agent-") as tmp:
        fast_port, slow_port = free_port(), free_port()
        with (
            _serve_model(fast_port, (0.0, 0.0), load_cpu) as fast,
            _serve_model(slow_port, (1.0, 3.0), load_cpu, gate=sessions) as slow,
        ):
            await wait_ready(f"http://127.0.0.1:{fast_port}/health", fast)
            await wait_ready(f"http://127.0.0.1:{slow_port}/health", slow)
            say("handler overhead (fake model answering at once):")
            config = parse_fleet(
                FLEET.format(
                    journal=Path(tmp) / "fast.sqlite3",
                    base_url=f"http://127.0.0.1:{fast_port}/v1",
                    connections=100,
                ),
                "bench-agent.yaml",
            )
            running = await start(config, port=0)
            try:
                report["overhead"] = await overhead(
                    running, runs=400 if quick else 3_000, sessions=50, rounds=3, say=say
                )
            finally:
                await running.stop()
            say(f"{sessions:,} sessions waiting on a model taking 1-3 s:")
            config = parse_fleet(
                FLEET.format(
                    journal=Path(tmp) / "slow.sqlite3",
                    base_url=f"http://127.0.0.1:{slow_port}/v1",
                    connections=sessions,
                ),
                "bench-agent.yaml",
            )
            running = await start(config, port=0)
            try:
                report["waiting"] = await waiting(running, f"http://127.0.0.1:{slow_port}", sessions, say)
            finally:
                await running.stop()
    return report


def render(report: dict[str, Any]) -> str:
    o, w = report["overhead"], report["waiting"]
    return "\n".join(
        [
            "",
            f"overhead, {o['runs']:,} runs over {o['sessions']} sessions (median of 3, interleaved):",
            f"  echo pipeline   {o['echo_runs_per_s']:>8,} runs/s  ({o['echo_ms_per_run']} ms/run)",
            f"  openai agent    {o['agent_runs_per_s']:>8,} runs/s  ({o['agent_ms_per_run']} ms/run)",
            f"  agent / echo    {o['agent_to_echo']:.3f}",
            f"waiting sessions ({w['sessions']:,}, model 1-3 s):",
            f"  waiting at once {w['waiting_at_once']:>8,} (the model held {w['model_held_at_once']:,})",
            f"  RSS             {w['rss_before_mib']} -> {w['rss_peak_mib']} MiB",
            f"  per session     {w['kib_per_waiting_session']} KiB (bound {w['bound_kib']} KiB: "
            f"{'within' if w['within_bound'] else 'EXCEEDED'})",
            f"  all answered in {w['seconds_for_all']} s ({w['failed_runs']} failed runs, "
            f"{w['model_retries']} model retries)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench agent", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs and 1,000 waiting sessions, not 10,000"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    report = run_loop(_scenario(args.quick, say))
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        print(render(report))
    return 0 if report["waiting"]["within_bound"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
