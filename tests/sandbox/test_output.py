"""Head+tail capture and the exec stream pump, against a local socket pair (no containers)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from callboard.sandbox.output import StreamCapture
from callboard.sandbox.stream import ExecStream


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


@pytest.mark.parametrize("size", [99, 100])
def test_output_within_the_limit_is_kept_whole(size: int) -> None:
    capture = StreamCapture(100)
    capture.feed(b"a" * size)
    assert not capture.truncated
    assert capture.text() == "a" * size


def test_one_byte_over_the_limit_truncates_with_60_40_split() -> None:
    capture = StreamCapture(100)
    data = bytes(range(65, 91)) * 4 + b"!"  # 105 bytes
    capture.feed(data[:50])
    capture.feed(data[50:])
    assert capture.truncated
    assert capture.total == 105
    text = capture.text()
    head, marker, tail = text.partition("\n[... 5 bytes truncated ...]\n")
    assert marker
    assert head.encode() == data[:60]
    assert tail.encode() == data[-40:]


def test_huge_output_keeps_memory_at_the_limit() -> None:
    capture = StreamCapture(1000)
    for _ in range(1000):
        capture.feed(b"x" * 10_000)
    assert capture.total == 10_000_000
    assert len(capture.data()) == 1000
    assert "9999000 bytes truncated" in capture.text()


def test_truncation_never_splits_a_character() -> None:
    capture = StreamCapture(12)  # head 7 bytes, tail 5: both cut inside a 3-byte character
    capture.feed(("€" * 10).encode())
    head, _, tail = capture.text().partition("\n[... 21 bytes truncated ...]\n")
    assert (head, tail) == ("€€", "€")


def test_frames_split_anywhere_are_demultiplexed() -> None:
    out, err = StreamCapture(1000), StreamCapture(1000)
    stream = ExecStream(socket.socket(), out, err)
    data = frame(1, b"hello ") + frame(2, b"oops") + frame(1, b"world") + frame(0, b"ignored")
    for i in range(len(data)):  # one byte at a time: headers and payloads split everywhere
        stream.feed(data[i : i + 1])
    stream.sock.close()
    assert out.text() == "hello world"
    assert err.text() == "oops"


def fake_engine(server: socket.socket, reply: bytes, echo_stdin: bool) -> threading.Thread:
    """Reads stdin to EOF (half-close), then answers with frames and closes."""

    def run() -> None:
        received = b""
        if echo_stdin:
            while chunk := server.recv(65536):
                received += chunk
        server.sendall(reply + (frame(1, received) if echo_stdin else b""))
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(20)
def test_pump_writes_large_stdin_while_reading_output() -> None:
    client, server = socket.socketpair()
    client.setblocking(False)
    payload = b"z" * (3 << 20)  # far more than a socket buffer: needs interleaving
    thread = fake_engine(server, frame(2, b"started\n"), echo_stdin=True)
    out, err = StreamCapture(8 << 20), StreamCapture(100)
    finished = ExecStream(client, out, err).pump(payload, time.monotonic() + 15)
    thread.join(5)
    client.close()
    assert finished
    assert err.text() == "started\n"
    assert out.data() == payload


@pytest.mark.timeout(20)
def test_pump_gives_up_at_the_deadline() -> None:
    client, server = socket.socketpair()
    client.setblocking(False)
    server.sendall(frame(1, b"partial"))  # then silence, never EOF
    out = StreamCapture(100)
    started = time.monotonic()
    finished = ExecStream(client, out, StreamCapture(100)).pump(None, started + 0.3)
    elapsed = time.monotonic() - started
    client.close()
    server.close()
    assert not finished
    assert out.text() == "partial"
    assert 0.3 <= elapsed < 5


@pytest.mark.timeout(20)
def test_empty_stdin_is_an_immediate_eof() -> None:
    client, server = socket.socketpair()
    client.setblocking(False)
    thread = fake_engine(server, b"", echo_stdin=True)
    out = StreamCapture(100)
    assert ExecStream(client, out, StreamCapture(100)).pump(b"", time.monotonic() + 10)
    thread.join(5)
    client.close()
    assert out.text() == ""
