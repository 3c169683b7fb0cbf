"""The engine's end of a container's process agent (``sandbox/process_agent.py``).

One exec per container carries every managed process: requests go out as frames (any
thread, one lock), and a reader thread cuts the agent's answers and events into frames and
hands each to the listener registered for its process id. A listener runs on the reader
thread and must only hand the event over (``loop.call_soon_threadsafe``), never block.
When the stream ends every listener hears ``{"t": "lost"}``: the processes are gone with
the agent, and the next start attaches a new one.
"""

from __future__ import annotations

import contextlib
import json
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from callboard.sandbox.agent_link import READY_TIMEOUT, AgentGone, _Frames
from callboard.sandbox.output import StreamCapture
from callboard.sandbox.stream import ExecStream, raw_socket

PROCESS_AGENT_SOURCE = Path(__file__).with_name("process_agent.py").read_text()
_LENGTHS = struct.Struct(">II")  # frames are the agent link's: lengths, JSON header, payload

Listener = Callable[[dict[str, Any], bytes], None]


class ProcessLink:
    """One attached process agent; thread-safe."""

    def __init__(self, handle: Any, sock: socket.socket, buffered: bytes) -> None:
        self._handle = handle
        self._sock = sock
        self._frames = _Frames()
        #: the agent's own stderr (its crash traces)
        self.stderr = StreamCapture(16 * 1024)
        self._demux = ExecStream(sock, self._frames, self.stderr)
        self._demux.feed(buffered)
        self._send_lock = threading.Lock()
        self._listeners: dict[str, Listener] = {}
        self._answers: dict[str, queue.SimpleQueue[dict[str, Any]]] = {}
        self._state = threading.Lock()
        self.alive = True
        self._reader: threading.Thread | None = None

    @classmethod
    def attach(cls, handle: Any) -> ProcessLink:
        """Wrap what ``exec_start(socket=True)`` returned, wait for the hello, start reading."""
        sock, buffered = raw_socket(handle)
        link = cls(handle, sock, buffered)
        header = link._first_frame(time.monotonic() + READY_TIMEOUT)
        if header.get("t") != "ready":
            link.close()
            raise AgentGone(f"unexpected first frame {header.get('t')!r} from the process agent")
        link._reader = threading.Thread(target=link._read_loop, name="sandbox-processes", daemon=True)
        link._reader.start()
        return link

    # ------------------------------------------------------------------ requests

    def start(
        self,
        ident: str,
        argv: list[str],
        cwd: str,
        env: Mapping[str, str],
        listener: Listener,
        timeout: float = READY_TIMEOUT,
    ) -> int:
        """Start one process; its pid in the container. ``AgentGone`` if the agent is lost,
        ``RuntimeError`` with the agent's reason if the process could not start."""
        answers: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        with self._state:
            if not self.alive:
                raise AgentGone("the process agent is gone")
            self._listeners[ident] = listener
            self._answers[ident] = answers
        self._send({"op": "start", "id": ident, "argv": argv, "cwd": cwd, "env": dict(env)})
        try:
            answer = answers.get(timeout=timeout)
        except queue.Empty:
            self.forget(ident)
            raise AgentGone("the process agent did not answer a start in time") from None
        finally:
            with self._state:
                self._answers.pop(ident, None)
        if answer.get("t") == "started":
            return int(answer["pid"])
        self.forget(ident)
        if answer.get("t") == "lost":
            raise AgentGone("the process agent is gone")
        raise RuntimeError(str(answer.get("error")))

    def write(self, ident: str, data: bytes) -> None:
        self._send({"op": "write", "id": ident}, data)

    def close_stdin(self, ident: str) -> None:
        self._send({"op": "close", "id": ident})

    def signal(self, ident: str, sig: int) -> None:
        self._send({"op": "signal", "id": ident, "sig": sig})

    def forget(self, ident: str) -> None:
        with self._state:
            self._listeners.pop(ident, None)

    def close(self) -> None:
        """Closing the stream ends the agent, which kills every process it runs."""
        with self._state:
            self.alive = False
        response = getattr(self._handle, "_response", None)
        with contextlib.suppress(Exception):
            if response is not None:
                response.close()
        with contextlib.suppress(Exception):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._sock.close()

    # ------------------------------------------------------------------ transport

    def _send(self, header: Mapping[str, Any], payload: bytes = b"") -> None:
        data = json.dumps(header).encode()
        view = memoryview(_LENGTHS.pack(len(data), len(payload)) + data + payload)
        with self._send_lock, selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + READY_TIMEOUT
            while view:
                if not self.alive:
                    raise AgentGone("the process agent is gone")
                if time.monotonic() > deadline:
                    self.close()
                    raise AgentGone("the process agent stopped reading")
                try:
                    view = view[self._sock.send(view) :]
                except (BlockingIOError, InterruptedError):
                    selector.select(1.0)
                except OSError as error:
                    self.close()
                    raise AgentGone(f"the process agent's stream broke ({error})") from None

    def _recv(self, selector: selectors.BaseSelector, wait: float) -> bool:
        """Feed what arrived within ``wait``; False at the end of the stream."""
        if not selector.select(wait):
            return True
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        self._demux.feed(data)
        return True

    def _first_frame(self, deadline: float) -> dict[str, Any]:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while True:
                frame = self._frames.next()
                if frame is not None:
                    return frame[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._recv(selector, min(remaining, 1.0)):
                    trace = self.stderr.text().strip()[-300:]
                    self.close()
                    raise AgentGone(f"the process agent did not start: {trace or 'no answer'}")

    def _read_loop(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._sock, selectors.EVENT_READ)
                while self.alive:
                    while (frame := self._frames.next()) is not None:
                        self._dispatch(*frame)
                    if not self._recv(selector, 1.0):
                        break
                while (frame := self._frames.next()) is not None:
                    self._dispatch(*frame)
        except (OSError, ValueError):
            pass  # a closed socket or a garbled frame: the link is lost either way
        finally:
            with self._state:
                self.alive = False
                listeners, self._listeners = dict(self._listeners), {}
                answers, self._answers = dict(self._answers), {}
            for answer in answers.values():
                answer.put({"t": "lost"})
            for ident, listener in listeners.items():
                listener({"t": "lost", "id": ident}, b"")
            self.close()

    def _dispatch(self, header: dict[str, Any], payload: bytes) -> None:
        ident = str(header.get("id"))
        kind = header.get("t")
        with self._state:
            answers = self._answers.get(ident) if kind in ("started", "failed") else None
            listener = self._listeners.get(ident)
            if kind == "exit":
                self._listeners.pop(ident, None)
        if answers is not None:
            answers.put(header)
        elif listener is not None:
            listener(header, payload)
