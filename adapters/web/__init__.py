"""The built-in web chat: a page and a websocket protocol. The embedded
default platform, and the reference adapter for tests and benchmarks."""

from callboard.adapters.web.adapter import WebAdapter

ADAPTER = WebAdapter
