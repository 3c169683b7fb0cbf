"""Fleet rules for agent tests, using the fake OpenAI-compatible server (``model``, tests/conftest.py)."""

from __future__ import annotations

from tests.support import API_KEY


def agent_rule(base_url: str, extra: str = "", event_type: str = "message.received") -> str:
    """A routing rule (YAML) with an openai agent on ``base_url``; ``extra`` adds handler_config lines."""
    lines = "".join(f"\n    {line}" for line in extra.strip().splitlines())
    return f"""
- event_type: {event_type}
  handler_type: agent
  handler_config:
    runner: openai
    runner_config: {{base_url: "{base_url}", api_key: "{API_KEY}", model: fake-model}}
    prompt: "You are {{bot_name}} in a {{chat_type}} chat."
    stream_interval: 50ms{lines}
"""
