"""The runner registry: one module per runner, listed here by name.

A new runner is one module with a config model (a ``runner: Literal[name]``
field as its tag) and a class with ``complete`` and ``close``, added to
``RUNNERS``; the fleet file's schema picks it up from here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from callboard.handlers.agent.runners.dify import DifyRunner, DifyRunnerConfig
from callboard.handlers.agent.runners.n8n import N8nRunner, N8nRunnerConfig
from callboard.handlers.agent.runners.openai import OpenAIRunner, OpenAIRunnerConfig

RUNNERS: dict[str, Any] = {runner.name: runner for runner in (OpenAIRunner, DifyRunner, N8nRunner)}

RunnerConfig = Annotated[
    OpenAIRunnerConfig | DifyRunnerConfig | N8nRunnerConfig, Field(discriminator="runner")
]

__all__ = ["RUNNERS", "RunnerConfig"]
