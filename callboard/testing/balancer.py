"""A round-robin HTTP reverse proxy on 127.0.0.1: what a load balancer in front of
the nodes of a cluster does to webhooks (tests and benchmarks).

Each request goes to the next backend in turn, with its method, path, query,
headers (less the hop-by-hop ones) and body, and the backend's answer comes
back as it was. A backend that refuses the connection is skipped for that
request (the next one gets it), as a balancer's health check would; when none
answers, the client gets 502. ``served`` counts requests per backend.
"""

from __future__ import annotations

import itertools
from collections import Counter

import aiohttp
from aiohttp import web

from callboard.testing.server import LocalServer

#: headers that belong to one connection, not to the request (RFC 9110 7.6.1)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class RoundRobinProxy(LocalServer):
    """``await start()``; send to ``url``; ``await close()``."""

    def __init__(self, backends: list[str], *, timeout: float = 10.0) -> None:
        super().__init__()
        self.backends = backends
        self.served: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._turn = itertools.cycle(range(len(backends)))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RoundRobinProxy:
        self._http = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        await self.serve(app)
        return self

    async def close(self) -> None:
        await self.stop_serving()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        for _ in range(len(self.backends)):
            backend = self.backends[next(self._turn)]
            try:
                async with self._http.request(
                    request.method, backend + request.path_qs, headers=headers, data=body
                ) as answer:
                    data = await answer.read()
                    self.served[backend] += 1
                    kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                    return web.Response(status=answer.status, body=data, headers=kept)
            except aiohttp.ClientConnectorError:
                self.refused[backend] += 1  # down: the next backend takes this request
            except (aiohttp.ClientError, TimeoutError):
                self.refused[backend] += 1
                return web.Response(status=502, text="backend failed mid-request")
        return web.Response(status=502, text="no backend answered")
