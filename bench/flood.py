"""Flood benchmark: one websocket pipelining frames into one chat, while other clients chat.

The reliability issue's repro: before backpressure, one client got 173k frames
acknowledged in 18 s, a 171,830-event backlog, RSS 75 MB -> 594 MB, and other clients'
ack p99 went from 12 ms to 821 ms. This runs the same flood against an engine process
(pinned to one core; the load on the other) and prints, side by side for each engine:

- RSS before the flood, at its peak during it, and after it;
- the flood's frames sent, acknowledged, refused (``busy``), and the largest backlog
  seen (acknowledged but not yet answered);
- the other clients' ack p50/p99 unloaded, then during the flood.

Engines: ``defaults`` (the web adapter as shipped: rate limits on), ``no rate limits``
(only the backlog bound holds the flood back), and with ``--src DIR`` an engine run from
another source tree (e.g. a git worktree of an older commit) for a before/after.

    callboard bench flood [--seconds N] [--src DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from callboard.bench.harness import free_port, pin, process, rss_kib, split_cpus, wait_ready
from callboard.engine.loop import run as run_loop

FLEET = """
name: flood
engine:
  journal: {journal}
  admin: {{port: {port}}}
bots:
  - id: bench
    adapter: {{type: web{web}}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""
NO_RATE_LIMITS = (
    ", rate_per_connection: {per_second: 1000000, burst: 1000000},"
    " rate_per_user: {per_second: 1000000, burst: 1000000}"
)

OTHERS = 20  # other clients, each its own connection and chat
OTHER_RATE = 10.0  # messages per second per other client (200/s in all)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


class Chat:
    """One websocket user: knows its private chat id (or speaks the old protocol to an
    engine without sessions, which sends no ``hello``)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str, first: dict[str, Any] | None) -> None:
        self.ws = ws
        self.legacy = first is None or first.get("op") != "hello"
        self.chat_id = name if self.legacy or first is None else f"{first['user_id']}:{name}"
        self.user = name

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, name: str) -> Chat:
        ws = await http.ws_connect(url, max_msg_size=0)
        first = None
        with contextlib.suppress(TimeoutError):
            message = await ws.receive(timeout=1.0)
            first = orjson.loads(message.data)
        return cls(ws, name, first)

    def frame(self, text: str, client_msg_id: str) -> str:
        fields: dict[str, Any] = {
            "op": "send",
            "chat_id": self.chat_id,
            "text": text,
            "client_msg_id": client_msg_id,
        }
        if self.legacy:
            fields["user_id"] = self.user
        return orjson.dumps(fields).decode()


@dataclass
class Others:
    """The other clients: paced sends, ack latency."""

    acks: list[float] = field(default_factory=list)
    errors: int = 0


async def run_others(http: aiohttp.ClientSession, url: str, seconds: float, tag: str) -> Others:
    result = Others()
    chats = [await Chat.open(http, url, f"{tag}{i}") for i in range(OTHERS)]
    sent: dict[str, float] = {}

    async def reader(chat: Chat) -> None:
        async for message in chat.ws:
            frame = orjson.loads(message.data)
            if frame["op"] == "ack":
                result.acks.append(time.perf_counter() - sent.pop(frame["client_msg_id"]))
            elif frame["op"] == "error":
                result.errors += 1

    async def writer(index: int, chat: Chat) -> None:
        interval = 1.0 / OTHER_RATE
        start = time.perf_counter() + index * interval / OTHERS
        n = 0
        while (due := start + n * interval) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            cid = f"{tag}{index}-{n}"
            sent[cid] = time.perf_counter()
            await chat.ws.send_str(chat.frame(cid, cid))
            n += 1

    readers = [asyncio.ensure_future(reader(c)) for c in chats]
    await asyncio.gather(*(writer(i, c) for i, c in enumerate(chats)))
    await asyncio.sleep(1.0)  # the last acks
    for chat in chats:
        await chat.ws.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return result


@dataclass
class Flood:
    sent: int = 0
    acked: int = 0
    busy: int = 0
    other_errors: int = 0
    answered: int = 0
    max_backlog: int = 0
    rss_peak_kib: int = 0
    dropped: int = 0  # times the engine closed the flooding connection


async def run_flood(http: aiohttp.ClientSession, url: str, seconds: float, pid: int, flood: Flood) -> None:
    """Pipeline frames, never waiting for an ack; when the engine drops the connection
    (a client too slow to read its answers is dropped), reconnect and go on."""
    stop = time.perf_counter() + seconds

    async def reader(chat: Chat) -> None:
        async for message in chat.ws:
            frame = orjson.loads(message.data)
            op = frame["op"]
            if op == "ack":
                flood.acked += 1
            elif op == "message":
                flood.answered += 1
            elif op == "error":
                if frame.get("code") == "busy":
                    flood.busy += 1
                else:
                    flood.other_errors += 1
            flood.max_backlog = max(flood.max_backlog, flood.acked - flood.answered)

    async def sample() -> None:
        while True:
            flood.rss_peak_kib = max(flood.rss_peak_kib, rss_kib(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.ensure_future(sample())
    while time.perf_counter() < stop:
        chat = await Chat.open(http, url, "flood")
        reading = asyncio.ensure_future(reader(chat))
        try:
            # a held-off connection is not read: sends block once the socket buffers are
            # full, so the whole loop is bounded by the time left
            async with asyncio.timeout(max(0.0, stop - time.perf_counter())):
                while time.perf_counter() < stop:
                    await chat.ws.send_str(chat.frame(f"f{flood.sent}", f"f{flood.sent}"))
                    flood.sent += 1
        except TimeoutError:
            pass
        except (aiohttp.ClientError, ConnectionError):
            flood.dropped += 1
        _abort(chat.ws)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)


def _abort(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Drop the flooding connection with a reset: a held-off connection is not read, so a
    polite close would wait behind megabytes of unread frames."""
    sock = ws.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as same:
            same.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            same.shutdown(socket.SHUT_RDWR)


def measure_engine(
    name: str, web: str, src: str | None, seconds: float, cpu: int | None, tmp: Path
) -> dict[str, Any]:
    port = free_port()
    config = tmp / f"fleet-{port}.yaml"
    config.write_text(FLEET.format(journal=tmp / f"journal-{port}.sqlite3", port=port, web=web))
    argv = [sys.executable, "-m", "callboard.cli", "--log-level", "ERROR", "run", str(config)]
    if src is not None:
        tree = os.path.abspath(src)  # run from there: "python -m" puts the working directory first
        argv = ["env", "-C", tree, f"PYTHONPATH={tree}", *argv]
    url = f"ws://127.0.0.1:{port}/web/bench/ws"
    print(f"  {name}: unloaded, then the flood ({seconds:.0f} s each)", file=sys.stderr, flush=True)
    with process(argv, cpu) as engine:
        run_loop(wait_ready(f"http://127.0.0.1:{port}/readyz", engine))

        async def scenario() -> dict[str, Any]:
            async with aiohttp.ClientSession() as http:
                await run_others(http, url, 2.0, "warm")
                rss_before = rss_kib(engine.pid)
                unloaded = await run_others(http, url, seconds, "calm")
                flood = Flood()
                flooding = asyncio.ensure_future(run_flood(http, url, seconds, engine.pid, flood))
                loaded = await run_others(http, url, seconds, "busy")
                await flooding
                rss_after_flood = rss_kib(engine.pid)
                await asyncio.sleep(3.0)
                return {
                    "rss_mib": {
                        "before": rss_before / 1024,
                        "peak_during": max(flood.rss_peak_kib, rss_after_flood) / 1024,
                        "after": rss_kib(engine.pid) / 1024,
                    },
                    "flood": vars(flood) | {"acked_per_s": flood.acked / seconds},
                    "others_ack_ms": {
                        "unloaded_p50": _pct(unloaded.acks, 0.5),
                        "unloaded_p99": _pct(unloaded.acks, 0.99),
                        "flood_p50": _pct(loaded.acks, 0.5),
                        "flood_p99": _pct(loaded.acks, 0.99),
                        "unloaded_errors": unloaded.errors,
                        "flood_errors": loaded.errors,
                        "flood_acks": len(loaded.acks),
                    },
                }

        return run_loop(scenario())


def measure(seconds: float, src: str | None) -> dict[str, Any]:
    engine_cpu, load_cpu = split_cpus()
    pin(load_cpu)
    engines: list[tuple[str, str, str | None]] = []
    if src is not None:
        engines.append((f"--src {src}", "", src))
    engines += [("defaults", "", None), ("no rate limits", NO_RATE_LIMITS, None)]
    report: dict[str, Any] = {
        "seconds": seconds,
        "engine_cpu": engine_cpu,
        "load_cpu": load_cpu,
        "engines": {},
    }
    with tempfile.TemporaryDirectory(prefix="callboard-flood-") as tmp:
        for name, web, tree in engines:
            report["engines"][name] = measure_engine(name, web, tree, seconds, engine_cpu, Path(tmp))
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"callboard flood benchmark: one websocket pipelining into one chat for {report['seconds']:.0f} s, "
        f"{OTHERS} other clients at {OTHER_RATE:.0f} msg/s each (engine on CPU {report['engine_cpu']}, "
        f"load on CPU {report['load_cpu']})",
        "",
        f"{'engine':<22}{'RSS MiB before/peak/after':>27}{'flood sent':>12}{'acked':>9}{'busy':>9}"
        f"{'max backlog':>13}{'others ack p99 ms unloaded/flood':>34}",
    ]
    for name, entry in report["engines"].items():
        rss, flood, others = entry["rss_mib"], entry["flood"], entry["others_ack_ms"]
        lines.append(
            f"{name:<22}{rss['before']:>9.0f} /{rss['peak_during']:>6.0f} /{rss['after']:>6.0f}"
            f"{flood['sent']:>12,}{flood['acked']:>9,}{flood['busy']:>9,}{flood['max_backlog']:>13,}"
            f"{others['unloaded_p99']:>20.1f} /{others['flood_p99']:>8.1f}"
            f"  ({others['flood_p99'] / max(others['unloaded_p99'], 1e-9):.1f}x)"
        )
        if flood["dropped"]:
            lines.append(f"    note: the engine dropped the flooding connection {flood['dropped']} times")
        if others["unloaded_errors"] or others["flood_errors"]:
            lines.append(
                f"    note: other clients got {others['unloaded_errors']} errors unloaded, "
                f"{others['flood_errors']} during the flood"
            )
    lines.append("")
    lines.append("max backlog: the flood's events acknowledged but not yet answered, at its largest")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench flood", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--src", help="also run an engine from this source tree (before/after)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = measure(args.seconds, args.src)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
