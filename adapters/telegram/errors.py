"""Telegram errors in the engine's terms, with the bot token kept out of them.

The token is part of every Bot API URL, so anything that prints a URL can
leak it: PTB's debug log of the API root and of file paths, the message of
PTB's ``InvalidToken``. Every token a Telegram adapter uses is registered
here; ``redact`` removes the known tokens from a text, and a log filter does
the same for the records of the libraries that print URLs.
"""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta

from telegram import error as tg_error
from telegram.warnings import PTBDeprecationWarning

from callboard.adapters.base import AdapterAuthError
from callboard.engine.platform import SendError

REDACTED = "<token>"

_secrets: set[str] = set()

#: loggers that print Bot API URLs (PTB's own are created when telegram is imported)
_URL_LOGGERS = ("telegram", "telegram.Bot")


def redact(text: str) -> str:
    """``text`` with every registered token replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _RedactTokens(logging.Filter):
    """Formats a record's message now (PTB logs a result dict it then changes
    to hold the token) and removes registered tokens from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: logging reports it when it formats it
            return True
        record.msg, record.args = redact(message), None
        return True


_FILTER = _RedactTokens()


def protect(secret: str) -> None:
    """Register a secret (a bot token) to be kept out of logs and errors."""
    _secrets.add(secret)
    names = set(_URL_LOGGERS) | {
        name
        for name in logging.root.manager.loggerDict
        if name.startswith(("telegram.", "httpx", "httpcore"))
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class TelegramAPIError(SendError):
    """The Bot API refused or failed a call. ``permanent`` says whether
    repeating it can help; ``retry_after`` is Telegram's flood-control wait."""

    def __init__(
        self, method: str, message: str, *, permanent: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"Telegram {method}: {message}", permanent=permanent, retry_after=retry_after)
        self.method = method


class ChatMigratedError(TelegramAPIError):
    """The group became a supergroup with a new chat id; send there instead."""

    def __init__(self, method: str, new_chat_id: int) -> None:
        super().__init__(
            method, f"the group was upgraded to a supergroup, now chat {new_chat_id}", permanent=True
        )
        self.new_chat_id = str(new_chat_id)


class ConnectionFailed(Exception):
    """The connection to the Bot API failed; the supervisor reconnects with backoff."""


def retry_after_seconds(exc: tg_error.RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns about its int/timedelta migration here
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def api_error(exc: tg_error.TelegramError, method: str) -> TelegramAPIError:
    """Classify a PTB error of an API call: permanent refusals are not retried."""
    message = redact(exc.message)
    if isinstance(exc, tg_error.RetryAfter):
        return TelegramAPIError(method, message, permanent=False, retry_after=retry_after_seconds(exc))
    if isinstance(exc, tg_error.ChatMigrated):
        return ChatMigratedError(method, exc.new_chat_id)
    if isinstance(exc, tg_error.InvalidToken):
        return TelegramAPIError(method, "the Bot API rejected the bot token", permanent=True)
    # Bad requests (chat not found, message too long...) and refusals (bot blocked,
    # kicked) repeat forever; network errors, timeouts, 5xx and garbled answers pass.
    permanent = isinstance(exc, tg_error.BadRequest | tg_error.Forbidden | tg_error.EndPointNotFound)
    return TelegramAPIError(method, message, permanent=permanent)


def connection_error(exc: tg_error.TelegramError, method: str, bot_id: str) -> Exception:
    """A failure of the connection's own calls: a rejected token stops the bot,
    anything else is transient and reconnects."""
    if isinstance(exc, tg_error.InvalidToken):
        return AdapterAuthError(
            f"bot {bot_id!r}: Telegram rejected the bot token on {method} ({redact(exc.message)}); "
            "check the token from @BotFather (TELEGRAM_TOKEN) and base_url"
        )
    if isinstance(exc, tg_error.Conflict):
        return ConnectionFailed(
            f"{method}: {redact(exc.message)} (another process is polling with this token, "
            "or a webhook is set)"
        )
    return ConnectionFailed(f"{method}: {type(exc).__name__}: {redact(exc.message)}")
