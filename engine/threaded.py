"""pykka interop: an asyncio actor that owns a thread-backed pykka actor.

Blocking SDKs (the docker SDK, lark-oapi's websocket client) live in a
``ThreadedWorker`` on its own OS thread. A ``ThreadedHost`` actor starts it,
forwards each message, and awaits the answer through ``call_soon_threadsafe``,
so the event loop never blocks. A worker failure fails the host, whose
supervisor restarts it: the restart stops the old worker thread and starts a
fresh worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pykka

from callboard.engine.actor import Actor


class _Call:
    __slots__ = ("future", "loop", "message")

    def __init__(self, message: Any, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]):
        self.message = message
        self.loop = loop
        self.future = future


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ThreadedWorker(pykka.ThreadingActor):
    """Subclass and implement ``handle(message)``; it runs on the worker's thread."""

    use_daemon_thread = True

    def handle(self, message: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, _Call):
            return self.handle(message)
        try:
            result = self.handle(message.message)
        except BaseException as error:
            message.loop.call_soon_threadsafe(_settle, message.future, None, error)
            if not isinstance(error, Exception):
                raise
        else:
            message.loop.call_soon_threadsafe(_settle, message.future, result, None)
        return None


class ThreadedHost(Actor):
    """Owns one ``ThreadedWorker``; ``ask`` it as any actor.

    Spawn as ``context.spawn(ThreadedHost, name, WorkerClass, *worker_args)``.
    """

    stop_timeout = 10.0

    def __init__(self, worker_cls: type[ThreadedWorker], *args: Any, **kwargs: Any) -> None:
        self._worker_cls = worker_cls
        self._args = args
        self._kwargs = kwargs
        self._worker: pykka.ActorRef[Any] | None = None

    @property
    def worker(self) -> pykka.ActorRef[Any] | None:
        return self._worker

    async def on_start(self) -> None:
        self._worker = self._worker_cls.start(*self._args, **self._kwargs)

    async def receive(self, message: Any) -> Any:
        worker = self._worker
        if worker is None or not worker.is_alive():
            raise pykka.ActorDeadError(f"{self._worker_cls.__name__} worker thread is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        worker.tell(_Call(message, loop, future))
        return await future

    async def on_stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None or not worker.is_alive():
            return
        await asyncio.to_thread(_stop_worker, worker, self.stop_timeout)


def _stop_worker(worker: pykka.ActorRef[Any], timeout: float) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        worker.stop(block=True, timeout=timeout)
