"""Engine nodes of one cluster as processes on this machine (tests and ``bench cluster``)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

from callboard.bench.harness import free_port, wait_ready

FLEET = """
name: cluster
engine:
  journal: {{url: {url}, path: "{path}"}}
  admin: {{port: {port}}}
  cluster: {{nats: "{nats}", node: {node}, partitions: {partitions}, lease: {lease}}}
bots:
  - id: demo
    adapter: {{type: web, {web}}}
    session: {{debounce: {{window: 0}}}}  # each message answered on its own, at once
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
{bots}"""

#: a platform adapter's outbound limits off, so what is not about throttling runs at full speed
RATE_LIMITS_OFF = (
    "rate_limits: {per_bot_per_second: 0, per_private_chat_per_second: 0, per_group_chat_per_minute: 0}"
)


def echo_bot(bot_id: str, adapter: str) -> str:
    """A bot for ``write_config``'s ``bots`` echoing each message on its own, at once;
    ``adapter``: the YAML of its ``adapter:`` block."""
    lines = textwrap.indent(textwrap.dedent(adapter).strip(), " " * 6)
    return f"""
  - id: {bot_id}
    adapter:
{lines}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


def telegram_bot(bot_id: str, token: str, base_url: str) -> str:
    """An ``echo_bot`` polling ``base_url`` (callboard.testing.fake_telegram), without
    Telegram's outbound limits."""
    adapter = (
        f'type: telegram\ntoken: "{token}"\nbase_url: "{base_url}"\npoll_timeout: 1\nrequest_timeout: 5\n'
    )
    return echo_bot(bot_id, adapter + RATE_LIMITS_OFF)


class Node:
    """One engine process: ``start``, ``kill`` (-9), ``stop`` (TERM)."""

    def __init__(self, name: str, config: Path, port: int, log: Path) -> None:
        self.name = name
        self.config = config
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, root: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callboard.cli", "--log-level", "INFO", "run", str(self.config)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 - the node writes to it while it runs
        )

    async def ready(self, timeout: float = 60) -> None:
        """Until the node answers ``/readyz``."""
        await wait_ready(f"{self.base}/readyz", timeout=timeout)

    def kill(self) -> float:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        at = time.monotonic()
        self.process.wait()
        return at

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def cluster(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.base}/api/cluster") as response:
            response.raise_for_status()
            data: dict[str, Any] = await response.json()
            return data


def write_config(
    directory: Path,
    name: str,
    *,
    url: str | list[str],
    nats: str,
    port: int,
    web: str,
    partitions: int = 16,
    lease: str = "2s",
    bots: str = "",
) -> Path:
    """A node's fleet file: the web chat bot ``demo`` and ``bots`` (YAML list items);
    ``url``: the journal's database, or a list of them (shards)."""
    path = directory / f"{name}.yaml"
    path.write_text(
        FLEET.format(
            url=json.dumps(url),  # YAML reads JSON
            path=directory / "var" / "journal.sqlite3",  # the per-fleet secrets, shared by the nodes here
            port=port,
            nats=nats,
            node=name,
            partitions=partitions,
            lease=lease,
            web=web,
            bots=bots,
        )
    )
    return path


def make_nodes(
    directory: Path,
    count: int,
    *,
    url: str | list[str],
    nats: str | list[str],
    web: str,
    partitions: int = 16,
    bots: str = "",
) -> list[Node]:
    """``count`` nodes ``n0``, ``n1``… on free ports, their fleet files (``write_config``)
    and logs in ``directory``; ``nats``: one URL for all, or one a node (one behind a
    ``TcpProxy``)."""
    (directory / "var").mkdir(parents=True, exist_ok=True)
    urls = [nats] * count if isinstance(nats, str) else nats
    assert len(urls) == count, "one NATS URL a node"
    nodes = []
    for i, nats_url in enumerate(urls):
        port = free_port()
        config = write_config(
            directory, f"n{i}", url=url, nats=nats_url, port=port, web=web, partitions=partitions, bots=bots
        )
        nodes.append(Node(f"n{i}", config, port, directory / f"n{i}.log"))
    return nodes


async def start_all(nodes: list[Node], root: Path) -> None:
    """Start every node, then wait until each is ready (they boot side by side)."""
    for node in nodes:
        node.start(root)
    for node in nodes:
        await node.ready()


async def connection_owners(nodes: list[Node], key: str) -> dict[str, bool]:
    """Which live nodes say they hold (and run) connection ``key`` now."""
    held = {}
    for node in nodes:
        if node.process is None or node.process.poll() is not None:
            continue
        try:
            state = (await node.cluster())["connections"].get(key, {})
        except (aiohttp.ClientError, OSError):
            continue
        held[node.name] = bool(state.get("here"))
    return held


async def balanced(nodes: list[Node], partitions: int, timeout: float = 30.0) -> dict[str, int]:
    """Wait until the live nodes own every partition between them, each some."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {}
        for node in nodes:
            try:
                counts[node.name] = len((await node.cluster())["owned"])
            except (aiohttp.ClientError, OSError):
                counts[node.name] = 0
        if sum(counts.values()) == partitions and all(counts.values()):
            return counts
        await asyncio.sleep(0.2)
    raise TimeoutError(f"partitions not spread over the nodes within {timeout}s: {counts}")


class TcpProxy:
    """TCP between a node and NATS that the test can cut (closes every connection and
    refuses new ones, as a network partition does)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0  # chosen at start
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers.clear()
