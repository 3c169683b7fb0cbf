"""End-to-end benchmark: the web adapter over real websockets, durable journal on.

The engine runs as its own process pinned to one core; the load comes from
this process, pinned to the other core. The same load also goes through a bare
asyncio websocket server (ack, then echo from one queue and task per chat: no
journal, no actors, no debounce) in the same run, which gives the ratio.

    callboard bench e2e [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from callboard.bench.harness import (
    Progress,
    cpu_seconds,
    engine_argv,
    free_port,
    pin,
    print_report,
    process,
    report_parser,
    rss_kib,
    running_engine,
    split_cpus,
    verdicts,
    wait_ready,
)
from callboard.engine.loop import run as run_loop

# The load sends on acks, not replies, so a chat may hold thousands of unhandled events:
# the backlog bounds (and rate limits) are lifted here; bench flood measures them.
FLEET = """
name: bench
engine:
  journal: {journal}
  admin: {{port: {port}}}
  backlog: {{max_events: 100000000}}
bots:
  - id: bench
    adapter:
      type: web
      max_in_flight: 5000
      send_queue: 100000
      rate_per_connection: {{per_second: 1000000, burst: 1000000}}
      rate_per_user: {{per_second: 1000000, burst: 1000000}}
    session:
      idle_ttl: 1h
      max_pending: 100000000
      debounce: {{window: {window}, max_wait: 10s, max_batch: 1000}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


# ---------------------------------------------------------------------- processes


# ---------------------------------------------------------------------- the bare baseline


def serve_baseline(port: int) -> None:
    """Ack each frame, then echo it from a per-chat queue and task: the floor
    for this protocol in CPython, with nothing durable and nothing supervised."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        tasks: list[asyncio.Task[None]] = []
        seqs: dict[str, int] = {}

        async def chat_worker(queue: asyncio.Queue[dict[str, Any]]) -> None:
            while True:
                op = await queue.get()
                chat = op["chat_id"]
                seqs[chat] = seqs.get(chat, 0) + 1
                await ws.send_str(
                    orjson.dumps(
                        {"op": "message", "chat_id": chat, "seq": seqs[chat], "text": op["text"]}
                    ).decode()
                )

        await ws.send_str(orjson.dumps({"op": "hello", "user_id": "bench", "user_name": "bench"}).decode())
        async for message in ws:
            op = orjson.loads(message.data)
            if op.get("op") != "send":
                continue
            await ws.send_str(orjson.dumps({"op": "ack", "client_msg_id": op["client_msg_id"]}).decode())
            queue = queues.get(op["chat_id"])
            if queue is None:
                queue = queues[op["chat_id"]] = asyncio.Queue()
                tasks.append(asyncio.ensure_future(chat_worker(queue)))
            queue.put_nowait(op)
        for task in tasks:
            task.cancel()
        return ws

    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/web/bench/ws", handle)
    app.router.add_get("/readyz", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True, loop=_new_loop())


def _new_loop() -> asyncio.AbstractEventLoop:
    from callboard.engine.loop import new_event_loop

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


# ---------------------------------------------------------------------- the load


@dataclass
class Load:
    sessions: int
    messages: int
    connections: int
    rate: float | None = None  # events/s; None: as fast as acks allow
    in_flight: int = 400


@dataclass
class Result:
    events: int = 0
    accepted_per_s: float = 0.0
    handled_per_s: float = 0.0
    ack_p50_ms: float = 0.0
    ack_p99_ms: float = 0.0
    reply_p50_ms: float = 0.0
    reply_p99_ms: float = 0.0
    seconds: float = 0.0
    errors: int = 0
    out_of_order: int = 0
    cpu_us_per_event: float = 0.0  # the server process's CPU time (all threads) per event sent
    notes: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


async def drive(url: str, load: Load, window: float, tag: str = "") -> Result:
    """Send ``sessions x messages`` over ``connections`` websockets; every text
    is "session:index", so acks and echoed lines map back to their send."""
    sent_at: dict[str, float] = {}
    acks: list[float] = []
    replies: list[float] = []
    last_ack = last_reply = 0.0
    errors = 0
    out_of_order = 0
    total = load.sessions * load.messages
    done = asyncio.get_running_loop().create_future()
    handled = 0
    next_expected: dict[str, int] = {}
    clock = time.perf_counter

    async def reader(ws: aiohttp.ClientWebSocketResponse, credit: asyncio.Semaphore) -> None:
        nonlocal last_ack, last_reply, errors, handled, out_of_order
        async for message in ws:
            frame = orjson.loads(message.data)
            op = frame["op"]
            now = clock()
            if op == "ack":
                acks.append(now - sent_at[frame["client_msg_id"]])
                last_ack = now
                credit.release()
            elif op == "message":
                lines = frame["text"].split("\n")
                for line in lines:
                    session, _, index = line.partition(":")
                    if next_expected.get(session, 0) != int(index):
                        out_of_order += 1
                    next_expected[session] = int(index) + 1
                replies.append(now - sent_at[lines[-1]] - window)
                handled += len(lines)
                last_reply = now
                if handled >= total and not done.done():
                    done.set_result(None)
            elif op == "error":
                errors += 1
                credit.release()

    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(url, max_msg_size=0) for _ in range(load.connections)]
        # each connection is an anonymous user; its private chats are "<user id>:<name>"
        users = [orjson.loads((await ws.receive()).data)["user_id"] for ws in sockets]
        credits = [asyncio.Semaphore(load.in_flight) for _ in sockets]
        readers = [asyncio.ensure_future(reader(ws, c)) for ws, c in zip(sockets, credits, strict=True)]
        start = clock()
        interval = 1.0 / load.rate if load.rate else 0.0

        async def writer(index: int) -> None:
            ws, credit = sockets[index], credits[index]
            mine = range(index, load.sessions, load.connections)
            for i in range(load.messages):
                for session in mine:
                    await credit.acquire()
                    text = f"{tag}s{session}:{i}"
                    if interval:
                        due = start + (i * load.sessions + session) * interval
                        delay = due - clock()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    sent_at[text] = clock()
                    await ws.send_str(
                        orjson.dumps(
                            {
                                "op": "send",
                                "chat_id": f"{users[index]}:{tag}s{session}",
                                "text": text,
                                "client_msg_id": text,
                            }
                        ).decode()
                    )

        await asyncio.gather(*(writer(i) for i in range(load.connections)))
        timeout = 120 + total / 1000
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, timeout)
        end_ack = last_ack or clock()
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    result = Result(events=total, errors=errors, out_of_order=out_of_order)
    result.seconds = (last_reply or clock()) - start
    result.accepted_per_s = len(acks) / max(1e-9, end_ack - start)
    result.handled_per_s = handled / max(1e-9, result.seconds)
    result.ack_p50_ms = _pct(acks, 0.5) * 1000
    result.ack_p99_ms = _pct(acks, 0.99) * 1000
    result.reply_p50_ms = _pct(replies, 0.5) * 1000
    result.reply_p99_ms = _pct(replies, 0.99) * 1000
    if handled < total:
        result.notes.append(f"only {handled} of {total} events answered")
    return result


# ---------------------------------------------------------------------- the run


def timed_load(pid: int, load: Coroutine[Any, Any, Result]) -> Result:
    """Run one load and charge the server's CPU time for it to each event."""
    before = cpu_seconds(pid)
    result = run_loop(load)
    result.cpu_us_per_event = (cpu_seconds(pid) - before) / max(1, result.events) * 1e6
    return result


@dataclass
class Scenario:
    """One platform-benchmark load: ``messages`` to each of ``chats`` chats."""

    name: str
    chats: int
    messages: int

    @property
    def events(self) -> int:
        return self.chats * self.messages


async def web_baseline(
    tmp: Path, cpu: int | None, scenarios: Sequence[Scenario], say: Callable[[str], None]
) -> dict[str, Any]:
    """The web chat under the same load as a platform benchmark, in its own engine: each
    scenario's figures and engine CPU per event, so the
    platform benchmarks print their ratio to the web adapter measured in the same run."""
    port = free_port()
    config = tmp / "fleet-web.yaml"
    config.write_text(FLEET.format(journal=tmp / "journal-web.sqlite3", port=port, window="0s"))
    results: dict[str, Any] = {}
    async with running_engine(config, port, cpu) as engine:
        url = f"ws://127.0.0.1:{port}/web/bench/ws"
        for scenario in scenarios:
            name = scenario.name
            say(f"web {name} ({scenario.events:,} messages)")
            load = Load(
                sessions=scenario.chats, messages=scenario.messages, connections=min(scenario.chats, 50)
            )
            before = cpu_seconds(engine.pid)
            result = vars(await drive(url, load, 0.0, tag=f"{name}-"))
            result["engine_cpu_us_per_event"] = (
                (cpu_seconds(engine.pid) - before) / max(1, result["events"]) * 1e6
            )
            results[name] = result
    return results


def measure(quick: bool, quiet: bool = False) -> dict[str, Any]:
    engine_cpu, load_cpu = split_cpus()
    pin(load_cpu)
    scale = 0.2 if quick else 1.0

    def n(value: int) -> int:
        return max(1, int(value * scale))

    scenarios: list[tuple[str, Load, float]] = [
        ("S=1", Load(sessions=1, messages=n(10_000), connections=1), 0.0),
        ("S=1000", Load(sessions=1000, messages=n(20), connections=50), 0.0),
        ("S=10000", Load(sessions=10_000, messages=max(2, n(4)), connections=100), 0.0),
    ]
    debounced: list[tuple[str, Load, float]] = [
        ("S=1000 debounce", Load(sessions=1000, messages=n(20), connections=50), 0.2),
        ("S=10000 debounce", Load(sessions=10_000, messages=max(2, n(4)), connections=100), 0.2),
    ]
    paced = Load(sessions=1000, messages=n(25), connections=50, rate=5000.0)
    warmup = Load(sessions=2_000, messages=1, connections=20, rate=2000.0)
    idle = Load(sessions=10_000, messages=1, connections=20, rate=2000.0)
    report: dict[str, Any] = {
        "quick": quick,
        "engine_cpu": engine_cpu,
        "load_cpu": load_cpu,
        "journal": "SQLite WAL, synchronous=FULL",
        "scenarios": {},
        "baseline": {},
    }

    steps = Progress(2 * len(scenarios) + len(debounced) + 3, quiet)  # + paced, idle, bare paced
    say = steps.step

    with tempfile.TemporaryDirectory(prefix="callboard-bench-") as tmp:
        for window in (0.0, 0.2):
            port = free_port()
            config = Path(tmp) / f"fleet-{window}.yaml"
            journal = Path(tmp) / f"journal-{window}.sqlite3"
            config.write_text(FLEET.format(journal=journal, port=port, window=f"{window}s"))
            with process(engine_argv(config), engine_cpu) as engine:
                run_loop(wait_ready(f"http://127.0.0.1:{port}/readyz", engine))
                url = f"ws://127.0.0.1:{port}/web/bench/ws"
                for name, load, w in scenarios if window == 0.0 else debounced:
                    say(f"engine {name} ({load.sessions * load.messages:,} events)")
                    result = timed_load(engine.pid, drive(url, load, w, tag=f"{name.replace(' ', '')}-"))
                    report["scenarios"][name] = vars(result)
                if window == 0.0:
                    say("engine paced at 5,000 events/s")
                    report["scenarios"]["paced 5000/s"] = vars(
                        timed_load(engine.pid, drive(url, paced, 0.0, tag="paced-"))
                    )

        report["idle_sessions"] = _idle_sessions(Path(tmp), engine_cpu, idle, warmup, say)
        port = free_port()
        argv = [sys.executable, "-m", "callboard.bench.e2e", "--serve-baseline", str(port)]
        with process(argv, engine_cpu) as baseline:
            run_loop(wait_ready(f"http://127.0.0.1:{port}/readyz", baseline))
            url = f"ws://127.0.0.1:{port}/web/bench/ws"
            for name, load, _ in scenarios:
                say(f"baseline {name}")
                bare = timed_load(baseline.pid, drive(url, load, 0.0, tag=f"{name}-"))
                report["baseline"][name] = vars(bare)
            say("baseline paced at 5,000 events/s")
            bare_paced = timed_load(baseline.pid, drive(url, paced, 0.0, tag="paced-"))
            report["baseline"]["paced 5000/s"] = vars(bare_paced)
    ratios = {}
    for name, _, _ in scenarios:
        base = report["baseline"][name]["handled_per_s"]
        ratios[name] = report["scenarios"][name]["handled_per_s"] / base if base else 0.0
    report["ratio_handled_vs_baseline"] = ratios
    best = max(report["scenarios"][k]["handled_per_s"] for k in ("S=1", "S=1000", "S=10000"))
    report["targets"] = {
        "handled_ge_10k_per_s": best >= 10_000,
        "ack_p99_le_20ms_at_5000_per_s": report["scenarios"]["paced 5000/s"]["ack_p99_ms"] <= 20,
        "rss_le_5KiB_per_idle_session": report["idle_sessions"]["rss_kib_per_1000_sessions"] / 1000 <= 5,
        "no_errors": all(v["errors"] == 0 for v in report["scenarios"].values()),
        "in_order": all(v["out_of_order"] == 0 for v in report["scenarios"].values()),
    }
    steps.close()
    return report


def _idle_sessions(tmp: Path, cpu: int | None, idle: Load, warmup: Load, say: Any) -> dict[str, Any]:
    """Memory of idle sessions in a fresh engine: after a warm-up wave, RSS
    growth while ``idle.sessions`` more sessions are created at a steady pace
    (each handles one message, then sits idle with its state and timers)."""
    port = free_port()
    config = tmp / "fleet-idle.yaml"
    config.write_text(FLEET.format(journal=tmp / "journal-idle.sqlite3", port=port, window="0s"))
    with process(engine_argv(config), cpu) as engine:
        run_loop(wait_ready(f"http://127.0.0.1:{port}/readyz", engine))
        url = f"ws://127.0.0.1:{port}/web/bench/ws"
        say(f"fresh engine: {warmup.sessions:,} warm-up sessions, then {idle.sessions:,} idle sessions")
        run_loop(drive(url, warmup, 0.0, tag="warm-"))
        time.sleep(3.0)  # outbound lanes and transient buffers settle; sessions stay (ttl 1h)
        before = rss_kib(engine.pid)
        run_loop(drive(url, idle, 0.0, tag="idle-"))
        time.sleep(3.0)
        after = rss_kib(engine.pid)
    return {
        "sessions": idle.sessions,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "rss_kib_per_1000_sessions": (after - before) / (idle.sessions / 1000),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"callboard end-to-end benchmark (engine on CPU {report['engine_cpu']}, load on CPU "
        f"{report['load_cpu']}; journal {report['journal']})",
        "",
        f"{'scenario':<20}{'events':>9}{'accepted/s':>12}{'handled/s':>11}{'ack p50/p99 ms':>17}"
        f"{'reply p50/p99 ms':>19}{'vs bare':>9}{'CPU us/ev':>11}",
    ]
    for name, entry in report["scenarios"].items():
        ratio = report["ratio_handled_vs_baseline"].get(name)
        lines.append(
            f"{name:<20}{entry['events']:>9,}{entry['accepted_per_s']:>12,.0f}{entry['handled_per_s']:>11,.0f}"
            f"{entry['ack_p50_ms']:>8.1f} /{entry['ack_p99_ms']:>7.1f}"
            f"{entry['reply_p50_ms']:>9.1f} /{entry['reply_p99_ms']:>8.1f}"
            f"{(f'{ratio:.2f}') if ratio else '':>9}{entry['cpu_us_per_event']:>11,.0f}"
        )
        for note in entry["notes"]:
            lines.append(f"    note: {note}")
    lines.append("")
    lines.append("bare asyncio websocket server (no journal, no actors), same load:")
    for name, entry in report["baseline"].items():
        lines.append(
            f"{name:<20}{entry['events']:>9,}{entry['accepted_per_s']:>12,.0f}{entry['handled_per_s']:>11,.0f}"
            f"{entry['ack_p50_ms']:>8.1f} /{entry['ack_p99_ms']:>7.1f}"
            f"{'':>37}{entry['cpu_us_per_event']:>11,.0f}"
        )
    lines.append("")
    idle = report["idle_sessions"]
    lines.append(
        f"RSS per 1,000 idle sessions: {idle['rss_kib_per_1000_sessions']:,.0f} KiB ({idle['sessions']:,} "
        f"sessions made at 2,000/s in a fresh engine; RSS {idle['rss_kib_before'] / 1024:,.0f} -> "
        f"{idle['rss_kib_after'] / 1024:,.0f} MiB)"
    )
    lines.append("reply latency with debounce is measured from the last message of a burst, minus the window")
    lines.append(
        "CPU us/ev: the server process's CPU time (all threads) per event; steady when the machine is shared"
    )
    lines.append(verdicts("targets", report["targets"], "met", "MISSED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = report_parser("callboard bench e2e", __doc__, "fewer messages per scenario")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    print_report(measure(args.quick, quiet=args.json), args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
