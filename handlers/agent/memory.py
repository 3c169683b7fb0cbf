"""The agent's memory of one chat, kept in the session's journal state.

``state["agent"]`` holds ``turns`` (OpenAI-style messages: each user turn,
then the assistant's answer), a ``summary`` of dropped turns (when the rule
asks for one), the runner's own ``conversation`` state (e.g.
Dify's conversation id) and, while a run is in progress, ``run``: that run's
id and the tool-call messages it has recorded so far. The session saves state
when a run ends and the agent checkpoints it after each tool round, so
passivation, restarts and kill -9 lose nothing, and a replayed run resumes
from its recorded tool results instead of running the tools again (its later
sends keep their receipt keys, and its streamed reply is the same message).
"""

from __future__ import annotations

from typing import Any

from callboard.handlers.agent.config import MemoryConfig

CHARS_PER_TOKEN = 4


class Memory:
    """A view over ``state["agent"]``; every change is made in place."""

    def __init__(self, state: dict[str, Any], config: MemoryConfig) -> None:
        self.data: dict[str, Any] = state.setdefault("agent", {})
        self.data.setdefault("turns", [])
        self.data.setdefault("conversation", {})
        self.config = config

    @property
    def turns(self) -> list[dict[str, Any]]:
        turns: list[dict[str, Any]] = self.data["turns"]
        return turns

    @property
    def conversation(self) -> dict[str, Any]:
        conversation: dict[str, Any] = self.data["conversation"]
        return conversation

    def run_record(self, run_id: int) -> dict[str, Any]:
        """The record of ``run_id`` (a replayed run finds its own; any other
        run's leftovers are dropped): ``messages`` (the tool rounds so far),
        ``calls`` (receipted platform calls they made) and ``message_id`` (the
        streamed reply, once sent)."""
        record = self.data.get("run")
        if not isinstance(record, dict) or record.get("id") != run_id:
            record = self.data["run"] = {"id": run_id, "messages": [], "calls": 0, "message_id": None}
        return record

    @property
    def summary(self) -> str:
        return str(self.data.get("summary") or "")

    @summary.setter
    def summary(self, text: str) -> None:
        self.data["summary"] = text

    def finish(self, user: str, answer: str) -> list[dict[str, Any]]:
        """Keep the finished exchange and forget the run record; returns the
        turns dropped to stay within the bounds (oldest first)."""
        self.data.pop("run", None)
        if self.config.max_turns == 0:
            self.turns.clear()
            return []
        self.turns.append({"role": "user", "content": user})
        self.turns.append({"role": "assistant", "content": answer})
        return self._trim()

    def abandon(self) -> None:
        self.data.pop("run", None)

    def reset(self) -> None:
        self.turns.clear()
        self.conversation.clear()
        self.data.pop("run", None)
        self.data.pop("summary", None)

    def _trim(self) -> list[dict[str, Any]]:
        """Drop the oldest turns (a user turn and its answer together) until both bounds hold."""
        turns = self.turns
        budget = self.config.max_tokens * CHARS_PER_TOKEN
        users = sum(1 for turn in turns if turn["role"] == "user")
        size = sum(_size(turn) for turn in turns) if budget else 0
        dropped: list[dict[str, Any]] = []
        while turns and (users > self.config.max_turns or size > budget > 0):
            first = True
            while turns and (first or turns[0]["role"] != "user"):
                turn = turns.pop(0)
                users -= turn["role"] == "user"
                size -= _size(turn) if budget else 0
                dropped.append(turn)
                first = False
        return dropped


def _size(turn: dict[str, Any]) -> int:
    return len(str(turn.get("content") or ""))
