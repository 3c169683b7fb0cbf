"""WebClient: one websocket's outgoing side.

Frames are queued and written by one flush, a loop callback scheduled by the first
frame queued; everything queued by the time it runs (the acks of a group commit, the
replies of a loop turn) goes out as ONE socket write: the websocket frames are encoded
here (server frames are unmasked and, with compression off, trivial) and handed to the
transport together. A callback rather than a writer task, as it runs once or twice per
handled event; only when the transport holds unsent bytes does a task wait for it to
drain before the next write. A client that falls ``limit`` frames behind is dropped; it
reconnects and subscribes with ``since`` to catch up.
"""

from __future__ import annotations

import asyncio
import logging
import struct

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from callboard.adapters.web.identity import Identity
from callboard.adapters.web.limits import TokenBucket

log = logging.getLogger("callboard.web")

_TEXT = 0x81  # FIN + text opcode
#: the headers of frames under 126 bytes (most acks), built once
_SHORT_HEADERS = tuple(bytes((_TEXT, size)) for size in range(126))
_MEDIUM_HEADER = struct.Struct("!BBH").pack


def ws_text_header(size: int) -> bytes:
    """The header of one unmasked, uncompressed websocket text frame of ``size`` bytes
    (RFC 6455 section 5.2); the payload follows it unchanged."""
    if size < 126:
        return _SHORT_HEADERS[size]
    if size < 65536:
        return _MEDIUM_HEADER(_TEXT, 126, size)
    return struct.pack("!BBQ", _TEXT, 127, size)


class WebClient:
    """One connection: who it is, what it is subscribed to, and its writer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        stream: AbstractStreamWriter,
        identity: Identity,
        limit: int,
        rate: TokenBucket,
        user_rate: TokenBucket,
    ) -> None:
        self.ws = ws
        self.stream = stream
        self.identity = identity
        self.limit = limit
        self.rate = rate
        self.user_rate = user_rate
        self.chats: set[str] = set()
        self.sent: dict[str, int] = {}  # newest stored seq sent, per chat
        self.backfilling: dict[str, list[tuple[int, bytes]]] = {}
        self.writes = 0  # socket writes made (each carries one or more frames)
        self.frames = 0
        self._queue: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        #: waits for the transport to drain; no write is made meanwhile
        self._draining: asyncio.Task[None] | None = None
        self._stopped = False  # closed, or the socket went away: nothing is written any more
        self._dropped = False
        self.closing: asyncio.Future[bool] | None = None

    def push(self, data: bytes) -> None:
        if self._dropped:
            return
        if len(self._queue) >= self.limit:
            self._dropped = True
            log.warning("web client too slow; closing its connection")
            self.closing = asyncio.ensure_future(self.ws.close(message=b"send queue full"))
            return
        self._queue.append(data)
        if not self._flush_scheduled and self._draining is None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def deliver(self, chat: str, seq: int, data: bytes) -> None:
        """A stored frame for ``chat``: sent once, in seq order, even when the
        backlog read during a subscribe already had it."""
        pending = self.backfilling.get(chat)
        if pending is not None:
            pending.append((seq, data))
        elif seq > self.sent.get(chat, 0):
            self.sent[chat] = seq
            self.push(data)

    def _flush(self) -> None:
        """Write every queued frame in one socket write."""
        self._flush_scheduled = False
        if self._stopped or self._draining is not None or not self._queue:
            return
        transport = self.stream.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            self._stopped = True
            return
        batch, self._queue = self._queue, []
        chunks: list[bytes] = []
        for data in batch:  # headers and payloads joined once, not each frame copied first
            chunks.append(ws_text_header(len(data)))
            chunks.append(data)
        transport.write(b"".join(chunks))
        self.writes += 1
        self.frames += len(batch)
        if transport.get_write_buffer_size():  # the socket did not take it all
            self._draining = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self.stream.drain()
        except (ConnectionError, RuntimeError):
            self._stopped = True
            return
        finally:
            self._draining = None
        self._flush()

    async def close(self) -> None:
        self._stopped = True
        draining = self._draining
        if draining is not None:
            draining.cancel()
            await asyncio.gather(draining, return_exceptions=True)
