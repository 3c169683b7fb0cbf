"""MCP servers' tools for one agent run, through the official ``mcp`` client.

For each server of ``tools.mcp`` the run opens one ``ClientSession``, lists the server's tools
and offers them to the model as ``mcp_<server>_<tool>``; the sessions close when the run ends.

- **stdio** servers run as managed processes in the bot's sandbox (``SandboxProcesses``;
  process id ``mcp-<server>``, started on first use and kept running between runs, restarted
  by its policy), and the client talks to them over the attached stdin/stdout. There is no
  host fallback: without a sandbox a stdio server is refused. Starting one is running a
  command, so the bot's ``exec`` policy applies.
- **URL** servers (streamable HTTP or SSE) work with or without a sandbox.

A server that cannot be reached is left out of the run with a warning; the run goes on.
Each call has the server's ``timeout`` as its deadline, and the result goes through the
toolbox, which truncates it like every other tool's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import anyio
import mcp_types
import orjson
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.message import SessionMessage

from callboard.engine.sandbox_api import NoSandbox, SandboxError, SandboxOff
from callboard.engine.sandbox_processes import Attachment, ProcessArgs, SandboxProcesses
from callboard.handlers.agent.config import McpServerConfig
from callboard.handlers.agent.tools import Toolbox
from callboard.handlers.context import HandlerContext

Streams = tuple[Any, Any]
#: (tool, status, duration, bytes in, bytes out) -> None: one audit row
Audit = Callable[[str, str, float, int, int], None]
#: what an OpenAI function name may not contain (MCP tool names may have dots and slashes)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def process_id(server: McpServerConfig) -> str:
    return f"mcp-{server.name}"


@contextlib.asynccontextmanager
async def attached_stdio(attachment: Attachment) -> AsyncIterator[Streams]:
    """The MCP stdio transport (newline-delimited JSON-RPC) over a managed process's
    attached stdin/stdout, as the SDK's own ``stdio_client`` does over pipes."""
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def reader() -> None:
        buffer = b""
        async with read_writer:
            while chunk := await attachment.read():
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        message: SessionMessage | Exception = SessionMessage(
                            mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                        )
                    except ValueError as error:
                        message = error
                    await read_writer.send(message)

    async def writer() -> None:
        async with write_reader:
            async for outgoing in write_reader:
                data = outgoing.message.model_dump_json(by_alias=True, exclude_unset=True)
                await attachment.write(data.encode() + b"\n")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(reader)
        tasks.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            await attachment.close()
            tasks.cancel_scope.cancel()


class McpTools:
    """Opens the configured servers for one run (``async with``) and adds their tools."""

    def __init__(self, ctx: HandlerContext, servers: list[McpServerConfig], toolbox: Toolbox) -> None:
        self.ctx = ctx
        self.servers = servers
        self.toolbox = toolbox
        self._stack = contextlib.AsyncExitStack()
        #: why a server's tools are missing from this run, by server name
        self.unavailable: dict[str, str] = {}

    async def __aenter__(self) -> McpTools:
        await self._stack.__aenter__()
        for server in self.servers:
            try:
                await self._open(server)
            except Exception as error:  # one server down must not stop the run
                reason = f"{error.code}: {error}" if isinstance(error, SandboxError) else repr(error)[:300]
                self.unavailable[server.name] = reason
                self.ctx.log.warning("agent: MCP server %s unavailable: %s", server.name, reason)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    async def _open(self, server: McpServerConfig) -> None:
        streams = await self._stack.enter_async_context(self._transport(server))
        session = await self._stack.enter_async_context(ClientSession(*streams))
        await asyncio.wait_for(session.initialize(), server.timeout)
        listed = await asyncio.wait_for(session.list_tools(), server.timeout)
        wanted = set(server.tools) if server.tools is not None else None
        for tool in listed.tools:
            if wanted is not None and tool.name not in wanted:
                continue
            name = _UNSAFE.sub("_", f"mcp_{server.name}_{tool.name}")[:64]  # function names allow less
            if name in self.toolbox.calls:
                self.ctx.log.warning(
                    "agent: MCP tool %s of %s skipped: its name is taken", tool.name, server.name
                )
                continue
            description = (tool.description or tool.name).strip().splitlines()[0][:500]
            parameters = tool.input_schema or {"type": "object"}
            audit = self._audit(server)
            self.toolbox.add_tool(name, description, parameters, _caller(session, server, tool.name, audit))

    def _audit(self, server: McpServerConfig) -> Audit | None:
        """Where a stdio server's calls are audited: the sandbox's audit log."""
        sandbox = self.ctx.sandbox
        if server.command is None or not isinstance(sandbox, SandboxProcesses):
            return None
        return partial(sandbox.record_call, process_id(server))

    def _transport(self, server: McpServerConfig) -> contextlib.AbstractAsyncContextManager[Streams]:
        if server.url is not None:
            headers = {key: value.get_secret_value() for key, value in server.headers.items()}
            if server.transport == "sse":
                return sse_client(server.url, headers=headers or None)
            return _http(server.url, headers)
        return self._stdio(server)

    @contextlib.asynccontextmanager
    async def _stdio(self, server: McpServerConfig) -> AsyncIterator[Streams]:
        sandbox = self.ctx.sandbox
        if not isinstance(sandbox, SandboxProcesses):
            reason = sandbox.error if isinstance(sandbox, NoSandbox) else "this bot has no sandbox"
            raise SandboxOff(
                f"stdio MCP server {server.name!r} refused ({reason}); stdio servers never run on the host"
            )
        assert server.command is not None
        args = ProcessArgs(
            process_id=process_id(server),
            argv=list(server.command),
            env={key: value.get_secret_value() for key, value in server.env.items()},
            restart=server.restart,
        )
        await sandbox.start_process(args)
        attachment = await sandbox.attach(args.process_id)
        async with attached_stdio(attachment) as streams:
            yield streams


@contextlib.asynccontextmanager
async def _http(url: str, headers: dict[str, str]) -> AsyncIterator[Streams]:
    async with (
        create_mcp_http_client(headers=headers or None) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams[0], streams[1]


def _caller(session: ClientSession, server: McpServerConfig, tool: str, audit: Audit | None) -> Any:
    async def call(arguments: dict[str, Any]) -> Any:
        started = time.monotonic()
        sent = len(orjson.dumps(arguments))
        try:
            value = await _call(session, server, tool, arguments)
        except Exception as error:
            if audit is not None:
                audit(tool, type(error).__name__, time.monotonic() - started, sent, 0)
            raise
        if audit is not None:
            status = "error" if "error" in value else "ok"
            audit(tool, status, time.monotonic() - started, sent, len(orjson.dumps(value)))
        return value

    return call


async def _call(session: ClientSession, server: McpServerConfig, tool: str, arguments: dict[str, Any]) -> Any:
    try:
        result = await asyncio.wait_for(session.call_tool(tool, arguments), server.timeout)
    except TimeoutError:
        return {"error": f"MCP tool {tool} did not answer within {server.timeout:g}s"}
    if not isinstance(result, mcp_types.CallToolResult):
        return {"error": f"MCP tool {tool} asked for input, which agents cannot give"}
    texts = [
        block.text if isinstance(block, mcp_types.TextContent) else f"[{block.type}]"
        for block in result.content
    ]
    value: dict[str, Any] = {"error" if result.is_error else "content": "\n".join(texts)}
    if result.structured_content is not None:
        value["structured"] = result.structured_content
    return value
