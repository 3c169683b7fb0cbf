"""The plugin contract: how the engine and a plugin runner process talk.

Both sides import this module: the host (``handlers.plugin``, ``actors``) and
the SDK a plugin author uses (``callboard.plugin``), which never needs the rest
of the engine running. A frame is a 4-byte big-endian length and an orjson
object. A request is ``{action, seq_id, data}``; its answer is ``{seq_id,
code, message, data}``; a request with ``seq_id`` 0 is a notification and gets
no answer. Each side numbers its own requests, so a frame with ``action`` is a
request to the reader and a frame without one answers the reader's request.

    host                                runner
    ---- spawn (token in the environment) ---->
    <--- hello {token, pid, protocol} ---------
    ---- ok {plugins: [...]} ----------------->   loads the plugins
    <--- ready {plugins: [listeners...]} ------
    ---- emit_event / health / reload / config_updated / shutdown -->
    <--- call {ctx, api, args} / log_batch ----
"""

from __future__ import annotations

import asyncio
import enum
import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from callboard.engine.platform import COMMON_APIS
from callboard.engine.sandbox_api import TOOL_NAMES

PROTOCOL_VERSION: Final = 1
#: a frame larger than this is refused and the link closed: a runner cannot make the host buffer without bound
MAX_FRAME: Final = 16 * 1024 * 1024

#: environment variables the host sets for a runner it spawns
ENV_SOCKET: Final = "CALLBOARD_PLUGIN_SOCKET"
ENV_TOKEN: Final = "CALLBOARD_PLUGIN_TOKEN"
#: or, for a runner in a container, a file holding the token (not in the container's inspectable env)
ENV_TOKEN_FILE: Final = "CALLBOARD_PLUGIN_TOKEN_FILE"
ENV_RUNNER: Final = "CALLBOARD_PLUGIN_RUNNER"
ENV_PARENT: Final = "CALLBOARD_PLUGIN_PARENT"
ENV_MEMORY: Final = "CALLBOARD_PLUGIN_MEMORY"
#: a runner that ran out of its memory limit exits with this code
EXIT_OUT_OF_MEMORY: Final = 86


class Action(enum.StrEnum):
    # runner -> host
    HELLO = "hello"
    READY = "ready"
    CALL = "call"
    LOG_BATCH = "log_batch"
    # host -> runner
    EMIT_EVENT = "emit_event"
    HEALTH = "health"
    RELOAD = "reload"
    CONFIG_UPDATED = "config_updated"
    PREPARE_SHUTDOWN = "prepare_shutdown"
    SHUTDOWN = "shutdown"


class Code(enum.IntEnum):
    """Answer codes; 0 is success (message "ok"), the rest follow HTTP's meaning."""

    OK = 0
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    NOT_DECLARED = 403  # a capability the plugin's manifest does not declare
    UNKNOWN = 404  # unknown action, plugin or dispatch
    TIMEOUT = 408
    FAILED = 500
    NOT_SUPPORTED = 501  # the bot's platform does not implement the API
    UNAVAILABLE = 503


class RemoteError(Exception):
    """The other side answered a request with a non-zero code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


# ---------------------------------------------------------------------- frames


_LENGTH = struct.Struct(">I")


def encode_frame(obj: dict[str, Any]) -> bytes:
    body = orjson.dumps(obj)
    return _LENGTH.pack(len(body)) + body


def request(action: str, seq_id: int, data: dict[str, Any]) -> bytes:
    return encode_frame({"action": action, "seq_id": seq_id, "data": data})


def answer(seq_id: int, data: Any = None, code: int = Code.OK, message: str = "ok") -> bytes:
    return encode_frame({"seq_id": seq_id, "code": int(code), "message": message, "data": data})


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol."""


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> dict[str, Any]:
    """The next frame; raises ``asyncio.IncompleteReadError`` at end of stream."""
    (length,) = _LENGTH.unpack(await reader.readexactly(4))
    if length > limit:
        raise FrameError(f"frame of {length} bytes is over the {limit}-byte limit")
    try:
        frame = orjson.loads(await reader.readexactly(length))
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"frame is not JSON: {exc}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("seq_id"), int):
        raise FrameError("frame is not an object with an integer seq_id")
    return frame


# ---------------------------------------------------------------------- manifest

#: what a manifest may declare besides platform API names: ``send`` (ctx.reply,
#: ctx.send and api.send_message / reply_message, all through the bot's outbound
#: path), ``state`` (per-session state), ``call_platform_api``, and the sandbox
#: tools as ``sandbox:<tool>`` (the session's sandbox, under the bot's policy)
EXTRA_CAPABILITIES: Final = ("send", "state", "call_platform_api", *(f"sandbox:{t}" for t in TOOL_NAMES))
CAPABILITIES: Final = frozenset(COMMON_APIS) - {"send_message", "reply_message"} | frozenset(
    EXTRA_CAPABILITIES
)
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class PluginManifest(BaseModel):
    """A plugin's ``plugin.yaml``: who it is and what it may do.

    The host reads it from the plugin's folder without running plugin code, so
    what a plugin may call is never taken from the plugin process's word.
    The events a plugin listens to are derived from its listeners when it loads.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="lower-case letters, digits, '-' and '_'; unique in the fleet")
    version: str = "0.1.0"
    description: str = ""
    entry: str = Field(description="'module:Class', the module relative to the plugin's folder")
    capabilities: list[str] = Field(
        default_factory=list,
        description="what the plugin may do: 'send', 'state', 'call_platform_api' and platform API names",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a plugin name is 1-64 lower-case letters, digits, '-' or '_'")
        return value

    @field_validator("entry")
    @classmethod
    def _entry(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if not module or not attr or not all(p.isidentifier() for p in [*module.split("."), attr]):
            raise ValueError("entry is 'module:Class', e.g. 'plugin:KeywordReply'")
        return value

    @field_validator("capabilities")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capabilities {unknown}; known: {sorted(CAPABILITIES)}")
        return value


class ListenerInfo(BaseModel):
    """One listener as the runner registers it."""

    id: str
    events: list[str]
    priority: int = 0
    command: str | None = None
    idempotent: bool = False


def command_args(command: str, text: str, prefix: str = "/") -> str | None:
    """The arguments when ``text`` invokes ``command`` ("/weather Paris" -> "Paris"), else None.

    "/weather@MyBot Paris" (a command addressed to one bot in a group) counts too.
    """
    if not text.startswith(prefix):
        return None
    head, _, rest = text[len(prefix) :].partition(" ")
    return rest.strip() if head.split("@", 1)[0].lower() == command.lower() else None


# ---------------------------------------------------------------------- the link


class LinkClosed(ConnectionError):
    """The link to the other side is gone (the process exited or the socket closed)."""


RequestHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Link:
    """One side of a connection: numbered requests with deadlines, answers
    matched by ``seq_id``, and the other side's requests served concurrently
    (each in its own task; notifications in order, inline)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_request: RequestHandler,
        *,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_request = on_request
        self._max_frame = max_frame
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.close_reason = ""

    async def call(self, action: str, data: dict[str, Any], timeout: float) -> Any:
        """Send a request and wait at most ``timeout`` seconds for its answer's data."""
        if self.closed:
            raise LinkClosed(self.close_reason or "link closed")
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            self._writer.write(request(action, seq, data))
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                return await future
        except (ConnectionError, RuntimeError) as exc:
            raise LinkClosed(f"{action}: {exc}") from None
        finally:
            self._pending.pop(seq, None)

    def notify(self, action: str, data: dict[str, Any]) -> None:
        """A request without an answer (log batches)."""
        if self.closed:
            raise LinkClosed(self.close_reason or "link closed")
        self._writer.write(request(action, 0, data))

    async def drain(self) -> None:
        """Wait until what was written has gone to the socket (backpressure for notifications)."""
        if self.closed:
            raise LinkClosed(self.close_reason or "link closed")
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise LinkClosed(str(exc)) from None

    async def run(self) -> None:
        """Read frames until the other side goes; then fail every pending call."""
        try:
            while True:
                frame = await read_frame(self._reader, self._max_frame)
                action = frame.get("action")
                if action is None:
                    self._resolve(frame)
                elif frame["seq_id"] == 0:
                    await self._serve(str(action), frame.get("data") or {}, 0)
                else:
                    task = asyncio.ensure_future(
                        self._serve(str(action), frame.get("data") or {}, frame["seq_id"])
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close_reason = self.close_reason or f"connection closed ({type(exc).__name__})"
        except FrameError as exc:
            self.close_reason = f"protocol error: {exc}"
        finally:
            self.close()

    def _resolve(self, frame: dict[str, Any]) -> None:
        future = self._pending.get(frame["seq_id"])
        if future is None or future.done():
            return  # answered after its deadline: the caller has moved on
        code = frame.get("code", Code.FAILED)
        if code == Code.OK:
            future.set_result(frame.get("data"))
        else:
            future.set_exception(RemoteError(int(code), str(frame.get("message", ""))))

    async def _serve(self, action: str, data: dict[str, Any], seq: int) -> None:
        try:
            result = await self._on_request(action, data)
        except RemoteError as exc:
            reply = answer(seq, None, exc.code, exc.message)
        except Exception as exc:
            reply = answer(seq, None, Code.FAILED, f"{type(exc).__name__}: {exc}"[:2000])
        else:
            reply = answer(seq, result)
        if seq and not self.closed:
            self._writer.write(reply)

    def close(self, reason: str = "") -> None:
        if reason and not self.close_reason:
            self.close_reason = reason
        if self.closed:
            return
        self.closed = True
        error = LinkClosed(self.close_reason or "link closed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        for task in list(self._tasks):
            task.cancel()
        self._writer.close()
