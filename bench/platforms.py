"""What the platform benchmarks (Telegram, Slack, Lark) share: their fleet, their
scenarios run against one engine, the wait for every reply, the check of the replies
and the ratio to the web chat's baseline measured in the same run."""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from callboard.bench.e2e import Scenario, web_baseline
from callboard.bench.harness import narrator, pin, running_engine, split_cpus
from callboard.engine.loop import run as run_loop

T = TypeVar("T")


def fleet(name: str, journal: Path, port: int, adapter: str, *, session: str = "") -> str:
    """A fleet file of one bot ``bench`` whose ``adapter:`` block is ``adapter`` (YAML) with
    the outbound rate limits off (the platform's limit would otherwise be the result),
    answering each message with the echo pipeline; ``session``: more lines of its
    ``session:`` block."""
    adapter_lines = textwrap.indent(textwrap.dedent(adapter).strip(), " " * 6)
    session_lines = textwrap.indent(textwrap.dedent(session).strip(), " " * 6) + "\n" if session else ""
    return (
        f"name: bench-{name}\n"
        f"engine:\n  journal: {journal}\n  admin: {{port: {port}}}\n"
        "bots:\n  - id: bench\n    adapter:\n"
        f"{adapter_lines}\n"
        "      rate_limits: {per_bot_per_second: 0, per_private_chat_per_second: 0,"
        " per_group_chat_per_minute: 0}\n"
        "    session:\n      idle_ttl: 1h\n"
        f"{session_lines}"
        "      debounce: {window: 0s, max_wait: 10s, max_batch: 1000}\n"
        "    handlers:\n"
        "      - event_type: message.received\n"
        "        handler_type: pipeline\n"
        "        handler_config: {stages: [{type: echo}]}\n"
    )


def scenarios(quick: bool, one: int, hundred: int, thousand: int) -> list[Scenario]:
    """1, 100 and 1,000 chats with ``one``, ``hundred`` and ``thousand`` messages each
    (a fifth with ``quick``; at least two each in the largest)."""
    scale = 0.2 if quick else 1.0

    def n(value: int) -> int:
        return max(1, int(value * scale))

    return [
        Scenario("S=1", chats=1, messages=n(one)),
        Scenario("S=100", chats=100, messages=n(hundred)),
        Scenario("S=1000", chats=1000, messages=max(2, n(thousand))),
    ]


async def run_scenarios(
    config: Path,
    port: int,
    cpu: int | None,
    scenarios: Iterable[Scenario],
    events_per_s: float,
    run: Callable[[Scenario, int, float, int], Awaitable[object]],
    ready: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Each scenario in turn against one engine on ``config`` (pinned to ``cpu``):
    ``run(scenario, index, timeout, engine pid)`` measures it, allowed two minutes plus
    ``events_per_s`` a second; ``ready`` first waits for the platform's connection.
    Returns each scenario's result's fields by its name."""
    results: dict[str, Any] = {}
    async with running_engine(config, port, cpu) as engine:
        if ready is not None:
            await ready()
        for index, scenario in enumerate(scenarios):
            timeout = 120 + scenario.events / events_per_s
            results[scenario.name] = vars(await run(scenario, index, timeout, engine.pid))
    return results


async def wait_replies(
    deadline: float,
    drained: Callable[[], bool],
    replied: Callable[[], bool],
    drained_at: float | None = None,
) -> tuple[float | None, float]:
    """Until ``replied()`` holds or the ``deadline`` (``time.monotonic``) passes, noting
    when ``drained()`` first held (every event acknowledged to the platform); returns
    that time (``drained_at`` if already known) and the end."""
    while time.monotonic() < deadline:
        if drained_at is None and drained():
            drained_at = time.monotonic()
        if replied():
            break
        await asyncio.sleep(0.005)
    return drained_at, time.monotonic()


def check_replies(texts: Iterable[str]) -> tuple[int, int, int]:
    """The echo replies ``"<chat>:<index>"`` in the order the platform received them:
    (distinct replies, replies seen before, replies out of their chat's order)."""
    seen: set[str] = set()
    next_index: dict[str, int] = {}
    duplicates = out_of_order = 0
    for text in texts:
        chat, _, index = text.partition(":")
        if text in seen:
            duplicates += 1
        seen.add(text)
        if next_index.get(chat, 0) != int(index):
            out_of_order += 1
        next_index[chat] = int(index) + 1
    return len(seen), duplicates, out_of_order


def ratios(platform: dict[str, Any], web: dict[str, Any]) -> dict[str, float]:
    """Each scenario's replies per second on the platform over the web chat's (0: the web chat had none)."""
    return {
        name: entry["handled_per_s"] / web[name]["handled_per_s"] if web[name]["handled_per_s"] else 0.0
        for name, entry in platform.items()
    }


def against_web(
    name: str,
    quick: bool,
    quiet: bool,
    loads: list[Scenario],
    run: Callable[[Path, int | None, Callable[[str], None]], T],
) -> tuple[T, dict[str, Any], dict[str, Any]]:
    """This process pinned to the load's core, ``run(tmp, engine_cpu, say)`` of the platform's
    scenarios, then the web chat's baseline on the same ``loads`` and core: the platform's
    results, the web's, and the fields every platform report starts with."""
    engine_cpu, load_cpu = split_cpus()
    pin(load_cpu)
    say = narrator(quiet)
    with tempfile.TemporaryDirectory(prefix=f"callboard-bench-{name}-") as tmp:
        platform = run(Path(tmp), engine_cpu, say)
        web = run_loop(web_baseline(Path(tmp), engine_cpu, loads, say))
    head = {
        "quick": quick,
        "engine_cpu": engine_cpu,
        "load_cpu": load_cpu,
        "journal": "SQLite WAL, synchronous=FULL",
    }
    return platform, web, head
