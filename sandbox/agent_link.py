"""The engine's end of a sandbox's resident agent (``sandbox/agent.py``).

One exec starts the agent when a session first needs it; its attached stream stays open, and
each command or file operation is one request frame and its answer frames. The agent
enforces each deadline inside the container (killing only the command's process group); this
side waits a little longer and, if the agent itself stops answering, drops it: the caller
falls back to killing from outside and the next call starts a fresh agent.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from callboard.sandbox.output import StreamCapture
from callboard.sandbox.stream import ExecStream, raw_socket

AGENT_SOURCE = Path(__file__).with_name("agent.py").read_text()
_LENGTHS = struct.Struct(">II")
#: how long a new agent may take to say it is ready (a cold python3 start in a busy container)
READY_TIMEOUT = 15.0
#: how much longer than the agent's own deadline (plus its kill grace) this side waits
ANSWER_SLACK = 10.0


class AgentGone(Exception):
    """The agent's stream ended or stopped answering: start a new one."""


class _Frames:
    """Collects the agent's stdout (stream 1 of the exec) and cuts it into frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next(self) -> tuple[dict[str, Any], bytes] | None:
        buffer = self.buffer
        if len(buffer) < _LENGTHS.size:
            return None
        header_size, payload_size = _LENGTHS.unpack_from(buffer)
        end = _LENGTHS.size + header_size + payload_size
        if len(buffer) < end:
            return None
        header = json.loads(bytes(buffer[_LENGTHS.size : _LENGTHS.size + header_size]))
        payload = bytes(buffer[_LENGTHS.size + header_size : end])
        del buffer[:end]
        return header, payload


class AgentLink:
    """One attached agent. Blocking; one caller at a time (the session's actor thread)."""

    def __init__(self, handle: Any, sock: socket.socket, buffered: bytes) -> None:
        self._handle = handle
        self._sock = sock
        self._frames = _Frames()
        #: the agent's own stderr (its crash traces), kept small for diagnostics
        self.stderr = StreamCapture(16 * 1024)
        self._demux = ExecStream(sock, self._frames, self.stderr)
        self._demux.feed(buffered)
        self.alive = True

    @classmethod
    def attach(cls, handle: Any) -> AgentLink:
        """Wrap what ``exec_start(socket=True)`` returned and wait for the agent's hello."""
        sock, buffered = raw_socket(handle)
        link = cls(handle, sock, buffered)
        header, _ = link._receive(time.monotonic() + READY_TIMEOUT)
        if header.get("t") != "ready":
            link.close()
            raise AgentGone(f"unexpected first frame {header.get('t')!r}")
        return link

    def exec(
        self,
        argv: tuple[str, ...],
        cwd: str,
        env: Mapping[str, str],
        timeout: float,
        stdin: bytes | None,
        stdout: StreamCapture,
        stderr: StreamCapture,
        kill_grace: float,
    ) -> dict[str, Any]:
        """Run one command, feeding its output into the captures; the agent's exit frame."""
        request = {"op": "exec", "argv": list(argv), "cwd": cwd, "env": dict(env), "timeout": timeout}
        request["stdin"] = stdin is not None
        self._send(request, stdin or b"")
        deadline = time.monotonic() + timeout + kill_grace + ANSWER_SLACK
        captures = {1: stdout, 2: stderr}
        while True:
            header, payload = self._receive(deadline)
            kind = header.get("t")
            if kind == "out":
                captures[int(header["s"])].feed(payload)
            elif kind == "exit":
                return header
            else:
                raise self._gone(f"unexpected frame {kind!r} during exec")

    def file(self, name: str, request: Mapping[str, Any], payload: bytes, timeout: float) -> dict[str, Any]:
        """One workspace helper operation; ``{"timed_out": True}`` or ``{"reply": {...}}``."""
        self._send({"op": "file", "name": name, "request": dict(request), "timeout": timeout}, payload)
        header, _ = self._receive(time.monotonic() + timeout + ANSWER_SLACK)
        if header.get("t") != "file":
            raise self._gone(f"unexpected frame {header.get('t')!r} for a file operation")
        return header

    def close(self) -> None:
        """Closing the stream ends the agent (its stdin reaches EOF)."""
        self.alive = False
        response = getattr(self._handle, "_response", None)
        with contextlib.suppress(Exception):
            if response is not None:
                response.close()
        with contextlib.suppress(Exception):
            self._sock.close()

    # ------------------------------------------------------------------ transport

    def _gone(self, why: str) -> AgentGone:
        self.close()
        trace = self.stderr.text().strip()[-500:]
        return AgentGone(f"{why}: {trace}" if trace else why)

    def _send(self, header: Mapping[str, Any], payload: bytes) -> None:
        data = json.dumps(header).encode()
        view = memoryview(_LENGTHS.pack(len(data), len(payload)) + data + payload)
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + READY_TIMEOUT
            while view:
                if time.monotonic() > deadline:
                    raise self._gone("the agent stopped reading")
                try:
                    view = view[self._sock.send(view) :]
                except (BlockingIOError, InterruptedError):
                    selector.select(1.0)
                except OSError as error:
                    raise self._gone(f"the agent's stream broke ({error})") from None

    def _receive(self, deadline: float) -> tuple[dict[str, Any], bytes]:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while True:
                frame = self._frames.next()
                if frame is not None:
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._gone("the agent did not answer in time")
                if not selector.select(min(remaining, 1.0)):
                    continue
                try:
                    data = self._sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as error:
                    raise self._gone(f"the agent's stream broke ({error})") from None
                if not data:
                    raise self._gone("the agent exited")
                self._demux.feed(data)
