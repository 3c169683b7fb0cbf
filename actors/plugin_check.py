"""Checking plugins' config values when a fleet file is read.

Each plugin's ``Config`` model lives in plugin code, which the engine never
imports: ``python -m callboard.plugin.check`` validates the values in a
process of its own and reports each problem's location inside the plugin's
``config:``; the caller turns that into file, line and key.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import orjson

from callboard.handlers.plugin.config import PluginSpec

CHECK_TIMEOUT = 60.0

#: (key path from the fleet file's root, message)
ConfigProblem = tuple[tuple[str | int, ...], str]


def plugin_config_problems(plugins: Sequence[PluginSpec]) -> list[ConfigProblem]:
    """Problems with the ``config:`` of each enabled plugin (empty: all load)."""
    indexed = {spec.name: index for index, spec in enumerate(plugins) if spec.enabled}
    if not indexed:
        return []
    specs = [plugins[index].wire() for index in indexed.values()]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "callboard.plugin.check"],
            input=orjson.dumps(specs),
            capture_output=True,
            timeout=CHECK_TIMEOUT,
            check=True,
        )
        failures = orjson.loads(done.stdout)
    except (subprocess.SubprocessError, orjson.JSONDecodeError, OSError) as exc:
        return [(("plugins",), f"could not check the plugins' config: {type(exc).__name__}")]
    problems: list[ConfigProblem] = []
    for failure in failures:
        base: tuple[str | int, ...] = ("plugins", indexed[failure["name"]])
        if not failure["problems"]:
            problems.append((base, f"plugin {failure['name']!r}: {failure['error']}"))
        for problem in failure["problems"]:
            problems.append(((*base, "config", *problem["loc"]), str(problem["msg"])))
    return problems
