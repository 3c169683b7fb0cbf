"""The stdio transport over an attachment (``attached_stdio``), with a stand-in attachment: what
the process wrote before the client's first message (kept in its output ring for nobody: an
earlier session's late answer, cut by the ring) never reaches the new session. The real managed
process is in ``tests/sandbox/test_mcp_real.py``."""

from __future__ import annotations

import asyncio

import anyio
import mcp_types
import pytest
from mcp.shared.message import SessionMessage

from callboard.handlers.agent.mcp import attached_stdio

pytestmark = pytest.mark.timeout(10)


class Backlogged:
    """An attachment whose process already wrote ``backlog``; it answers each line it is sent."""

    def __init__(self, backlog: bytes) -> None:
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.chunks.put_nowait(backlog)
        self.dropped = 1000
        self.closed = False

    async def write(self, data: bytes) -> None:
        request = mcp_types.jsonrpc_message_adapter.validate_json(data.strip(), by_name=False)
        answer = f'{{"jsonrpc": "2.0", "id": {request.id}, "result": {{"fresh": true}}}}\n'
        self.chunks.put_nowait(answer.encode())

    async def read(self) -> bytes:
        return await self.chunks.get()

    async def close(self) -> None:
        self.closed = True


async def test_output_from_before_the_first_request_is_dropped() -> None:
    stale = b'":1}}\n{"jsonrpc": "2.0", "id": 0, "result": {"stale": true}}\n'  # cut, then a late answer
    attachment = Backlogged(stale)
    ended: list[bool] = []
    async with attached_stdio(attachment, lambda: ended.append(True)) as (read_stream, write_stream):
        await anyio.sleep(0.05)  # the backlog is read first
        request = mcp_types.JSONRPCRequest(jsonrpc="2.0", id=0, method="ping")
        await write_stream.send(SessionMessage(request))
        with anyio.fail_after(5):
            received = await read_stream.receive()
    assert isinstance(received, SessionMessage)
    assert received.message.model_dump()["result"] == {"fresh": True}
    assert attachment.closed and ended == [True]
