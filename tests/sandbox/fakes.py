"""An in-memory backend for unit tests of the manager and the tools client (no containers).

It stands in for the engine only; every container behaviour is tested
against real containers in the ``*_real`` tests.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from callboard.engine.sandbox_api import ExecResult, SandboxUnavailable
from callboard.sandbox.backend import (
    ContainerRecord,
    EngineInfo,
    ExecRequest,
    SandboxBackend,
    SandboxSession,
    SessionSpec,
)


class FakeEngine:
    """State shared by every FakeBackend of a test (they run on many threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.containers: dict[str, ContainerRecord] = {}
        self.down = False
        self.on_create: Callable[[SessionSpec], None] | None = None
        self.creates = 0
        self.pings = 0
        self._ids = itertools.count(1)

    def add(self, fleet: str, session: str, instance: str) -> str:
        with self.lock:
            cid = f"c{next(self._ids)}"
            self.containers[cid] = ContainerRecord(
                cid, f"callboard-{fleet}-{session}", fleet, session, instance, "running"
            )
            return cid

    def names(self) -> set[str]:
        with self.lock:
            return {c.name for c in self.containers.values()}

    def check(self) -> None:
        if self.down:
            raise SandboxUnavailable("container engine fake:// is unreachable: connection refused")


class FakeSession(SandboxSession):
    def __init__(self, engine: FakeEngine, spec: SessionSpec, cid: str) -> None:
        super().__init__(spec)
        self.engine = engine
        self._id = cid

    @property
    def container_id(self) -> str:
        return self._id

    def exec(self, request: ExecRequest) -> ExecResult:
        self.engine.check()
        if self._id not in self.engine.containers:
            raise SandboxUnavailable(f"sandbox container {self._id} is gone")
        if request.argv[:1] == ("sleep",):
            time.sleep(float(request.argv[1]))
        if request.argv[:1] == ("wedge",):  # as if a timed-out command's processes survived the kill
            self.healthy = False
        return ExecResult(
            exit_code=0,
            stdout=f"{self._id} {' '.join(request.argv)}",
            stderr="",
            truncated=False,
            timed_out=False,
            duration=0.0,
            stdout_bytes=0,
            stderr_bytes=0,
        )

    def stop(self) -> None:
        with self.engine.lock:
            self.engine.containers.pop(self._id, None)


class FakeBackend(SandboxBackend):
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def ping(self) -> EngineInfo:
        self.engine.pings += 1
        self.engine.check()
        return EngineInfo("fake://", "Fake Engine", "1", "1.41")

    def create_session(self, spec: SessionSpec) -> FakeSession:
        self.engine.check()
        if self.engine.on_create is not None:
            self.engine.on_create(spec)
        self.engine.creates += 1
        cid = self.engine.add(spec.fleet, spec.session, spec.instance)
        return FakeSession(self.engine, spec, cid)

    def list_containers(self, fleet: str | None = None) -> list[ContainerRecord]:
        self.engine.check()
        with self.engine.lock:
            return [c for c in self.engine.containers.values() if fleet is None or c.fleet == fleet]

    def close(self) -> None:
        pass

    def remove_container(self, ref: str) -> bool:
        self.engine.check()
        with self.engine.lock:
            for cid, record in list(self.engine.containers.items()):
                if ref in (cid, record.name):
                    del self.engine.containers[cid]
                    return True
        return False
