"""Reading a fleet file: YAML with positions, ``${VAR}`` interpolation, and
errors that name the file, line and key.

Values that came from the environment are never echoed in an error (they are
usually secrets), and neither are any other input values: an error says
where and what is wrong, not what was there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from callboard.actors.config import FleetConfig, fleet_model
from callboard.actors.plugin_check import plugin_config_problems

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The fleet file is invalid; ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


Path_ = tuple[str | int, ...]


class _Positions:
    """Line of each key path in the YAML document (1-based)."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}

    def nearest(self, path: Path_) -> int | None:
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _walk(node: yaml.Node, path: Path_, positions: _Positions, file: str, problems: list[Problem]) -> None:
    """Record the line of every key path; report duplicate keys."""
    positions.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                problems.append(
                    Problem(file, key_node.start_mark.line + 1, _dotted(path), "keys must be text")
                )
                continue
            child: Path_ = (*path, key)
            if key in seen:
                problems.append(Problem(file, key_node.start_mark.line + 1, _dotted(child), "duplicate key"))
            seen.add(key)
            positions.lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, positions, file, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), positions, file, problems)


def _substitute(value: Any, path: Path_, positions: _Positions, file: str, problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, k), positions, file, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), positions, file, problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _interpolate(value, path, positions.nearest(path), file, problems)
    return value


def _interpolate(text: str, path: Path_, line: int | None, file: str, problems: list[Problem]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(Problem(file, line, _dotted(path), f"environment variable {name} is not set"))
                return ""
            return default
        return value

    return _VAR.sub(substitute, text)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_fleet(text: str, file: str = "<fleet>") -> FleetConfig:
    """Validate fleet YAML ``text``; raises ``ConfigError`` listing every problem."""
    problems: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, line, "", f"not valid YAML: {reason}")]) from None
    positions = _Positions()
    if root is not None:
        _walk(root, (), positions, file, problems)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "", "the fleet file must be a mapping (engine:, bots:, ...)")])
    data = _substitute(data, (), positions, file, problems)
    if problems:
        raise ConfigError(problems)
    try:
        config = fleet_model().model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, positions, file, data)
        problems.sort(key=lambda p: p.line or 0)
        raise ConfigError(problems) from None
    for path, message in plugin_config_problems(config.plugins):
        problems.append(Problem(file, positions.nearest(path), _dotted(path), message))
    if problems:
        raise ConfigError(problems)
    return config


def load_fleet(path: str | Path) -> FleetConfig:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    return parse_fleet(text, file)


def _problems(exc: ValidationError, positions: _Positions, file: str, data: Any) -> list[Problem]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        location = _data_path(error["loc"], data)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "union_tag_invalid":
            context = error.get("ctx", {})
            location = (*location, context.get("discriminator", "'type'").strip("'"))
            message = f"unknown value; expected one of {context.get('expected_tags', '?')}"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(Problem(file, positions.nearest(location), _dotted(location), message))
    return problems


def _data_path(loc: tuple[int | str, ...], data: Any) -> Path_:
    """Drop the union tags pydantic adds to a location (e.g. ``'web'`` in
    ``bots.0.adapter.web.token``) so the path matches the document."""
    path: list[str | int] = []
    node: Any = data
    for part in loc:
        if _has(node, part):
            node = node[part]
        elif isinstance(node, dict) and _is_tag(part, node):
            continue
        else:
            node = None
        path.append(part)
    return tuple(path)


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _is_tag(part: int | str, node: dict[str, Any]) -> bool:
    return isinstance(part, str) and (node.get("type") == part or node.get("handler_type") == part)
