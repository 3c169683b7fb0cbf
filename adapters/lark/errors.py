"""Lark open API errors in the engine's terms.

Lark answers most failures with HTTP 200 or 400 and a numeric ``code``; the
codes below decide what the outbound actor does: retry later (rate limits,
server trouble), refresh the access token and retry at once, or give up.
"""

from __future__ import annotations

from callboard.adapters.base import AdapterAuthError
from callboard.engine.platform import SendError

#: "request trigger frequency limit"
RATE_LIMITED = 99991400
#: access token missing, invalid or expired: fetch a new one and repeat the call
TOKEN_INVALID = frozenset({99991661, 99991663, 99991664, 99991668, 99991671, 99991677})
#: the app's credentials are wrong: retrying cannot help
BAD_CREDENTIALS = frozenset({10003, 10014, 10012, 99991543, 99991665})
#: the platform's own trouble: worth retrying
SERVER_ERRORS = frozenset({1, 99991401, 99991500, 230020, 230099})


class LarkAPIError(SendError):
    """The open API refused or failed a call. ``code`` is Lark's, 0 for a transport failure."""

    def __init__(
        self,
        call: str,
        code: int,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        status: int = 0,
    ) -> None:
        super().__init__(
            f"Lark {call}: {message} (code {code})", permanent=permanent, retry_after=retry_after
        )
        self.call = call
        self.code = code
        self.status = status


class ConnectionFailed(Exception):
    """The link to Lark failed; the supervisor reconnects with backoff."""


def classify(call: str, status: int, code: int, message: str, retry_after: float | None) -> LarkAPIError:
    """A failed call as an error the outbound actor can act on."""
    if code == RATE_LIMITED or status == 429:
        return LarkAPIError(
            call, code, message, permanent=False, retry_after=retry_after or 1.0, status=status
        )
    transient = status >= 500 or code in SERVER_ERRORS or code in TOKEN_INVALID
    return LarkAPIError(call, code, message, permanent=not transient, status=status)


def auth_error(bot_id: str, code: int, message: str) -> AdapterAuthError:
    return AdapterAuthError(
        f"bot {bot_id!r}: Lark rejected the app's credentials ({message}, code {code}); "
        "check app_id and app_secret (LARK_APP_SECRET) and domain"
    )
