"""Which lark-oapi the long connection can drive.

``longconn`` drives private parts of the SDK's ws client (its connect, ping, frame and
disconnect coroutines; see that module for why), which a new SDK release may rename
without notice. So the versions it was built and tested against are a range: outside it
a ``mode: ws`` bot is refused when the configuration is read, with a message that says
what to install, instead of failing on its first connect. Reading the version costs no
import of the SDK itself (seconds and ~100 MB), which webhook bots never need.
"""

from __future__ import annotations

from importlib import metadata

#: lark-oapi versions whose ws client internals ``longconn`` drives: [low, high)
SUPPORTED = ((1, 4), (1, 8))
#: what ``longconn`` calls or replaces on ``lark_oapi.ws.client.Client``
DRIVEN = ("_connect", "_disconnect", "_ping_loop", "_handle_message", "_combine", "_write_message")


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def sdk_version_problem(version: str | None = None) -> str | None:
    """Why the installed (or given) lark-oapi cannot run a long connection, or None."""
    if version is None:
        try:
            version = metadata.version("lark-oapi")
        except metadata.PackageNotFoundError:
            return "mode: ws needs lark-oapi: pip install 'callboard[lark]'"
    low, high = SUPPORTED
    if not low <= _release(version) < high:
        return (
            f"mode: ws drives lark-oapi's ws client, tested with {low[0]}.{low[1]} up to before "
            f"{high[0]}.{high[1]}; lark-oapi {version} is installed: "
            f"pip install 'lark-oapi>={low[0]}.{low[1]},<{high[0]}.{high[1]}', or use mode: webhook"
        )
    return None


def missing_internals(client_class: type) -> list[str]:
    """The parts ``longconn`` drives that this SDK's client lacks (a backstop for a
    release inside the range that changed them anyway)."""
    return [name for name in DRIVEN if not callable(getattr(client_class, name, None))]
