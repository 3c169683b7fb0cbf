"""Engine nodes of one cluster as processes on this machine (tests and ``bench cluster``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

FLEET = """
name: cluster
engine:
  journal: {{url: "{url}", path: "{path}"}}
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
"""


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
    url: str,
    nats: str,
    port: int,
    web: str,
    partitions: int = 16,
    lease: str = "2s",
) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        FLEET.format(
            url=url,
            path=directory / "var" / "journal.sqlite3",  # the per-fleet secrets, shared by the nodes here
            port=port,
            nats=nats,
            node=name,
            partitions=partitions,
            lease=lease,
            web=web,
        )
    )
    return path


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
