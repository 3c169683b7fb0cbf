"""PTB's networking backend on aiohttp instead of httpx.

python-telegram-bot sends every call through a ``BaseRequest``; this one
uses an aiohttp client session. Measured on the Telegram benchmark, httpx's
connection pool (which polls every pooled socket on each request) cost more
CPU than the rest of the engine's per-update work; aiohttp's pool does not,
and aiohttp is already the engine's HTTP library. Timeouts and errors map to
PTB's own ``TimedOut`` and ``NetworkError``, so PTB behaves as with its
default backend.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from callboard.adapters.telegram.errors import redact


class AiohttpRequest(BaseRequest):
    """At most ``connections`` open connections; ``timeout`` seconds for
    connecting, for a free connection, and between bytes of an answer."""

    def __init__(self, connections: int, timeout: float) -> None:
        self.connections = connections
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self.timeout

    async def initialize(self) -> None:
        self._open()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env: HTTP(S)_PROXY are honoured, as PTB's default backend does
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections), trust_env=True
            )
        return self._session

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._open()
        read = self._seconds(read_timeout)
        connect = self._seconds(connect_timeout)
        pool = self._seconds(pool_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        try:
            async with session.request(
                method,
                url,
                data=_body(request_data),
                headers={"User-Agent": self.USER_AGENT},
                timeout=timeout,
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
            raise TimedOut(f"Timed out ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {redact(str(exc))}") from None

    def _seconds(self, value: Any) -> float | None:
        """PTB passes DEFAULT_NONE for "the default", None for "no limit"."""
        if isinstance(value, type(BaseRequest.DEFAULT_NONE)):
            return self.timeout
        return None if value is None else float(value)


def _body(request_data: RequestData | None) -> Any:
    """Form fields as PTB encodes them; multipart when there are uploads."""
    if request_data is None:
        return None
    fields = request_data.json_parameters
    files = request_data.multipart_data
    if not files:
        return fields
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, mime) in files.items():
        form.add_field(name, content, filename=filename, content_type=mime)
    return form
