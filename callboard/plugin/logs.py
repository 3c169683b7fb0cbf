"""Runner side of plugin logging: records go to the host in batches.

``emit`` never blocks and never waits on the socket: it appends to a bounded
buffer (the oldest record is dropped when it is full, and the drops are
counted and reported), and a flush task sends a batch when the buffer reaches
``batch`` records or every ``interval`` seconds, and everything left on stop.
When the link is down the records go to stderr, which the host also reads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import time
from typing import Any

from callboard.engine.plugin_protocol import Action, Link, LinkClosed

_FORMATTER = logging.Formatter()


class ForwardingLogHandler(logging.Handler):
    def __init__(self, *, queue: int = 1000, batch: int = 100, interval: float = 0.2) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.buffer: collections.deque[dict[str, Any]] = collections.deque(maxlen=queue)
        self.batch = batch
        self.interval = interval
        self.dropped = 0
        #: config values the plugins declared secret (SecretStr): masked before a record leaves
        self.secrets: set[str] = set()
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, link: Link) -> None:
        self._link = link
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._flush_loop())

    async def stop(self) -> None:
        """Stop the flush task and send what is left (stderr if the link is gone)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self.buffer or self.dropped:
            self._flush_once()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
            exc_text = ""
            if record.exc_info:
                exc_text = _FORMATTER.formatException(record.exc_info)
            self.buffer.append(
                {
                    "created": record.created,
                    "level": record.levelno,
                    "name": record.name,
                    "message": self._mask(record.getMessage()),
                    "exc": self._mask(exc_text),
                }
            )
            if len(self.buffer) >= self.batch and self._wake is not None and self._loop is not None:
                if self._loop is _running_loop():
                    self._wake.set()
                else:
                    self._loop.call_soon_threadsafe(self._wake.set)
        except Exception:
            self.handleError(record)

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    async def _flush_loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            while self.buffer or self.dropped:
                self._flush_once()
                link = self._link
                if link is not None and not link.closed:
                    with contextlib.suppress(LinkClosed):
                        await link.drain()  # the socket's pace bounds a flood; the buffer drops the rest
                await asyncio.sleep(0)

    def _flush_once(self) -> None:
        entries = [self.buffer.popleft() for _ in range(min(self.batch, len(self.buffer)))]
        dropped, self.dropped = self.dropped, 0
        link = self._link
        if link is not None and not link.closed:
            try:
                link.notify(Action.LOG_BATCH, {"entries": entries, "dropped": dropped})
                return
            except (LinkClosed, RuntimeError):
                pass
        for entry in entries:
            stamp = time.strftime("%H:%M:%S", time.localtime(entry["created"]))
            print(
                f"{stamp} {logging.getLevelName(entry['level'])} {entry['name']}: {entry['message']}",
                file=sys.stderr,
            )
        if dropped:
            print(f"({dropped} log records dropped: the buffer was full)", file=sys.stderr)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
