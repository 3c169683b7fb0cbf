"""Routing rules: patterns, precedence, filters."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from callboard.engine.entities import ChatType, Group, MessageChain, User
from callboard.engine.events import Event, MemberJoined, MessageReceived, PlatformSpecific
from callboard.handlers.routing import RouteRule, RouteTable

PIPE = {"stages": [{"type": "echo"}]}


def rule(event_type: str, **extra: Any) -> RouteRule:
    return RouteRule(event_type=event_type, handler_type="pipeline", handler_config=PIPE, **extra)


def message(text: str = "hi", chat_type: str = "private", chat_id: str = "c1", user: str = "u1") -> Event:
    return MessageReceived(
        bot_id="b",
        adapter="web",
        chat_type=ChatType(chat_type),
        chat_id=chat_id,
        message_id="m",
        message_chain=MessageChain.of(text),
        sender=User(id=user),
    )


JOIN = MemberJoined(bot_id="b", adapter="web", group=Group(id="g"), member=User(id="u2"))
CALLBACK = PlatformSpecific(bot_id="b", adapter="telegram", action="callback_query")


def route(rules: list[tuple[RouteRule, str]], event: Event) -> str | None:
    return RouteTable(rules).match(event)


def test_exact_namespace_and_wildcard() -> None:
    rules = [(rule("message.received"), "exact"), (rule("group.*"), "group"), (rule("*"), "any")]
    assert route(rules, message()) == "exact"
    assert route(rules, JOIN) == "group"
    assert route(rules, CALLBACK) == "any"


def test_priority_then_declaration_order() -> None:
    rules = [
        (rule("*", priority=0), "low"),
        (rule("message.*", priority=5), "first-of-equals"),
        (rule("message.received", priority=5), "second-of-equals"),
        (rule("message.received", priority=10, enabled=False), "disabled"),
    ]
    assert route(rules, message()) == "first-of-equals"
    assert route(rules, JOIN) == "low"


def test_first_match_wins_exclusively() -> None:
    router = RouteTable([(rule("message.received"), "a"), (rule("message.received"), "b")])
    assert router.match(message()) == "a"
    assert router.match_rule(message()).event_type == "message.received"  # type: ignore[union-attr]


def test_platform_specific_qualified_names() -> None:
    rules = [(rule("platform.telegram.*"), "tg"), (rule("platform.specific"), "generic")]
    assert route(rules, CALLBACK) == "tg"
    other = PlatformSpecific(bot_id="b", adapter="slack", action="app_home_opened")
    assert route(rules, other) == "generic"
    assert route([(rule("platform.telegram.callback_query"), "x")], CALLBACK) == "x"


def test_when_filters() -> None:
    rules = [
        (rule("message.received", when={"text": r"^/"}), "command"),
        (rule("message.received", when={"chat_type": "group", "user_id": ["boss"]}), "boss-in-group"),
        (rule("message.received", when={"chat_id": "vip"}), "vip"),
        (rule("*"), "rest"),
    ]
    assert route(rules, message("/help")) == "command"
    assert route(rules, message("yo", chat_type="group", user="boss")) == "boss-in-group"
    assert route(rules, message("yo", chat_type="private", user="boss")) == "rest"
    assert route(rules, message("yo", chat_id="vip")) == "vip"
    assert route(rules, JOIN) == "rest"  # a text filter never matches events without text


def test_no_match_is_none() -> None:
    assert route([(rule("group.*"), "g")], message()) is None


@pytest.mark.parametrize(
    ("event_type", "error"),
    [("message.recieved", "unknown event type"), ("nothing.*", "no event type in this namespace")],
)
def test_bad_patterns(event_type: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        rule(event_type)


def test_bad_when_and_unknown_types() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression"):
        rule("*", when={"text": "("})
    with pytest.raises(ValidationError, match="handler_type"):
        RouteRule(event_type="*", handler_type="nope", handler_config={})  # type: ignore[arg-type]
