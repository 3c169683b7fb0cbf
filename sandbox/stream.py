"""One exec's attached stream: stdin in, multiplexed stdout/stderr out, under a deadline.

The Engine API hijacks the HTTP connection for an attached exec and sends
frames ``[stream, 0, 0, 0, size (4 bytes, big-endian)] + payload``. The docker
SDK offers either a blocking reader without a deadline or the raw socket; we
take the socket and drive it with a selector, writing stdin and reading output
together (so a command that prints before it reads cannot deadlock us), and
stop at the deadline whatever the command does.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import socket
import ssl
import time
from typing import Any, Protocol

_HEADER = 8
_CHUNK = 65536
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def raw_socket(handle: Any) -> tuple[socket.socket, bytes]:
    """The socket under what ``exec_start(socket=True)`` returned, plus any output
    the HTTP layer had already buffered past the response headers."""
    sock = getattr(handle, "_sock", handle)
    if not isinstance(sock, socket.socket):
        raise TypeError(f"unsupported exec stream {type(handle).__name__}: use a unix or tcp engine endpoint")
    buffered = b""
    response = getattr(handle, "_response", None) or getattr(sock, "_response", None)
    reader = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None)
    sock.setblocking(False)
    if isinstance(reader, io.BufferedReader):
        try:
            buffered = reader.read1(_CHUNK) or b""
        except _WOULD_BLOCK:
            buffered = b""
    return sock, buffered


class Sink(Protocol):
    """Where one demultiplexed stream's bytes go (a bounded capture, a frame parser)."""

    def feed(self, data: bytes) -> None: ...


class ExecStream:
    """Demultiplexes frames into two sinks while pumping stdin."""

    def __init__(self, sock: socket.socket, stdout: Sink, stderr: Sink) -> None:
        self.sock = sock
        self.captures: dict[int, Sink] = {1: stdout, 2: stderr}
        self._header = bytearray()
        self._stream = 0
        self._left = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        index = 0
        while index < len(view):
            if self._left == 0:
                take = view[index : index + _HEADER - len(self._header)]
                self._header += take
                index += len(take)
                if len(self._header) == _HEADER:
                    self._stream = self._header[0]
                    self._left = int.from_bytes(self._header[4:8], "big")
                    self._header.clear()
                continue
            chunk = view[index : index + self._left]
            index += len(chunk)
            self._left -= len(chunk)
            capture = self.captures.get(self._stream)
            if capture is not None:
                capture.feed(bytes(chunk))

    def pump(self, stdin: bytes | None, deadline: float) -> bool:
        """Write ``stdin`` (then half-close) and read until EOF; False if the deadline came first."""
        sock = self.sock
        pending = memoryview(stdin) if stdin is not None else None
        selector = selectors.DefaultSelector()
        try:
            if pending is not None and not pending:
                self._close_stdin()
                pending = None
            selector.register(
                sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending is not None else 0)
            )
            while True:
                if isinstance(sock, ssl.SSLSocket) and sock.pending():
                    if not self._read():
                        return True
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                for _, mask in selector.select(min(remaining, 1.0)):
                    if mask & selectors.EVENT_READ and not self._read():
                        return True
                    if mask & selectors.EVENT_WRITE and pending is not None:
                        pending = self._write(pending)
                        if pending is None:
                            selector.modify(sock, selectors.EVENT_READ)
        finally:
            selector.close()

    def _read(self) -> bool:
        """One recv; False at end of stream."""
        try:
            data = self.sock.recv(_CHUNK)
        except _WOULD_BLOCK:
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not data:
            return False
        self.feed(data)
        return True

    def _write(self, pending: memoryview) -> memoryview | None:
        try:
            sent = self.sock.send(pending[:_CHUNK])
        except _WOULD_BLOCK:
            return pending
        except (ConnectionResetError, BrokenPipeError):
            sent = len(pending)  # the command closed its stdin: the rest is not wanted
        pending = pending[sent:]
        if pending:
            return pending
        self._close_stdin()
        return None

    def _close_stdin(self) -> None:
        if isinstance(self.sock, ssl.SSLSocket):
            return  # TLS has no half-close; the command sees EOF when the stream ends
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
