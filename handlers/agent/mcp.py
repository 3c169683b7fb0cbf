"""MCP servers' tools for agent runs, through the official ``mcp`` client.

For each server of ``tools.mcp`` a run offers the server's tools to the model as
``mcp_<server>_<tool>``. The initialised ``ClientSession`` behind them outlives the run: an
``McpPool`` (one per agent handler) keeps it, keyed by the sandbox's scope and the server
(stdio) or the bot and the server (URL), so the next run of that chat pays neither the
attach nor ``initialize`` and ``tools/list``. A pooled session is closed when its transport
ends (the sandbox went away, the server restarted: the next use reconnects), after
``IDLE_CLOSE`` unused, and when the handler closes (its bot stops).

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
from mcp.shared.exceptions import MCPError
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
#: a pooled session unused this long is closed (a stdio server keeps running)
IDLE_CLOSE = 300.0
#: how long closing a pooled session may take
CLOSE_TIMEOUT = 5.0


def process_id(server: McpServerConfig) -> str:
    return f"mcp-{server.name}"


@contextlib.asynccontextmanager
async def attached_stdio(
    attachment: Attachment, on_end: Callable[[], None] | None = None
) -> AsyncIterator[Streams]:
    """The MCP stdio transport (newline-delimited JSON-RPC) over a managed process's
    attached stdin/stdout, as the SDK's own ``stdio_client`` does over pipes. ``on_end`` is
    called when the process's output ends (it exited or restarted, or the sandbox went)."""
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    spoke = anyio.Event()

    async def reader() -> None:
        buffer = b""
        try:
            async with read_writer:
                while chunk := await attachment.read():
                    if not spoke.is_set():
                        # The client speaks first in MCP: output from before our first message
                        # was kept for nobody (an earlier session's late answers, perhaps cut).
                        continue
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
        finally:
            if on_end is not None:
                on_end()

    async def writer() -> None:
        async with write_reader:
            async for outgoing in write_reader:
                data = outgoing.message.model_dump_json(by_alias=True, exclude_unset=True)
                spoke.set()
                await attachment.write(data.encode() + b"\n")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(reader)
        tasks.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            await attachment.close()
            tasks.cancel_scope.cancel()


#: opens a server's transport; its argument is called if the transport ends on its own
Opener = Callable[[Callable[[], None]], contextlib.AbstractAsyncContextManager[Streams]]


class McpConnection:
    """One initialised ``ClientSession``, held open by a task of its own (the SDK's task
    groups must be left by the task that entered them) until closed, idle or lost."""

    def __init__(self, server: McpServerConfig, opener: Opener, idle: float) -> None:
        self.server = server
        self._opener = opener
        self._idle = idle
        self._session: ClientSession | None = None
        self.tools: list[mcp_types.Tool] = []
        self._open = False
        self._done = asyncio.Event()
        self._calls = 0
        self._used = 0.0
        self._ready: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def opened(cls, server: McpServerConfig, opener: Opener, idle: float = IDLE_CLOSE) -> McpConnection:
        """A new connection, open (outside any pool: the caller closes it)."""
        connection = cls(server, opener, idle)
        connection.start()
        await connection.wait_open()
        return connection

    def start(self) -> None:
        """Start connecting: ``initialize`` and ``tools/list`` on the holding task."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._ready.add_done_callback(_retrieved)
        self._used = loop.time()
        self._task = asyncio.create_task(self._hold(self._ready), name=f"mcp-{self.server.name}")

    async def wait_open(self) -> None:
        """Until open; raises what went wrong. A cancelled waiter leaves the connecting going
        (its pool closes it)."""
        assert self._ready is not None
        await asyncio.shield(self._ready)

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        timeout = self.server.timeout
        try:
            async with self._opener(self._done.set) as streams, ClientSession(*streams) as session:
                await asyncio.wait_for(session.initialize(), timeout)
                listed = await asyncio.wait_for(session.list_tools(), timeout)
                self._session, self.tools, self._open = session, list(listed.tools), True
                ready.set_result(None)
                await self._until_done()
        except Exception as error:
            if not ready.done():
                ready.set_exception(error)
        finally:
            self._open = False
            if not ready.done():
                ready.set_exception(ConnectionError(f"MCP server {self.server.name} closed while connecting"))

    async def _until_done(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._done.is_set():
            remaining = self._used + self._idle - loop.time()
            if remaining <= 0 and not self._calls:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), max(remaining, 1.0))

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        loop = asyncio.get_running_loop()
        self._calls += 1
        try:
            return await _call(self._session, self.server, tool, arguments)
        except MCPError as error:
            if error.code != mcp_types.CONNECTION_CLOSED:
                raise
            self._done.set()  # the next use reconnects
            return {
                "error": f"MCP server {self.server.name} went away during the call; it reconnects next time"
            }
        finally:
            self._calls -= 1
            self._used = loop.time()

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the session has ended (closed, idle or lost)."""
        assert self._task is not None
        self._task.add_done_callback(lambda _: callback())

    @property
    def alive(self) -> bool:
        """Initialised, and neither closed nor lost (a lost transport sets ``_done`` at once)."""
        return self._open and not self._done.is_set()

    async def close(self) -> None:
        self._done.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT)
            if not self._task.done():
                self._task.cancel()


class McpPool:
    """The agent handler's MCP sessions across runs, one per key (see the module docstring)."""

    def __init__(self, idle: float = IDLE_CLOSE) -> None:
        self.idle = idle
        self._connections: dict[tuple[str, ...], McpConnection] = {}
        #: one connecting at a time per key; the lock and how many callers want it
        self._locks: dict[tuple[str, ...], tuple[asyncio.Lock, int]] = {}

    async def connect(self, key: tuple[str, ...], server: McpServerConfig, opener: Opener) -> McpConnection:
        """The live session of ``key``, or a new one (one opener at a time per key)."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                connection = self._connections.get(key)
                if connection is not None and connection.alive:
                    return connection
                if connection is not None:
                    await connection.close()
                connection = McpConnection(server, opener, self.idle)
                connection.start()  # pooled before it is open: a cancelled run's connect is not lost
                self._connections[key] = connection
                connection.on_end(partial(self._forget, key, connection))
                await connection.wait_open()
                return connection
        finally:
            lock, users = self._locks[key]
            if users > 1:
                self._locks[key] = (lock, users - 1)
            else:
                del self._locks[key]

    def _forget(self, key: tuple[str, ...], connection: McpConnection) -> None:
        """A session that ended (closed, idle, lost) leaves the pool."""
        if self._connections.get(key) is connection:
            del self._connections[key]

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(connection.close() for connection in connections))


class McpTools:
    """Adds the configured servers' tools to one run's toolbox, through the handler's pool."""

    def __init__(
        self, ctx: HandlerContext, servers: list[McpServerConfig], toolbox: Toolbox, pool: McpPool
    ) -> None:
        self.ctx = ctx
        self.servers = servers
        self.toolbox = toolbox
        self.pool = pool
        #: why a server's tools are missing from this run, by server name
        self.unavailable: dict[str, str] = {}

    async def add(self) -> None:
        for server in self.servers:
            try:
                await self._add(server)
            except Exception as error:  # one server down must not stop the run
                reason = f"{error.code}: {error}" if isinstance(error, SandboxError) else repr(error)[:300]
                self.unavailable[server.name] = reason
                self.ctx.log.warning("agent: MCP server %s unavailable: %s", server.name, reason)

    async def _add(self, server: McpServerConfig) -> None:
        connection = await self._connect(server)
        wanted = set(server.tools) if server.tools is not None else None
        audit = self._audit(server)
        for tool in connection.tools:
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
            self.toolbox.add_tool(name, description, parameters, self._caller(server, tool.name, audit))

    async def _connect(self, server: McpServerConfig) -> McpConnection:
        """The pooled session (reconnected when it was lost since the last use)."""
        if server.url is not None:
            return await self.pool.connect(("url", self.ctx.bot_id, server.name), server, http_opener(server))
        sandbox = self.ctx.sandbox
        if not isinstance(sandbox, SandboxProcesses):
            reason = sandbox.error if isinstance(sandbox, NoSandbox) else "this bot has no sandbox"
            raise SandboxOff(
                f"stdio MCP server {server.name!r} refused ({reason}); stdio servers never run on the host"
            )
        return await self.pool.connect(
            ("stdio", sandbox.key, server.name), server, stdio_opener(sandbox, server)
        )

    def _audit(self, server: McpServerConfig) -> Audit | None:
        """Where a stdio server's calls are audited: the sandbox's audit log."""
        sandbox = self.ctx.sandbox
        if server.command is None or not isinstance(sandbox, SandboxProcesses):
            return None
        return partial(sandbox.record_call, process_id(server))

    def _caller(self, server: McpServerConfig, tool: str, audit: Audit | None) -> Any:
        async def call(arguments: dict[str, Any]) -> Any:
            started = time.monotonic()
            sent = len(orjson.dumps(arguments))
            try:
                connection = await self._connect(server)
                value = await connection.call(tool, arguments)
            except Exception as error:
                if audit is not None:
                    audit(tool, type(error).__name__, time.monotonic() - started, sent, 0)
                raise
            if audit is not None:
                status = "error" if "error" in value else "ok"
                audit(tool, status, time.monotonic() - started, sent, len(orjson.dumps(value)))
            return value

        return call


def _retrieved(future: asyncio.Future[None]) -> None:
    """A connect nobody waits for any more must not log "exception never retrieved"."""
    if not future.cancelled():
        future.exception()


def http_opener(server: McpServerConfig) -> Opener:
    """Opens a URL server's transport (streamable HTTP or SSE)."""
    assert server.url is not None
    url = server.url
    headers = {key: value.get_secret_value() for key, value in server.headers.items()}

    def open_http(on_end: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[Streams]:
        if server.transport == "sse":
            return sse_client(url, headers=headers or None)
        return _http(url, headers)

    return open_http


def stdio_opener(sandbox: SandboxProcesses, server: McpServerConfig) -> Opener:
    """Starts a stdio server as a managed process in ``sandbox`` (or finds it running) and
    attaches to it."""
    assert server.command is not None
    args = ProcessArgs(
        process_id=process_id(server),
        argv=list(server.command),
        env={key: value.get_secret_value() for key, value in server.env.items()},
        restart=server.restart,
    )

    @contextlib.asynccontextmanager
    async def open_stdio(on_end: Callable[[], None]) -> AsyncIterator[Streams]:
        await sandbox.start_process(args)
        attachment = await sandbox.attach(args.process_id)
        async with attached_stdio(attachment, on_end) as streams:
            yield streams

    return open_stdio


@contextlib.asynccontextmanager
async def _http(url: str, headers: dict[str, str]) -> AsyncIterator[Streams]:
    async with (
        create_mcp_http_client(headers=headers or None) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams[0], streams[1]


async def _call(
    session: ClientSession, server: McpServerConfig, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
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
