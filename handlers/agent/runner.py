"""What an agent runner is: one call to a model or agent service, and its answer.

A runner turns a ``RunRequest`` (the conversation so far, the tools on offer)
into a ``Completion`` (text, tool calls, usage), streaming text through
``on_delta`` as it arrives. The agent handler owns the loop around it (tool
rounds, memory, streaming to the chat, the deadline); a runner only talks
HTTP. Runners are registered by name in ``callboard.handlers.agent.runners``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

#: streamed text, piece by piece
DeltaFn = Callable[[str], Awaitable[None]]


class RunnerError(Exception):
    """The model or service failed. ``transient`` failures (429, 5xx, timeouts,
    dropped connections) are retried within the run's deadline; others end the run.
    The message never holds credentials or the request body."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass(slots=True)
class RunRequest:
    """One call: OpenAI-style ``messages`` (the system prompt first) and ``tools``
    (OpenAI function specs). ``conversation`` is the runner's own per-session
    state (e.g. Dify's conversation id): read it, update it, it is persisted."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    stream: bool
    user: str
    conversation: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Completion:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


class Runner(Protocol):
    """One runner instance per routing rule; it may keep an HTTP session open."""

    name: ClassVar[str]
    #: whether it can call our tools (a remote agent service brings its own)
    supports_tools: ClassVar[bool]

    async def complete(self, request: RunRequest, on_delta: DeltaFn) -> Completion: ...

    async def close(self) -> None: ...


class RunnerType(Protocol):
    name: ClassVar[str]
    config_type: ClassVar[type[BaseModel]]

    def __call__(self, config: Any) -> Runner: ...
