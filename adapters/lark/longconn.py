"""lark-oapi's long-connection client, on a thread of its own.

``lark.ws.Client`` runs an asyncio loop of its own and answers every event
frame it receives. So it lives in a pykka ``ThreadedWorker``
(``engine/threaded.py``) on its own thread; each event is handed to the
engine's loop (``run_coroutine_threadsafe``) and the client writes its answer
frame only when the engine has committed the event, which makes the answer an
acknowledgement of a durable event. A failed or timed-out hand-over is answered
500 (and Lark delivers the event again); a stop cancels what is still waiting,
unanswered.

The SDK (1.4 to 1.7) is used as it is, with four details worked around:

- It calls the event handler synchronously on its loop, so one slow commit
  would hold up every frame behind it (events would be answered one commit at
  a time). ``_Client`` overrides only the data-frame handler, to await the
  hand-over instead: many events are in flight and commit together. The answer
  frame is built exactly as the SDK builds it (same headers, ``biz_rt``,
  ``{"code": 200}``, a card action's result base64-encoded in ``data``).
  Frames are handed over in the order they arrive.
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
import base64
import contextlib
import http
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import lark_oapi.ws.client as ws_client
from lark_oapi.core.enum import LogLevel
from lark_oapi.core.json import JSON
from lark_oapi.ws.const import HEADER_BIZ_RT, HEADER_MESSAGE_ID, HEADER_SEQ, HEADER_SUM, HEADER_TYPE
from lark_oapi.ws.enum import MessageType
from lark_oapi.ws.exception import ClientException
from lark_oapi.ws.model import Response

from callboard.adapters.lark.errors import BAD_CREDENTIALS, auth_error
from callboard.adapters.lark.sdk import missing_internals
from callboard.engine.threaded import ThreadedWorker

log = logging.getLogger("callboard.lark")


#: seconds a stop waits for Lark to answer the websocket close
CLOSE_TIMEOUT = 2.0


class _ThreadLoops:
    """Stands in for lark-oapi's module-level ``loop``: tasks go to the loop
    running in the calling thread, anything else to that thread's loop."""

    def create_task(self, coro: Any) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio.get_event_loop(), name)


class UnsupportedSdk(RuntimeError):
    """This lark-oapi's ws client lacks what ``longconn`` drives (see ``adapters.lark.sdk``)."""


def install() -> None:
    """Make lark-oapi's ws client safe to run on several threads at once (idempotent)."""
    missing = missing_internals(ws_client.Client)
    if missing or not hasattr(ws_client, "loop"):
        raise UnsupportedSdk(
            f"this lark-oapi's ws client lacks {', '.join(missing) or 'its module-level loop'}, which "
            "the long connection drives: install a lark-oapi the adapter supports (see "
            "callboard.adapters.lark.sdk.SUPPORTED) or use mode: webhook"
        )
    if not isinstance(ws_client.loop, _ThreadLoops):
        ws_client.loop = _ThreadLoops()


class _Client(ws_client.Client):  # type: ignore[misc]
    """The SDK's client with an awaited event hand-over (see the module docstring)."""

    def __init__(self, deliver: Callable[[bytes], Awaitable[Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deliver = deliver

    async def _handle_data_frame(self, frame: Any) -> None:
        headers = frame.headers
        values = {h.key: h.value for h in headers}
        message_id = values[HEADER_MESSAGE_ID]
        payload = frame.payload
        parts = int(values[HEADER_SUM])
        if parts > 1:  # a large event comes in parts; the SDK reassembles them
            payload = self._combine(message_id, parts, int(values[HEADER_SEQ]), payload)
            if payload is None:
                return
        if MessageType(values[HEADER_TYPE]) != MessageType.EVENT:
            return  # as the SDK: card frames of the old protocol are not answered
        response = Response(code=http.HTTPStatus.OK)
        started = time.monotonic()
        try:
            result = await self._deliver(payload)
            header = headers.add()
            header.key = HEADER_BIZ_RT
            header.value = str(int((time.monotonic() - started) * 1000))
            if result is not None:
                response.data = base64.b64encode(JSON.marshal(result).encode())
        except Exception as exc:
            log.warning("a Lark event was answered as failed (Lark will deliver it again): %s", exc)
            response = Response(code=http.HTTPStatus.INTERNAL_SERVER_ERROR)
        frame.payload = JSON.marshal(response).encode()
        await self._write_message(frame.SerializeToString())


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
    """One bot's long connection. ``deliver(payload) -> answer`` is awaited on this
    thread's loop, once per event; ``connected()`` is called once the socket is open and
    ``report(error)`` once the run ends (None after a requested stop), both on
    this thread."""

    def __init__(
        self,
        bot_id: str,
        app_id: str,
        app_secret: str,
        domain: str,
        link: Link,
        deliver: Callable[[bytes], Awaitable[Any]],
        connected: Callable[[], None],
        report: Callable[[BaseException | None], None],
    ) -> None:
        super().__init__()
        self.bot_id = bot_id
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
        link = self.link
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        error: BaseException | None = None
        try:
            install()
            link._stop = asyncio.Event()
            link._loop = loop
            if not link.stopping:
                loop.run_until_complete(self._run(link._stop))
        except ClientException as exc:  # the endpoint refused the app
            error = auth_error(self.bot_id, exc.code, str(exc)) if exc.code in BAD_CREDENTIALS else exc
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
        client = _Client(
            self.deliver,
            app_id=self.app_id,
            app_secret=self.app_secret,
            log_level=LogLevel.WARNING,
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
        # a stop must not wait websockets' default 10 s for a close handshake the server skips
        conn.close_timeout = CLOSE_TIMEOUT
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
