"""The sandbox agent: one resident process per sandbox container that runs commands and
file operations on request. Runs *inside* the container, as the sandbox user.

Why: an Engine API exec costs three API calls and a ``runc exec`` (about 100 ms), and on
Podman every exec leaves its two ``conmon`` processes behind for the engine's
``exit_command_delay`` (300 s by default), so an agent's tool loop of dozens of calls filled
the host's process table. The agent is started with one exec when the session first needs it
and stays attached; each command is then one round trip over that stream.

Started as ``python3 -I -S -c AGENT_SOURCE HELPER_SOURCE`` (the workspace helper's source is
``sys.argv[1]``). Frames both ways: a 4-byte big-endian header length, a 4-byte payload
length, a JSON header, the payload. Requests, one at a time:

- ``{"op": "exec", "argv", "cwd", "env", "timeout", "stdin": bool}`` + stdin bytes: the command
  runs as ``/bin/sh -c ENTER`` (so exit codes 126/127 and their messages are the shell's) in a
  new session; output comes back as ``{"t": "out", "s": 1|2}`` frames, then ``{"t": "exit",
  "code", "timed_out", "survivors"}``. At the deadline the command's process group is killed,
  nothing else of the user's.
- ``{"op": "file", "name", "request", "timeout"}`` + payload: one workspace helper operation in
  a forked child (a hostile regex burns the child, killed at the deadline); answers
  ``{"t": "file", "reply": {...}}`` or ``{"t": "file", "timed_out": true}``.

Standard library only: the image may have nothing else.
"""

import contextlib
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
from typing import Any

ENTER = 'cd "$1" || exit 126; shift; exec "$@"'
CHUNK = 65536
KILL_GRACE = 5.0
_LENGTHS = struct.Struct(">II")


def read_exact(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_frame(fd: int) -> tuple[dict[str, Any], bytes] | None:
    lengths = read_exact(fd, _LENGTHS.size)
    if lengths is None:
        return None
    header_size, payload_size = _LENGTHS.unpack(lengths)
    header = read_exact(fd, header_size)
    payload = read_exact(fd, payload_size) if payload_size else b""
    if header is None or payload is None:
        return None
    return json.loads(header), payload


def send(header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    frame = _LENGTHS.pack(len(data), len(payload)) + data + payload
    view = memoryview(frame)
    while view:
        view = view[os.write(1, view) :]


def kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def close(stream: Any) -> None:
    if stream is not None:
        stream.close()


def run_exec(request: dict[str, Any], stdin: bytes) -> None:
    env = dict(os.environ)
    env.update(request.get("env") or {})
    argv = ["/bin/sh", "-c", ENTER, "sandbox-exec", request["cwd"], *request["argv"]]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if request.get("stdin") else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + float(request["timeout"])
    selector = selectors.DefaultSelector()
    streams = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
    for fd in streams:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    pending: memoryview | None = memoryview(stdin) if proc.stdin is not None else None
    if proc.stdin is not None:
        os.set_blocking(proc.stdin.fileno(), False)
        if pending:
            selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            close(proc.stdin)
            pending = None
    timed_out = False
    try:
        while streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if timed_out:
                    break  # something outside the group holds the pipes: report it
                timed_out = True
                kill_group(proc.pid)
                deadline = time.monotonic() + KILL_GRACE
                continue
            for key, _ in selector.select(remaining):
                fd = key.fd
                if fd in streams:
                    try:
                        data = os.read(fd, CHUNK)
                    except BlockingIOError:
                        continue
                    if data:
                        send({"t": "out", "s": streams[fd]}, data)
                    else:
                        selector.unregister(fd)
                        del streams[fd]
                elif pending is not None:
                    try:
                        pending = pending[os.write(fd, pending[:CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        pending = pending[:0]  # the command closed its stdin: the rest is not wanted
                    if not pending:
                        selector.unregister(fd)
                        close(proc.stdin)
                        pending = None
    finally:
        selector.close()
        if pending is not None:
            close(proc.stdin)
    survivors = bool(streams)
    try:
        code = proc.wait(KILL_GRACE if timed_out or survivors else None)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        code = None
        survivors = True
    if timed_out:
        kill_group(proc.pid)  # anything the command left in its group goes too
    close(proc.stdout)
    close(proc.stderr)
    if code is not None and code < 0:
        code = 128 - code  # as a shell reports a signal
    send({"t": "exit", "code": None if timed_out else code, "timed_out": timed_out, "survivors": survivors})


def run_file(
    ops: dict[str, Any], fail_type: type[Exception], request: dict[str, Any], payload: bytes
) -> None:
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            reply = ops[request["name"]](request["request"], payload)
            reply["ok"] = True
        except fail_type as failure:
            reply = {"ok": False, "code": getattr(failure, "code", "io_error"), "error": str(failure)}
        except Exception as error:
            reply = {"ok": False, "code": "io_error", "error": f"{type(error).__name__}: {error}"}
        view = memoryview(json.dumps(reply).encode())
        while view:
            view = view[os.write(writer, view) :]
        os._exit(0)
    os.close(writer)
    deadline = time.monotonic() + float(request["timeout"])
    data = bytearray()
    timed_out = False
    with selectors.DefaultSelector() as selector:
        selector.register(reader, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            if selector.select(remaining):
                chunk = os.read(reader, CHUNK)
                if not chunk:
                    break
                data += chunk
    os.close(reader)
    os.waitpid(pid, 0)
    if timed_out:
        send({"t": "file", "timed_out": True})
        return
    try:
        reply = json.loads(data)
    except ValueError:
        reply = {"ok": False, "code": "io_error", "error": "the file operation died before answering"}
    send({"t": "file", "reply": reply})


def main() -> None:
    helper: dict[str, Any] = {"__name__": "workspace_helper"}
    exec(compile(sys.argv[1], "workspace_helper.py", "exec"), helper)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    send({"t": "ready", "pid": os.getpid()})
    while True:
        frame = read_frame(0)
        if frame is None:
            return  # the engine closed the stream: nothing more will come
        request, payload = frame
        if request["op"] == "exec":
            try:
                run_exec(request, payload)
            except OSError as error:
                send({"t": "out", "s": 2}, f"sandbox-exec: {error}\n".encode())
                send({"t": "exit", "code": 126, "timed_out": False, "survivors": False})
        elif request["op"] == "file":
            run_file(helper["OPS"], helper["Fail"], request, payload)
        else:
            send({"t": "error", "error": f"unknown op {request['op']!r}"})


if __name__ == "__main__":
    main()
