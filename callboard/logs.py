"""Logging setup: one format, and every secret of the fleet file masked.

A logger-level filter does not reach child loggers created later, and an SDK
may put a token in a URL it logs; masking at the formatter of the root
handler covers every record, traceback included.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from pydantic import BaseModel, SecretStr

from callboard.engine.logcontext import log_fields

MASK = "***"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self.secrets: set[str] = set()
        self.json = False

    def format(self, record: logging.LogRecord) -> str:
        text = self._json(record) if self.json else super().format(record)
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _json(self, record: logging.LogRecord) -> str:
        """One object a line: when, how bad, who, what, and the fields bound where it was
        written (``callboard.engine.logcontext``: actor, bot, session, run, events)."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **log_fields(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_formatter = RedactingFormatter()


def setup(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_formatter)


def use_format(name: str) -> None:
    """``text`` (the default) or ``json`` for every line from now on."""
    _formatter.json = name == "json"


def hide_secrets(config: BaseModel) -> None:
    """Mask every ``SecretStr`` value of ``config`` in all log output from now on."""
    _formatter.secrets.update(value for value in _secrets(config) if len(value) >= 4)


def hide(secret: str | None) -> None:
    """Mask one secret that is not in the fleet file (a generated admin token)."""
    if secret is not None and len(secret) >= 4:
        _formatter.secrets.add(secret)


def _secrets(value: Any) -> list[str]:
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return [s for field in type(value).model_fields for s in _secrets(getattr(value, field))]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _secrets(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _secrets(item)]
    return []
