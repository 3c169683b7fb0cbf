"""The chat page and its static assets (packaged with the adapter)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from callboard.adapters.base import HttpHandler

ASSETS = {
    "app.js": "application/javascript",
    "style.css": "text/css",
}


class Page:
    def __init__(self, base_path: str, bot_id: str, title: str) -> None:
        self.base_path = base_path
        template = _read("index.html").decode("utf-8")
        self.html = template.replace("{{TITLE}}", _escape(title)).replace("{{BOT_ID}}", _escape(bot_id))
        self.assets = {name: _read(name) for name in ASSETS}

    def routes(self) -> list[tuple[str, str, HttpHandler]]:
        base = self.base_path
        return [
            ("GET", f"{base}/", self.page),
            ("GET", base, self.redirect),
            *[("GET", f"{base}/static/{name}", self.asset) for name in ASSETS],
        ]

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=self.html, content_type="text/html")

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{self.base_path}/")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[-1]
        return web.Response(body=self.assets[name], content_type=ASSETS[name])


def _read(name: str) -> bytes:
    return resources.files("callboard.adapters.web").joinpath(f"static/{name}").read_bytes()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
