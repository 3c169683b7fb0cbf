"""The sandbox's process agent: managed (long-running) processes, multiplexed by id.

Started once per container, the first time a managed process is needed, with a single exec
whose stdin and stdout stay attached (``sandbox/process_link.py`` is the engine's end). Every
managed process of the container, and every restart of one, goes through this one exec, so a
restart loop costs the host no new ``conmon`` pair. Frames are those of ``sandbox/agent.py``:
``>II`` (header length, payload length), a JSON header, then the payload.

Requests (engine -> agent), each naming a process ``id``:

- ``{"op": "start", "id", "argv", "cwd", "env"}``: run ``argv`` in a new session (its own
  process group) with pipes for stdin, stdout and stderr; answers ``{"t": "started", "id",
  "pid"}`` or ``{"t": "failed", "id", "error"}``.
- ``{"op": "write", "id"}`` + payload: append to the process's stdin (written as it drains).
- ``{"op": "close", "id"}``: close its stdin once what was written has drained.
- ``{"op": "signal", "id", "sig"}``: signal its whole process group.

Events (agent -> engine): ``{"t": "out", "id", "s": 1|2}`` + payload, and ``{"t": "exit",
"id", "code"}`` when the process ends (``128 + n`` for signal ``n``, as a shell reports it);
what it left in its group is killed then. SIGCHLD wakes the loop through a pipe, so nothing
polls. When the engine closes the stream, every process group is killed and the agent exits.

Standard library only: the image may have nothing else.
"""

import contextlib
import json
import os
import selectors
import signal
import struct
import subprocess
from typing import Any

CHUNK = 65536
_LENGTHS = struct.Struct(">II")


def send(header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    view = memoryview(_LENGTHS.pack(len(data), len(payload)) + data + payload)
    while view:
        view = view[os.write(1, view) :]


class Managed:
    """One running process: its pipes and what is still to be written to its stdin."""

    def __init__(self, ident: str, proc: subprocess.Popen[bytes]) -> None:
        self.id = ident
        self.proc = proc
        self.pending = bytearray()
        self.close_after = False
        self.stdin_open = True


class Agent:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.procs: dict[str, Managed] = {}
        self.inbox = bytearray()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake = wake_r
        self.selector.register(wake_r, selectors.EVENT_READ, ("wake", None, 0))
        self.selector.register(0, selectors.EVENT_READ, ("control", None, 0))

    # ------------------------------------------------------------------ requests

    def handle(self, request: dict[str, Any], payload: bytes) -> None:
        op, ident = request.get("op"), str(request.get("id"))
        managed = self.procs.get(ident)
        if op == "start":
            self.start(ident, request)
        elif managed is None:
            return  # the process already ended: its exit frame is on its way
        elif op == "write":
            if managed.stdin_open and payload and managed.proc.stdin is not None:
                if not managed.pending:
                    fd = managed.proc.stdin.fileno()
                    self.selector.register(fd, selectors.EVENT_WRITE, ("in", managed, 0))
                managed.pending += payload
        elif op == "close":
            managed.close_after = True
            if not managed.pending:
                self.close_stdin(managed)
        elif op == "signal":
            with contextlib.suppress(OSError):
                os.killpg(managed.proc.pid, int(request["sig"]))

    def start(self, ident: str, request: dict[str, Any]) -> None:
        if ident in self.procs:
            send({"t": "failed", "id": ident, "error": "a process with this id is running"})
            return
        env = dict(os.environ)
        env.update(request.get("env") or {})
        try:
            proc = subprocess.Popen(
                list(request["argv"]),
                cwd=request.get("cwd") or None,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except (OSError, ValueError) as error:
            send({"t": "failed", "id": ident, "error": f"{type(error).__name__}: {error}"})
            return
        managed = Managed(ident, proc)
        self.procs[ident] = managed
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        for stream, number in ((proc.stdout, 1), (proc.stderr, 2)):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream.fileno(), selectors.EVENT_READ, ("out", managed, number))
        os.set_blocking(proc.stdin.fileno(), False)
        send({"t": "started", "id": ident, "pid": proc.pid})

    def close_stdin(self, managed: Managed) -> None:
        stdin = managed.proc.stdin
        if managed.stdin_open and stdin is not None:
            managed.stdin_open = False
            if managed.pending:
                self.selector.unregister(stdin.fileno())
            with contextlib.suppress(OSError):
                stdin.close()
        managed.pending.clear()

    # ------------------------------------------------------------------ events

    def pump_output(self, managed: Managed, fd: int, number: int) -> bool:
        """Forward what the process wrote; False at end of stream."""
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
            return False
        send({"t": "out", "id": managed.id, "s": number}, data)
        return True

    def drain(self, managed: Managed, fd: int, number: int) -> None:
        """What an ended process left in a pipe (not waiting for a holder outside its group)."""
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                return
            if not data:
                return
            send({"t": "out", "id": managed.id, "s": number}, data)

    def pump_input(self, managed: Managed) -> None:
        stdin = managed.proc.stdin
        if stdin is None or not managed.pending:
            return
        try:
            written = os.write(stdin.fileno(), managed.pending[:CHUNK])
        except BlockingIOError:
            return
        except OSError:  # the process closed its stdin: what is left is not wanted
            self.close_stdin(managed)
            return
        del managed.pending[:written]
        if not managed.pending:
            self.selector.unregister(stdin.fileno())
            if managed.close_after:
                self.close_stdin(managed)

    def reap(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.wake, 512):
                pass
        for managed in list(self.procs.values()):
            code = managed.proc.poll()
            if code is None:
                continue
            proc = managed.proc
            for stream, number in ((proc.stdout, 1), (proc.stderr, 2)):
                assert stream is not None
                self.drain(managed, stream.fileno(), number)
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(stream.fileno())
                stream.close()
            self.close_stdin(managed)
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # what it left in its group goes with it
            del self.procs[managed.id]
            send({"t": "exit", "id": managed.id, "code": 128 - code if code < 0 else code})

    def read_control(self) -> bool:
        """Read request frames from the engine; False when it closed the stream."""
        try:
            data = os.read(0, CHUNK)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.inbox += data
        while len(self.inbox) >= _LENGTHS.size:
            header_size, payload_size = _LENGTHS.unpack_from(self.inbox)
            end = _LENGTHS.size + header_size + payload_size
            if len(self.inbox) < end:
                break
            header = json.loads(bytes(self.inbox[_LENGTHS.size : _LENGTHS.size + header_size]))
            payload = bytes(self.inbox[_LENGTHS.size + header_size : end])
            del self.inbox[:end]
            self.handle(header, payload)
        return True

    def run(self) -> None:
        os.set_blocking(0, False)
        send({"t": "ready", "pid": os.getpid()})
        try:
            while True:
                for key, _ in self.selector.select():
                    kind, managed, number = key.data
                    if kind == "control":
                        if not self.read_control():
                            return
                    elif kind == "wake":
                        self.reap()
                    elif kind == "out":
                        self.pump_output(managed, key.fd, number)
                    elif kind == "in":
                        self.pump_input(managed)
                self.reap()
        finally:
            for managed in self.procs.values():
                with contextlib.suppress(OSError):
                    os.killpg(managed.proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    Agent().run()
