"""WebConnection: the web chat's connection actor.

The web chat has no upstream to poll: its "connection" is the websocket
endpoint on the engine's server. This actor opens it when the bot starts and
stops new events when the bot stops, so a graceful shutdown acknowledges
nothing it will not handle. Supervised by the bot like every connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callboard.engine.actor import Actor

if TYPE_CHECKING:
    from callboard.adapters.web.adapter import WebAdapter


class WebConnection(Actor):
    def __init__(self, adapter: WebAdapter) -> None:
        self.adapter = adapter

    async def on_start(self) -> None:
        self.adapter.register_routes()
        self.adapter.gateway.start()
        peers = self.adapter.host.peers()  # cluster mode: replies and group changes made elsewhere
        self.adapter.outbox.peers = self.adapter.directory.peers = peers
        self.adapter.host.set_connected(True, f"serving {self.adapter.base_path}/ws")

    async def receive(self, message: Any) -> Any:
        raise TypeError(f"unexpected message {message!r}")

    async def on_stop(self) -> None:
        self.adapter.gateway.stop()
        self.adapter.host.set_connected(False, "stopped")
