"""The engine's one HTTP server: web chat, adapters' webhook routes, admin.

aiohttp freezes its router when the app starts, but bots come and go on a
reload, so routes live in a table of exact paths this server dispatches
itself, plus a few prefix routes (``add_prefix``) for paths that carry ids.
Each route has an owner (a bot id or "engine") so a bot's routes leave with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import weakref
from collections.abc import Callable

from aiohttp import WSCloseCode, web

from callboard.adapters.base import HttpHandler

log = logging.getLogger("callboard.http")

#: the admin check: a refusal to answer with, or None to let the request through
Guard = Callable[[web.Request], web.StreamResponse | None]


class RouteConflict(ValueError):
    """Two owners asked for the same method and path."""


class HttpServer:
    def __init__(self, host: str, port: int, *, max_body: int = 4 * 1024 * 1024) -> None:
        self.host = host
        self.port = port
        self.app = web.Application(client_max_size=max_body)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.app.on_response_prepare.append(self._track)
        self._websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        #: checks every request to an engine-owned (admin) path but the open ones
        self.guard: Guard | None = None
        self._open: set[str] = set()
        self._routes: dict[tuple[str, str], tuple[str, HttpHandler]] = {}
        self._prefixes: list[tuple[str, str, HttpHandler]] = []
        #: prefixes whose handlers authenticate each request themselves (signed callbacks)
        self._open_prefixes: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None

    def add(self, method: str, path: str, handler: HttpHandler, owner: str = "engine") -> None:
        key = (method.upper(), path)
        existing = self._routes.get(key)
        if existing is not None and existing[0] != owner:
            raise RouteConflict(f"{method} {path} is already served for {existing[0]!r}")
        self._routes[key] = (owner, handler)

    def add_prefix(self, method: str, prefix: str, handler: HttpHandler, *, open_: bool = False) -> None:
        """Serve every path under ``prefix`` (ending in "/") not served exactly;
        the handler parses ``request.path`` itself. ``open_``: no admin check,
        because the handler authenticates each request (a signature)."""
        if not prefix.endswith("/"):
            raise ValueError("a route prefix ends in '/'")
        self._prefixes.append((method.upper(), prefix, handler))
        if open_:
            self._open_prefixes.add(prefix)

    def allow_open(self, *paths: str) -> None:
        """Serve these engine paths without the admin check (health probes)."""
        self._open.update(paths)

    def _refusal(self, request: web.Request) -> web.StreamResponse | None:
        """The admin check for engine-owned paths (and paths no bot serves); a
        bot's own routes (web chat, webhooks) authenticate themselves."""
        if self.guard is None or request.path in self._open:
            return None
        if any(request.path.startswith(prefix) for prefix in self._open_prefixes):
            return None
        method = "GET" if request.method == "HEAD" else request.method
        entry = self._routes.get((method, request.path))
        if entry is not None and entry[0] != "engine":
            return None
        return self.guard(request)

    def remove_owner(self, owner: str) -> None:
        for key in [k for k, (o, _) in self._routes.items() if o == owner]:
            del self._routes[key]

    def paths(self, owner: str | None = None) -> list[str]:
        return sorted({p for (_, p), (o, _) in self._routes.items() if owner is None or o == owner})

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        path = request.path
        entry = self._routes.get((request.method, path))
        if entry is None and request.method == "HEAD":
            entry = self._routes.get(("GET", path))
        if entry is None:
            for method, prefix, handler in self._prefixes:
                if method == request.method and path.startswith(prefix):
                    return await handler(request)
            if any(p == path for (_, p) in self._routes):
                return web.json_response({"error": "method not allowed"}, status=405)
            return web.json_response({"error": f"no route for {path}"}, status=404)
        return await entry[1](request)

    async def _track(self, request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            self._websockets.add(response)

    async def close_websockets(self, timeout: float) -> int:
        """Close every open websocket with 1001 (going away); returns how many."""
        open_ = [ws for ws in list(self._websockets) if not ws.closed]
        if open_:
            closing = [
                asyncio.ensure_future(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"))
                for ws in open_
            ]
            _, late = await asyncio.wait(closing, timeout=max(0.01, timeout))
            for task in late:
                task.cancel()
            log.info("closed %d websockets (going away)", len(open_))
        return len(open_)

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        sock = socket.create_server((self.host, self.port), reuse_port=False)
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._site = site
        self.port = sock.getsockname()[1]
        log.info("HTTP server on http://%s:%d", self.host, self.port)
        return self.port

    async def stop_listening(self) -> None:
        """Refuse new connections; open websockets keep going until ``close``."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def close(self, timeout: float = 5.0) -> None:
        """Stop serving within ``timeout``: websockets get a going-away close (1001),
        then requests still running get what is left before they are cancelled, so
        an idle client cannot hold the process past the engine's shutdown timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.stop_listening()
        await self.close_websockets(min(1.0, timeout / 2))
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner._shutdown_timeout = max(0.01, deadline - loop.time())  # aiohttp reads it at cleanup
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.cleanup(), max(0.05, deadline - loop.time() + 0.5))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"
