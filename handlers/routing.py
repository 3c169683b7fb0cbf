"""Per-bot routing rules: which handler an event (or a burst of messages) goes to.

As in the event-based design: ``event_type`` is an exact type, ``ns.*`` or
``*``; disabled rules are skipped; the highest ``priority`` wins and, among
equals, the rule written first; the first match wins, and with ``continue:
true`` on it the next matching rule runs too (and so on while rules say
``continue``), so "log everything to a webhook and also answer with an agent"
is two rules. A ``plugin`` rule falls through like that unless a listener calls
``prevent_default()``. Beyond the design, a rule may carry a ``when`` filter (chat type,
chat ids, user ids, a text regex). Platform-specific events also match their
qualified name (``platform.telegram.callback_query`` or ``platform.telegram.*``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from callboard.engine.entities import ChatType
from callboard.engine.events import (
    EVENT_TYPE_NAMES,
    Event,
    MessageEdited,
    MessageReceived,
    PlatformSpecific,
)
from callboard.handlers.agent.config import AgentConfig
from callboard.handlers.pipeline import PipelineConfig
from callboard.handlers.plugin.config import PluginHandlerConfig
from callboard.handlers.webhook.config import WebhookConfig

H = TypeVar("H")


class When(BaseModel):
    """Optional filters; every one given must match."""

    model_config = ConfigDict(extra="forbid")

    chat_type: ChatType | None = None
    chat_id: list[str] | None = Field(default=None, description="match any of these chat ids")
    user_id: list[str] | None = Field(default=None, description="match any of these sender ids")
    text: str | None = Field(default=None, description="regular expression searched in the message text")

    @field_validator("chat_id", "user_id", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, str | int):
            return [str(value)]
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @field_validator("text")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


HandlerType = Literal["pipeline", "agent", "webhook", "plugin"]
#: every handler kind a rule may name (a sandbox policy's ``exec_handlers`` too)
HANDLER_TYPES: tuple[str, ...] = get_args(HandlerType)

HandlerConfig = Annotated[
    PipelineConfig | AgentConfig | WebhookConfig | PluginHandlerConfig, Field(discriminator="handler_type")
]


class RouteRule(BaseModel):
    """One routing rule of a bot (the ``handlers:`` list in the fleet file)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    event_type: str = Field(description='"message.received", "message.*", "platform.telegram.*" or "*"')
    handler_type: HandlerType = Field(description="pipeline, agent, webhook or plugin")
    handler_config: HandlerConfig
    enabled: bool = True
    priority: int = Field(default=0, description="higher matches first")
    continue_: bool = Field(
        default=False, alias="continue", description="later matching rules run too, after this one"
    )
    description: str = ""
    when: When | None = None

    @model_validator(mode="before")
    @classmethod
    def _tag_handler_config(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("handler_config"), dict):
            # handler_type picks the model of handler_config: its tag is filled in
            data["handler_config"]["handler_type"] = data.get("handler_type")
        return data

    @field_validator("event_type")
    @classmethod
    def _known_pattern(cls, value: str) -> str:
        if value == "*" or value.startswith("platform."):
            return value
        if value.endswith(".*"):
            namespace = value[:-2]
            if not any(name.startswith(namespace + ".") for name in EVENT_TYPE_NAMES):
                raise ValueError("no event type in this namespace")
            return value
        if value not in EVENT_TYPE_NAMES:
            raise ValueError(f"unknown event type; known: {', '.join(EVENT_TYPE_NAMES)}")
        return value


def type_matches(pattern: str, event: Event) -> bool:
    names = (event.type, event.qualified_type) if isinstance(event, PlatformSpecific) else (event.type,)
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return any(name.startswith(prefix) for name in names)
    return pattern in names


def _text_of(event: Event) -> str | None:
    if isinstance(event, MessageReceived):
        return event.text
    if isinstance(event, MessageEdited):
        return event.new_content.text
    return None


class _Compiled(Generic[H]):
    __slots__ = ("handler", "index", "rule", "text")

    def __init__(self, index: int, rule: RouteRule, handler: H) -> None:
        self.index = index
        self.rule = rule
        self.handler = handler
        self.text = re.compile(rule.when.text) if rule.when and rule.when.text else None

    def matches(self, event: Event) -> bool:
        if not type_matches(self.rule.event_type, event):
            return False
        when = self.rule.when
        if when is None:
            return True
        chat_type = getattr(event, "chat_type", None)
        if when.chat_type is not None and chat_type != when.chat_type:
            return False
        if when.chat_id is not None and str(getattr(event, "chat_id", "")) not in when.chat_id:
            return False
        user = event.actor()
        if when.user_id is not None and (user is None or user.id not in when.user_id):
            return False
        if self.text is not None:
            text = _text_of(event)
            if text is None or not self.text.search(text):
                return False
        return True


class RouteTable(Generic[H]):
    """Compiled rules of one bot; ``match`` returns the winning handler or None."""

    def __init__(self, rules: Sequence[tuple[RouteRule, H]]) -> None:
        enabled = [(i, r, h) for i, (r, h) in enumerate(rules) if r.enabled]
        enabled.sort(key=lambda item: (-item[1].priority, item[0]))
        self._rules = [_Compiled(i, rule, handler) for i, rule, handler in enabled]
        self._all = [handler for _, handler in rules]

    def match(self, event: Event) -> H | None:
        for compiled in self._rules:
            if compiled.matches(event):
                return compiled.handler
        return None

    def match_all(self, event: Event) -> list[tuple[int, H]]:
        """The first matching handler, then the next ones for as long as the
        matched rules say ``continue``; each with its rule's place in the list. A
        plugin rule continues too: the rules after it are its fallback, which runs
        unless a listener prevents it (``HandlerContext.default_prevented``)."""
        out: list[tuple[int, H]] = []
        for compiled in self._rules:
            if compiled.matches(event):
                out.append((compiled.index, compiled.handler))
                if not (compiled.rule.continue_ or compiled.rule.handler_type == "plugin"):
                    break
        return out

    def at(self, index: int) -> H | None:
        """The handler of the rule at ``index`` in the bot's list (a retried run's)."""
        return self._all[index] if 0 <= index < len(self._all) else None

    @property
    def handlers(self) -> list[H]:
        return list(self._all)

    def match_rule(self, event: Event) -> RouteRule | None:
        for compiled in self._rules:
            if compiled.matches(event):
                return compiled.rule
        return None
