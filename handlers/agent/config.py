"""The agent handler's ``handler_config``."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from callboard.engine.sandbox_api import ToolName
from callboard.engine.units import Duration
from callboard.handlers.agent.prompt import check_template
from callboard.handlers.agent.runners import RunnerConfig

#: platform calls an agent may be given as tools (each acts on the run's own chat)
PlatformTool = Literal[
    "send_message",
    "add_reaction",
    "edit_message",
    "delete_message",
    "kick_member",
    "mute_member",
    "unmute_member",
    "get_group_member_list",
    "get_user_info",
    "call_platform_api",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryConfig(_Strict):
    max_turns: int = Field(default=20, ge=0, le=1000, description="user turns kept (0: no memory)")
    max_tokens: int = Field(
        default=8000, ge=0, description="estimated tokens of kept turns (4 characters a token); 0: no cap"
    )
    summarize: bool = Field(
        default=False,
        description="dropped turns are summarised by the model; the summary stays in the prompt",
    )


class McpServerConfig(_Strict):
    """One MCP server whose tools the agent may call: a stdio command run as a managed
    process in the bot's sandbox (never on the host), or a streamable-HTTP/SSE URL."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,24}$", description="tools are offered as mcp_<name>_<tool>")
    command: list[str] | None = Field(
        default=None, min_length=1, description="stdio server, run in the sandbox"
    )
    env: dict[str, SecretStr] = Field(
        default_factory=dict, description="its environment (values never logged)"
    )
    url: str | None = Field(default=None, pattern=r"^https?://", description="a remote server instead")
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="HTTP headers (e.g. a token)")
    tools: list[str] | None = Field(default=None, description="offer only these of its tools (unset: all)")
    timeout: Duration = Field(default=30.0, gt=0, description="one tool call, as the sandbox tools' deadline")
    restart: Literal["always", "on-failure", "never"] = "on-failure"

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (stdio, in the sandbox) or url")
        return self


class ToolsConfig(_Strict):
    sandbox: list[ToolName] = Field(
        default_factory=list, description="sandbox tools offered (the bot's sandbox policy still applies)"
    )
    platform: list[PlatformTool] = Field(
        default_factory=list, description="platform calls offered, on the run's chat only"
    )
    mcp: list[McpServerConfig] = Field(
        default_factory=list, description="MCP servers whose tools are offered (needs callboard[mcp])"
    )
    skills: bool = Field(
        default=False,
        description="offer list_skills: the sandbox's skills with the first line of each SKILL.md "
        "(needs the glob and read sandbox tools)",
    )
    max_rounds: int = Field(default=16, ge=1, le=128, description="tool rounds per run")
    result_limit: int = Field(default=4000, ge=100, description="characters of a tool result the model sees")


class AgentConfig(_Strict):
    handler_type: Literal["agent"] = Field(default="agent", exclude=True)
    runner: str = Field(description="openai, dify or n8n")
    runner_config: RunnerConfig
    prompt: str = Field(
        default="You are {bot_name}, a helpful assistant in a chat. Be brief.",
        description="system prompt; placeholders: see docs/agent.md",
    )
    event_prompt: str = Field(
        default="{event_summary}", description="the user turn of a non-message event (e.g. a member joined)"
    )
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    stream: bool = Field(default=True, description="edit one message as tokens arrive, where the chat can")
    stream_interval: Duration = Field(default=0.8, ge=0.02, description="least time between streaming edits")
    busy: Literal["queue", "collect", "interrupt"] = Field(
        default="queue", description="messages arriving during a run: next run, one collected run, or restart"
    )
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    deadline: Duration = Field(default=50.0, gt=0, description="one run, retries included")
    failure_message: str = Field(
        default="Sorry, I could not answer just now. Please try again.", max_length=500
    )
    reset_command: str = Field(default="/reset", description="clears this chat's memory")

    @model_validator(mode="before")
    @classmethod
    def _tag_runner_config(cls, data: Any) -> Any:
        """``runner`` picks the model of ``runner_config`` (its tag is filled in)."""
        if isinstance(data, dict):
            runner, config = data.get("runner"), data.get("runner_config")
            if isinstance(runner, str) and isinstance(config, dict):
                config["runner"] = runner
        return data

    @field_validator("prompt", "event_prompt")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _tools_need_a_tool_runner(self) -> AgentConfig:
        from callboard.handlers.agent.runners import RUNNERS

        runner = RUNNERS[self.runner]
        tools = self.tools
        if (tools.sandbox or tools.platform or tools.mcp or tools.skills) and not runner.supports_tools:
            raise ValueError(
                f"runner {self.runner!r} brings its own tools; remove tools.sandbox/platform/mcp/skills"
            )
        if self.tools.mcp and importlib.util.find_spec("mcp") is None:
            raise ValueError("tools.mcp needs the MCP client: pip install 'callboard[mcp]'")
        names = [server.name for server in self.tools.mcp]
        if len(set(names)) != len(names):
            raise ValueError("tools.mcp: server names must be unique")
        return self
