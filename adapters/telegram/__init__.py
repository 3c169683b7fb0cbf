"""Telegram, through python-telegram-bot: long polling or a webhook, the
common event set, and the unified platform API (see docs/telegram.md)."""

from callboard.adapters.telegram.adapter import TelegramAdapter

ADAPTER = TelegramAdapter
