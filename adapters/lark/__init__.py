"""Lark / Feishu: the long connection (lark-oapi's ws client) or a webhook, the
common event set, cards and streamed replies, and the unified platform API
(see docs/lark.md)."""

from callboard.adapters.lark.adapter import LarkAdapter

ADAPTER = LarkAdapter
