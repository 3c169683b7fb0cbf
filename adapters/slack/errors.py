"""Slack errors in the engine's terms.

Every Web API answer carries ``ok``; a refusal names its ``error`` code. Codes
that can succeed later (``ratelimited``, ``internal_error``, 5xx, network
failures) are transient and retried by the outbound path, with Slack's
``Retry-After`` when it sent one; everything else (``channel_not_found``,
``msg_too_long``, ``not_in_channel``...) is permanent and recorded on the
receipt. A rejected token stops the bot (``AdapterAuthError``) with the code
that says why. Slack never puts tokens in URLs, and slack_sdk redacts the
Authorization header in its debug log; tokens are still kept out of every
message here.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from callboard.adapters.base import AdapterAuthError
from callboard.engine.platform import SendError

#: error codes worth repeating: the same call can succeed later
TRANSIENT = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)
#: error codes that mean the token itself is refused
AUTH = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "not_allowed_token_type",
        "no_permission",
        "ekm_access_denied",
    }
)


class SlackAPIError(SendError):
    """A Web API call Slack refused or that failed on the way. ``code`` is
    Slack's error code (``channel_not_found``) or ``http_<status>`` /
    ``network`` for failures without one."""

    def __init__(
        self, method: str, code: str, *, permanent: bool, retry_after: float | None = None, detail: str = ""
    ) -> None:
        text = f"Slack {method}: {code}" + (f" ({detail})" if detail else "")
        super().__init__(text, permanent=permanent, retry_after=retry_after)
        self.method = method
        self.code = code


class ConnectionFailed(Exception):
    """The connection to Slack failed; the supervisor reconnects with backoff."""


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def api_error(exc: Exception, method: str) -> SlackAPIError:
    """Classify a failure of one Web API call."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        if not isinstance(code, str) or not code:
            code = f"http_{status}" if status else "invalid_response"
        retry_after = _retry_after(getattr(response, "headers", None))
        transient = code in TRANSIENT or status == 429 or status >= 500 or code == "invalid_response"
        detail = ""
        if isinstance(data, dict):
            needed = data.get("needed")
            if isinstance(needed, str):
                detail = f"needs scope {needed}"
        return SlackAPIError(method, code, permanent=not transient, retry_after=retry_after, detail=detail)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return SlackAPIError(method, "network", permanent=False, detail=type(exc).__name__)
    if isinstance(exc, SlackClientError):  # the SDK refused the call before sending it
        return SlackAPIError(method, "client_error", permanent=True, detail=str(exc)[:200])
    raise exc


def connection_error(exc: SlackAPIError, bot_id: str) -> Exception:
    """A failure of the connection's own calls: a refused token stops the bot,
    anything else is transient and reconnects."""
    if exc.code in AUTH:
        return AdapterAuthError(
            f"bot {bot_id!r}: Slack refused the token on {exc.method} ({exc.code}); check bot_token "
            "(xoxb-), app_token (xapp-, with connections:write) and that the app is installed"
        )
    return ConnectionFailed(str(exc))
