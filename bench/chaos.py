"""Chaos benchmark: load on the web chat and on a Telegram bot (fake Bot API, long
polling) while actors and the whole process are killed at random.

The engine runs as its own process (``callboard run`` plus a chaos task, see
``_engine``) which crashes a random connection, session, outbound or lane
actor every ``--crash-every`` seconds on average by sending it a message it
does not understand: the actor fails and its supervisor restarts it, exactly
as for a bug. This process sends web chat messages and queues Telegram
updates at a steady rate, and kills the engine with SIGKILL at random moments
(every 8-20 s), restarting it at once. At the end the load stops, the last
engine is given time to answer everything, and the report counts:

- acknowledged: web frames answered ``ack`` (or ``duplicate``: stored before)
  plus Telegram updates confirmed through getUpdates' offset;
- answered: acknowledged messages whose echo reached the chat (web: stored in
  the journal's outbox; Telegram: a sendMessage the fake Bot API accepted);
- lost: acknowledged, never answered (must be 0);
- duplicated: answered more than once (Telegram can send twice in the window
  between the platform accepting a send and its receipt being stored, when
  the process is killed inside it; the web chat's outbox refuses a repeat).
  That window is measured for every Telegram send: from the fake Bot API
  receiving the sendMessage to the receipt being written in the journal.

    callboard bench chaos [--minutes N] [--crash-every S] [--seed N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from callboard.bench.harness import free_port, wait_ready
from callboard.engine.loop import run as run_loop
from callboard.testing.fake_telegram import FakeBotAPI, private_chat, user

FLEET = """
name: chaos
engine:
  journal: {journal}
  admin: {{port: {port}}}
  shutdown_timeout: 10s
bots:
  - id: web
    adapter: {{type: web}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
  - id: tg
    adapter:
      type: telegram
      token: "{token}"
      base_url: {base_url}
      poll_timeout: 1
      request_timeout: 5
      rate_limits: {{per_bot_per_second: 0, per_private_chat_per_second: 0, per_group_chat_per_minute: 0}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""

#: actors the chaos task crashes (by name in the tree, or class)
VICTIM_NAMES = ("connection", "outbound")
VICTIM_CLASSES = ("SessionActor", "OutboundLane")


class _Crash:
    """A message no actor understands: receiving it is a failure, as a bug would be."""

    __slots__ = ()


# ---------------------------------------------------------------------- the engine process


def _victims(node: dict[str, Any]) -> list[str]:
    found = []
    if node.get("name") in VICTIM_NAMES or node.get("class") in VICTIM_CLASSES:
        found.append(str(node["path"]))
    for child in node.get("children", []):
        found.extend(_victims(child))
    return found


async def _engine(config_path: str, crash_every: float, seed: int, crash_log: str) -> None:
    """``callboard run`` with a chaos task; SIGTERM stops it gracefully."""
    from callboard.actors.config_file import load_fleet
    from callboard.app import start

    running = await start(load_fleet(config_path))
    rng = random.Random(seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def chaos() -> None:
        with open(crash_log, "a", buffering=1) as log:
            while True:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * crash_every)
                victims = _victims(running.system.tree())
                if not victims:
                    continue
                path = rng.choice(victims)
                ref = running.system.lookup(path)
                if ref is not None and ref.is_alive:
                    ref.tell(_Crash())
                    log.write(path + "\n")

    task = asyncio.ensure_future(chaos())
    try:
        await stop.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await running.stop()


# ---------------------------------------------------------------------- the load


class WebLoad:
    """One websocket client sending numbered messages to a few chats; reconnects
    whenever the engine goes away. When the server greets with ``hello`` (a web chat
    with identity), the chats are that guest's own (``<user id>:c<n>``)."""

    def __init__(self, url: str, chats: int) -> None:
        self.url = url
        self.chats = chats
        self.acked: set[str] = set()
        self.refused = 0
        self.sent = 0
        self._pending: dict[str, str] = {}  # client_msg_id -> text
        self._prefix = ""
        self._greeted = asyncio.Event()

    async def run(self, rate: float, stop: asyncio.Event) -> None:
        index = 0
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                try:
                    async with http.ws_connect(self.url, heartbeat=5) as ws:
                        self._prefix = ""
                        self._greeted.clear()
                        reader = asyncio.ensure_future(self._read(ws))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._greeted.wait(), 1.0)
                        try:
                            while not stop.is_set() and not ws.closed:
                                text = f"w{index}"
                                cid = f"k{index}"
                                self._pending[cid] = text
                                chat = f"{self._prefix}c{index % self.chats}"
                                frame = {"op": "send", "chat_id": chat, "text": text}
                                await ws.send_bytes(orjson.dumps({**frame, "client_msg_id": cid}))
                                self.sent += 1
                                index += 1
                                await asyncio.sleep(1 / rate)
                        finally:
                            reader.cancel()
                            await asyncio.gather(reader, return_exceptions=True)
                except (aiohttp.ClientError, OSError, RuntimeError):
                    await asyncio.sleep(0.2)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = orjson.loads(message.data)
            if frame.get("op") == "hello" and frame.get("user_id"):
                self._prefix = f"{frame['user_id']}:"
                self._greeted.set()
                continue
            text = self._pending.pop(str(frame.get("client_msg_id")), None)
            if text is None:
                continue
            if frame["op"] in ("ack", "duplicate"):
                self.acked.add(text)
            elif frame["op"] == "error":
                self.refused += 1


class TelegramLoad:
    """Queues numbered updates on the fake Bot API; confirmed ones are acknowledged."""

    def __init__(self, api: FakeBotAPI, chats: int) -> None:
        self.api = api
        self.people = [user(7000 + c, f"p{c}") for c in range(chats)]
        self.chats = [api.add_chat(private_chat(person)) for person in self.people]
        self.texts: dict[int, str] = {}  # update_id -> text

    async def run(self, rate: float, stop: asyncio.Event) -> None:
        index = 0
        while not stop.is_set():
            c = index % len(self.chats)
            update_id = self.api.push("message", self.api.message(self.chats[c], self.people[c], f"t{index}"))
            self.texts[update_id] = f"t{index}"
            index += 1
            await asyncio.sleep(1 / rate)

    def acknowledged(self) -> set[str]:
        pending = {u["update_id"] for u in self.api.pending}
        return {text for update_id, text in self.texts.items() if update_id not in pending}

    def answered(self) -> collections.Counter[str]:
        return collections.Counter(
            call["text"] for call in self.api.calls_of("sendMessage") if call.status == 200
        )


def _receipt_window(journal: Path, api: FakeBotAPI) -> dict[str, float]:
    """Milliseconds from the Bot API receiving a sendMessage to its receipt being
    written (both on this machine's clocks): the window in which a kill -9 makes a
    replay send again."""
    offset = time.time() - time.monotonic()  # the fake stamps calls with time.monotonic()
    calls = [c for c in api.calls_of("sendMessage") if c.status == 200]
    accepted: dict[tuple[str, str], float] = {}
    for call, message in zip(calls, api.sent, strict=False):
        if call["text"] == message.get("text") and str(call["chat_id"]) == str(message["chat"]["id"]):
            accepted[(f"private:{message['chat']['id']}", str(message["message_id"]))] = call.at + offset
    conn = sqlite3.connect(journal)
    try:
        rows = conn.execute("SELECT chat, message_id, at FROM receipts WHERE bot='tg' AND status='sent'")
        windows = sorted(
            (at - accepted[(chat, mid)]) * 1000 for chat, mid, at in rows if (chat, mid) in accepted
        )
    finally:
        conn.close()
    if not windows:
        return {}
    return {
        "sends": len(windows),
        "p50_ms": windows[len(windows) // 2],
        "p99_ms": windows[min(len(windows) - 1, int(len(windows) * 0.99))],
        "max_ms": windows[-1],
    }


def _web_answers(journal: Path) -> collections.Counter[str]:
    conn = sqlite3.connect(journal)
    try:
        rows = conn.execute("SELECT payload FROM outbox WHERE bot='web'").fetchall()
    finally:
        conn.close()
    found: collections.Counter[str] = collections.Counter()
    for (payload,) in rows:
        item = orjson.loads(payload)
        if item.get("op") == "message":
            found.update(str(item.get("text", "")).split("\n"))
    return found


class Engine:
    """The engine process: started, SIGKILLed and restarted by the driver."""

    def __init__(self, config: Path, crash_every: float, crash_log: Path, port: int) -> None:
        self.config = config
        self.crash_every = crash_every
        self.crash_log = crash_log
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "callboard.bench.chaos",
            "--engine",
            str(self.config),
            "--crash-every",
            str(self.crash_every),
            "--seed",
            str(random.randrange(1 << 30)),
            "--crash-log",
            str(self.crash_log),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        await wait_ready(f"http://127.0.0.1:{self.port}/readyz", self.proc, timeout=60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _chaos(minutes: float, crash_every: float, say: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="callboard-bench-chaos-") as tmp_name:
        tmp = Path(tmp_name)
        api = await FakeBotAPI().start()
        port = free_port()
        journal = tmp / "journal.sqlite3"
        config = tmp / "fleet.yaml"
        config.write_text(FLEET.format(journal=journal, port=port, token=api.token, base_url=api.base_url))
        crash_log = tmp / "crashes.log"
        crash_log.touch()
        engine = Engine(config, crash_every, crash_log, port)
        web = WebLoad(f"ws://127.0.0.1:{port}/web/web/ws", chats=20)
        telegram = TelegramLoad(api, chats=20)
        stop = asyncio.Event()
        kills = 0
        try:
            await engine.start()
            loads = [asyncio.ensure_future(web.run(40, stop)), asyncio.ensure_future(telegram.run(20, stop))]
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline:
                await asyncio.sleep(min(random.uniform(8, 20), max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline:
                    break
                engine.kill()
                kills += 1
                say(f"kill -9 #{kills} at {minutes * 60 - (deadline - time.monotonic()):.0f}s")
                await engine.start()
            stop.set()
            await asyncio.gather(*loads, return_exceptions=True)
            say("load stopped; letting the last engine answer everything")
            settle = time.monotonic() + 90
            while time.monotonic() < settle:
                tg_missing = telegram.acknowledged() - set(telegram.answered())
                if not tg_missing and not api.pending:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # the web echoes of the last acks
        finally:
            engine.stop()
            await api.close()
        web_answers = _web_answers(journal)
        window = _receipt_window(journal, api)
        tg_answers = telegram.answered()
        crashes = collections.Counter(_kind(line) for line in crash_log.read_text().splitlines())
        report: dict[str, Any] = {
            "minutes": minutes,
            "process_kills": kills,
            "engine_starts": engine.starts,
            "actor_crashes": sum(crashes.values()),
            "actor_crashes_by_name": dict(crashes.most_common(8)),
        }
        for name, acked, answers, extra in (
            ("web", web.acked, web_answers, {"sent": web.sent, "refused": web.refused}),
            ("telegram", telegram.acknowledged(), tg_answers, {"queued": len(telegram.texts)}),
        ):
            answered = acked & set(answers)
            report[name] = {
                **extra,
                "acknowledged": len(acked),
                "answered": len(answered),
                "lost": len(acked - answered),
                "lost_examples": sorted(acked - answered)[:10],
                "duplicated": sum(1 for text, n in answers.items() if n > 1 and text),
            }
        report["telegram"]["receipt_window"] = window
        report["lost"] = report["web"]["lost"] + report["telegram"]["lost"]
        report["duplicated"] = report["web"]["duplicated"] + report["telegram"]["duplicated"]
        return report


def _kind(path: str) -> str:
    """What a crashed actor was, from its path (/fleet/BOT/sessions/KEY, .../outbound/LANE)."""
    parts = path.strip().split("/")
    if "sessions" in parts[:-1]:
        return "session"
    if "outbound" in parts[:-1]:
        return "outbound lane"
    return parts[-1]


def render(report: dict[str, Any]) -> str:
    lines = [
        f"callboard chaos: {report['minutes']:g} min, {report['process_kills']} kill -9 of the engine, "
        f"{report['actor_crashes']} actor crashes {report['actor_crashes_by_name']}",
        "",
        f"{'platform':<10}{'acknowledged':>14}{'answered':>10}{'lost':>6}{'duplicated':>12}",
    ]
    for name in ("web", "telegram"):
        entry = report[name]
        lines.append(
            f"{name:<10}{entry['acknowledged']:>14,}{entry['answered']:>10,}{entry['lost']:>6}"
            f"{entry['duplicated']:>12}"
        )
        if entry["lost_examples"]:
            lines.append(f"    lost: {entry['lost_examples']}")
    window = report["telegram"].get("receipt_window")
    if window:
        lines.append(
            f"telegram send -> receipt written: p50 {window['p50_ms']:.1f} ms, "
            f"p99 {window['p99_ms']:.1f} ms, "
            f"max {window['max_ms']:.1f} ms over {window['sends']:,} sends (a kill inside it may send twice)"
        )
    lines.append("")
    verdict = "ok" if report["lost"] == 0 else "FAILED"
    lines.append(f"lost: {report['lost']} ({verdict}); duplicated: {report['duplicated']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the load runs (default 2)")
    parser.add_argument("--crash-every", type=float, default=1.0, help="mean seconds between actor crashes")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # the engine process (internal)
    parser.add_argument("--crash-log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine:
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(_engine(args.engine, args.crash_every, args.seed or 0, args.crash_log))
        return 0
    if args.seed is not None:
        random.seed(args.seed)

    def say(text: str) -> None:
        if not args.json:
            print(f"  {text}", file=sys.stderr, flush=True)

    report = run_loop(_chaos(args.minutes, args.crash_every, say))
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(report))
    return 0 if report["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
