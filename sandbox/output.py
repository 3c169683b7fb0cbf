"""Bounded capture of a command's output: the head and the tail, never the middle.

A command may print gigabytes; memory stays at the limit. The first 60% of
the limit keeps the start (where errors about arguments go) and the last 40%
keeps the end (where tracebacks and results go), with a marker saying how many
bytes were dropped between them.
"""

from __future__ import annotations

HEAD_SHARE = 0.6


class StreamCapture:
    """Keeps the first and the last bytes of a stream, counting everything."""

    __slots__ = ("_head", "_head_limit", "_tail", "_tail_limit", "total")

    def __init__(self, limit: int) -> None:
        if limit < 2:
            raise ValueError("an output limit needs at least 2 bytes")
        self._head_limit = int(limit * HEAD_SHARE)
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            excess = len(self._tail) - self._tail_limit
            if excess > 0:
                del self._tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._head) + len(self._tail)

    def data(self) -> bytes:
        """Everything when it fit, else head and tail without the marker."""
        return bytes(self._head + self._tail)

    def text(self) -> str:
        """UTF-8 text; when truncated, cut on character boundaries around a marker."""
        if not self.truncated:
            return self.data().decode("utf-8", "replace")
        head = _trim_partial_end(bytes(self._head))
        tail = _trim_partial_start(bytes(self._tail))
        dropped = self.total - len(head) - len(tail)
        return (
            head.decode("utf-8", "replace")
            + f"\n[... {dropped} bytes truncated ...]\n"
            + tail.decode("utf-8", "replace")
        )


def _trim_partial_end(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence at the end (at most 3 bytes)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def _trim_partial_start(data: bytes) -> bytes:
    """Drop continuation bytes at the start (the rest of a character cut in two)."""
    start = 0
    while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
        start += 1
    return data[start:]
