"""Reading a fleet file: YAML with positions, ``${VAR}`` interpolation, and
errors that name the file, line and key.

Values that came from the environment are never echoed in an error (they are
usually secrets), and neither are any other input values: an error says
where and what is wrong, not what was there.

The file is untrusted input to a parser that can be made to do exponential
work (an alias bomb: 400 bytes, gigabytes once expanded), so it is bounded
before any tree is built: its size, its nesting depth, and the number of
nodes counted with every alias expanded. Reload goes through the same path.
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

#: limits applied before the document becomes a tree (docs/security.md)
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000  # with every alias expanded


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses, while composing, a document nested deeper than
    ``MAX_DEPTH``, larger than ``MAX_NODES`` once its aliases are expanded, or with
    an alias inside its own anchor; and that turns a value its tag cannot build
    (``!!int x``) into an error with a line instead of a traceback."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}

    def _count(self, nodes: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES} values once aliases are expanded", mark
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise yaml.composer.ComposerError(
                        None, None, "an alias inside its own anchor (recursive)", event.start_mark
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested more than {MAX_DEPTH} levels deep",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        before = self._nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        assert node is not None
        self._count(1, node.start_mark)
        self._sizes[id(node)] = self._nodes - before
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception:  # any tag constructor's failure (int(), base64, timestamps...)
            raise yaml.constructor.ConstructorError(
                None, None, f"this value is not a valid {node.tag.rsplit(':', 1)[-1]}", node.start_mark
            ) from None


def _load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The composed root (for positions) and the data built from it, within the limits."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


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


def _substitute(
    value: Any, path: Path_, positions: _Positions, file: str, problems: list[Problem], used: set[str]
) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, k), positions, file, problems, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), positions, file, problems, used) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _interpolate(value, path, positions.nearest(path), file, problems, used)
    return value


def _interpolate(
    text: str, path: Path_, line: int | None, file: str, problems: list[Problem], used: set[str]
) -> str:
    """Fill in ``${VAR}``; every value taken from the environment is added to ``used``
    so no error message can show it."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(Problem(file, line, _dotted(path), f"environment variable {name} is not set"))
                return ""
            return default
        used.add(value)
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
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ConfigError([Problem(file, None, "", f"the file is {size} bytes; the limit is {MAX_BYTES}")])
    try:
        root, data = _load_yaml(text)
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
    used: set[str] = set()
    data = _substitute(data, (), positions, file, problems, used)
    if problems:
        raise ConfigError(problems)
    try:
        config = fleet_model().model_validate(data)
    except ValidationError as exc:
        problems = [_redact(p, used) for p in _problems(exc, positions, file, data)]
        problems.sort(key=lambda p: p.line or 0)
        raise ConfigError(problems) from None
    for path, message in plugin_config_problems(config.plugins):
        problems.append(_redact(Problem(file, positions.nearest(path), _dotted(path), message), used))
    if problems:
        raise ConfigError(problems)
    return config


def _redact(problem: Problem, secrets: set[str]) -> Problem:
    """A message that quotes a value from the environment shows *** instead."""
    message = problem.message
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3 and secret in message:
            message = message.replace(secret, "***")
    return Problem(problem.file, problem.line, problem.key, message)


def load_fleet(path: str | Path) -> FleetConfig:
    file = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(
            [Problem(file, None, "", f"the file is larger than the limit of {MAX_BYTES} bytes")]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Problem(file, line, "", "not valid UTF-8 text")]) from None
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
