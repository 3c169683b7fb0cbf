"""Agent and webhook rules in the fleet file: names kept, templates checked at load,
errors that name file, line and key and never echo a value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from callboard.actors.config_file import ConfigError, load_fleet, parse_fleet
from callboard.handlers.agent.config import AgentConfig
from callboard.handlers.pipeline import AgentStageConfig
from callboard.handlers.webhook.config import WebhookConfig

SECRET = "sk-live-DO-NOT-ECHO-0123456789"

FLEET = """
name: t
bots:
  - id: demo
    adapter: {{type: web}}
    handlers:
{rules}
"""


def parse(rules: str) -> object:
    return parse_fleet(
        FLEET.format(rules=textwrap.indent(textwrap.dedent(rules).strip("\n"), "      ")), "f.yaml"
    )


def test_the_issue_example_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    config = parse(
        """
        - event_type: message.received
          handler_type: agent
          handler_config:
            runner: openai
            runner_config:
              base_url: http://127.0.0.1:11434/v1
              api_key: ${OPENAI_API_KEY:-none}
              model: qwen2.5:7b
            prompt: "You are the assistant of {group_name}. Be brief."
            memory: {max_turns: 20}
            stream: true
            busy: queue
            tools: {sandbox: [exec, read, write], platform: [add_reaction]}
        - event_type: "*"
          handler_type: webhook
          continue: true
          handler_config:
            url: https://hooks.example.com/callboard
            secret: ${WEBHOOK_SECRET}
            timeout: 10s
            retries: {count: 3, interval: 1s}
            response_actions: true
        """
    )
    agent_rule, webhook_rule = config.bots[0].handlers  # type: ignore[attr-defined]
    agent = agent_rule.handler_config
    assert isinstance(agent, AgentConfig) and agent.runner == "openai" and agent.memory.max_turns == 20
    assert agent.tools.sandbox == ["exec", "read", "write"] and agent.tools.platform == ["add_reaction"]
    webhook = webhook_rule.handler_config
    assert isinstance(webhook, WebhookConfig) and webhook.timeout == 10.0 and webhook.retries.count == 3
    assert webhook_rule.continue_ and not agent_rule.continue_
    assert SECRET not in repr(config) and webhook.secret is not None
    assert webhook.secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("handler_config", "where", "reason"),
    [
        (
            '{runner: openai, runner_config: {base_url: "http://x/v1", model: m}, prompt: "Hi {nope}"}',
            "handler_config.prompt",
            "unknown placeholder {nope}",
        ),
        (
            '{runner: openai, runner_config: {base_url: "http://x/v1", model: m}, event_prompt: "{time:%H}"}',
            "handler_config.event_prompt",
            "takes no format spec",
        ),
        ("{runner: gpt, runner_config: {model: m}}", "handler_config.runner_config", "expected one of"),
        (
            f'{{runner: openai, runner_config: {{base_url: "ftp://x", api_key: "{SECRET}", model: m}}}}',
            "runner_config",
            "base_url must start with http",
        ),
        (
            f'{{runner: dify, runner_config: {{base_url: "http://x/v1", api_key: "{SECRET}"}}, '
            "tools: {sandbox: [exec]}}",
            "handler_config",
            "brings its own tools",
        ),
        (
            '{runner: openai, runner_config: {base_url: "http://x/v1", model: m}, tools: {max_rounds: 500}}',
            "tools.max_rounds",
            "less than or equal to 128",
        ),
    ],
)
def test_agent_config_errors(handler_config: str, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"- event_type: message.received\n  handler_type: agent\n  handler_config: {handler_config}")
    text = str(caught.value)
    assert "f.yaml:" in text and where in text and reason in text, text
    assert SECRET not in text


@pytest.mark.parametrize(
    ("handler_config", "reason"),
    [
        (f'{{url: "http://h/x", secret: "{SECRET}", mode: async}}', "mode async needs callback_base"),
        ('{url: "http://h/x", mode: async, callback_base: "http://me"}', "mode async needs a secret"),
        (f'{{url: "hooks.example.com", secret: "{SECRET}"}}', "url must start with http"),
        ('{url: "http://h/x", headers: {Idempotency-Key: x}}', "set by callboard"),
        ('{url: "http://h/x", retries: {count: -1}}', "retries.count"),
    ],
)
def test_webhook_config_errors(handler_config: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f'- event_type: "*"\n  handler_type: webhook\n  handler_config: {handler_config}')
    text = str(caught.value)
    assert reason in text and SECRET not in text, text


def test_an_agent_runs_as_a_pipeline_stage_config() -> None:
    config = parse(
        """
        - event_type: message.received
          handler_type: pipeline
          handler_config:
            stages:
              - {type: command}
              - {type: agent, runner: n8n, runner_config: {url: "http://127.0.0.1:5678/webhook/x"}}
        """
    )
    stage = config.bots[0].handlers[0].handler_config.stages[1]  # type: ignore[attr-defined]
    assert isinstance(stage, AgentStageConfig) and stage.runner == "n8n"


def test_the_example_fleet_loads() -> None:
    config = load_fleet(Path(__file__).resolve().parents[2] / "config" / "agent.example.yaml")
    rules = config.bots[0].handlers
    assert [rule.handler_type for rule in rules] == ["webhook", "agent", "agent"]
    assert rules[0].continue_ and isinstance(rules[1].handler_config, AgentConfig)


def test_an_agent_deadline_must_end_before_the_sessions() -> None:
    text = """
name: t
bots:
  - id: demo
    adapter: {type: web}
    session: {handler_timeout: 30s}
    handlers:
      - event_type: message.received
        handler_type: agent
        handler_config: {runner: openai, runner_config: {base_url: "http://x/v1", model: m}, deadline: 45s}
"""
    with pytest.raises(ConfigError, match=r"bots\[0\]: handlers\[0\]: the agent's deadline must be shorter"):
        parse_fleet(text, "f.yaml")
    parse_fleet(text.replace("deadline: 45s", "deadline: 25s"), "f.yaml")
