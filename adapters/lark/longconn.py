"""lark-oapi's long-connection client, on a thread of its own.

``lark.ws.Client`` is blocking: it runs an asyncio loop of its own, and calls
the event handler synchronously on that loop, writing the answer frame when
the handler returns. So it lives in a pykka ``ThreadedWorker``
(``engine/threaded.py``); the handler hands each event to the engine's loop
(``run_coroutine_threadsafe``) and returns only once the engine has committed
it, which is what makes the answer to Lark an acknowledgement of a durable
event. A failed or timed-out hand-over raises, the SDK answers 500, and Lark
delivers the event again.

Three details of the SDK (1.4 to 1.7) are worked around here, without
changing it:

- It keeps one module-level ``loop`` (taken when it is imported, usually the
  engine's own loop) for every client. ``install()`` replaces it with a proxy
  to the running loop of the calling thread, so each bot's client runs on its
  own thread's loop.
- ``start()`` never returns, and with ``auto_reconnect`` it retries on its own
  schedule (and stops for good after the server's retry count). The worker
  drives the client's connect, ping and disconnect coroutines itself with
  ``auto_reconnect`` off; a lost connection ends the run, and the connection
  actor fails, so the supervisor reconnects with the engine's backoff.
- It offers no hook for "a frame arrived", which is what freshness is measured
  by; the worker wraps the client's frame handler to note the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import lark_oapi.ws.client as ws_client
from lark_oapi.core.enum import LogLevel
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler

from callboard.engine.threaded import ThreadedWorker

log = logging.getLogger("callboard.lark")


class _ThreadLoops:
    """Stands in for lark-oapi's module-level ``loop``: tasks go to the loop
    running in the calling thread, anything else to that thread's loop."""

    def create_task(self, coro: Any) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio.get_event_loop(), name)


def install() -> None:
    """Make lark-oapi's ws client safe to run on several threads at once (idempotent)."""
    if not isinstance(ws_client.loop, _ThreadLoops):
        ws_client.loop = _ThreadLoops()


class _Events(EventDispatcherHandler):  # type: ignore[misc]
    """Every delivery, whatever its type, goes to ``deliver`` as raw bytes; what it
    returns is the answer (a card action's response)."""

    def __init__(self, deliver: Callable[[bytes], Any]) -> None:
        super().__init__()
        self._deliver = deliver

    def _do_without_validation(self, payload: bytes) -> Any:
        return self._deliver(payload)


class Run:
    """Connection actor -> worker: connect and serve until stopped or the link drops."""

    __slots__ = ()


RUN = Run()


class ConnectionLost(Exception):
    """Lark closed the long connection (or the network dropped it)."""


class Link:
    """What the connection actor and the worker thread share: the time of the last
    frame (on the engine's clock; a float written by one thread, read by the
    other) and the way to stop the run from any thread."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.last_frame = now()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.stopping = False

    def request_stop(self) -> None:
        """Any thread: end the run (closes the socket)."""
        self.stopping = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)


class LongConnWorker(ThreadedWorker):
    """One bot's long connection. ``deliver(payload) -> answer`` runs on this
    thread and may block; ``connected()`` is called once the socket is open and
    ``report(error)`` once the run ends (None after a requested stop), both on
    this thread."""

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        domain: str,
        link: Link,
        deliver: Callable[[bytes], Any],
        connected: Callable[[], None],
        report: Callable[[BaseException | None], None],
    ) -> None:
        super().__init__()
        self.app_id = app_id
        self.app_secret = app_secret
        self.domain = domain
        self.link = link
        self.deliver = deliver
        self.connected = connected
        self.report = report

    def handle(self, message: Any) -> Any:
        if not isinstance(message, Run):
            raise TypeError(f"unexpected message {message!r}")
        install()
        link = self.link
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        error: BaseException | None = None
        try:
            link._stop = asyncio.Event()
            link._loop = loop
            if not link.stopping:
                loop.run_until_complete(self._run(link._stop))
        except BaseException as exc:
            error = exc
        finally:
            link._loop = None
            with contextlib.suppress(Exception):
                _cancel_all(loop)
            loop.close()
            asyncio.set_event_loop(None)
        self.report(None if link.stopping else (error or ConnectionLost("the long connection closed")))
        return None

    async def _run(self, stop: asyncio.Event) -> None:
        link = self.link
        client = ws_client.Client(
            self.app_id,
            self.app_secret,
            log_level=LogLevel.WARNING,
            event_handler=_Events(self.deliver),
            domain=self.domain,
            auto_reconnect=False,
        )
        frames = client._handle_message

        async def noted(message: bytes) -> None:
            link.last_frame = link.now()
            await frames(message)

        client._handle_message = noted
        await client._connect()
        conn = client._conn
        if conn is None:
            raise ConnectionLost("the long connection did not open")
        link.last_frame = link.now()
        self.connected()
        pinger = asyncio.ensure_future(client._ping_loop())
        closed = asyncio.ensure_future(conn.wait_closed())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({closed, stopped, pinger}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # the SDK's receive loop too: left running, it would log our own close as an error
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()
            await client._disconnect()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
