"""The fleet loader on hostile files: every outcome is a fleet or a ``ConfigError``
naming file and line, never a traceback, never a value from the environment.

The repro cases of the reliability issue first (alias bomb, recursive alias,
deep nesting, bad tags, invalid UTF-8, values echoed from the environment);
then Hypothesis: 500 generated documents by default, 10,000 under ``slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callboard.actors.config_file import MAX_BYTES, ConfigError, load_fleet, parse_fleet

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3r-secret-from-env"


@pytest.fixture(autouse=True)
def secret_env() -> Iterator[None]:
    os.environ["CB_TEST_SECRET"] = SECRET
    yield
    os.environ.pop("CB_TEST_SECRET", None)


BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{chr(ord('b') + i)}: &{chr(ord('b') + i)} [{','.join(['*' + chr(ord('a') + i)] * 9)}]"
            for i in range(8)
        ),
    ]
)


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callboard.cli", "validate", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bomb", BOMB.encode(), "aliases are expanded"),
        ("recursive", b"a: &a [*a]\n", "recursive"),
        ("deep", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "levels deep"),
        ("int-tag", b"name: !!int x\n", "not a valid int"),
        ("utf8", b"name: ok\nbots: \xff\xfe\n", "not valid UTF-8"),
        ("big", b"#" * (MAX_BYTES + 10), "limit"),
    ],
)
def test_hostile_file_is_one_line_error(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    result = validate(path)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(path)), lines
    assert expected in lines[0]
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "text",
    [
        # duplicate bot id
        "bots:\n  - {id: '${CB_TEST_SECRET}', adapter: {type: web}}\n"
        "  - {id: '${CB_TEST_SECRET}', adapter: {type: web}}\n",
        # sandbox profile
        "sandbox: {enabled: true}\nbots:\n  - id: a\n    adapter: {type: web}\n"
        "    sandbox: {enabled: true, profile: '${CB_TEST_SECRET}'}\n",
        # event type
        "bots:\n  - id: a\n    adapter: {type: web}\n    handlers:\n"
        "      - {event_type: '${CB_TEST_SECRET}', handler_type: pipeline, "
        "handler_config: {stages: [{type: echo}]}}\n",
    ],
)
def test_errors_never_echo_environment_values(text: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_fleet(text, "env.yaml")
    assert SECRET not in str(error.value), str(error.value)
    assert SECRET[:8] not in str(error.value), str(error.value)


# ---------------------------------------------------------------------- fuzz

keys = st.sampled_from(
    [
        "name",
        "engine",
        "bots",
        "id",
        "adapter",
        "type",
        "web",
        "handlers",
        "session",
        "journal",
        "admin",
        "event_type",
        "handler_type",
        "handler_config",
        "stages",
        "sandbox",
        "profile",
        "token",
        "x",
        "<<",
    ]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["web", "telegram", "${CB_TEST_SECRET}", "${MISSING}", "1s", "-1"]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)
tags = st.sampled_from(
    ["", "!!int ", "!!float ", "!!binary ", "!!timestamp ", "!!bool ", "!!set ", "!!omap "]
)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """Structured documents, often with aliases and odd tags spliced in, or raw text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    text = yaml.safe_dump(draw(documents), default_flow_style=draw(st.booleans()), allow_unicode=True)
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, max(0, len(lines) - 1))) if lines else 0
        line = lines[index] if lines else ""
        if ": " in line:
            head, _, tail = line.partition(": ")
            choice = draw(st.integers(0, 2))
            if choice == 0:
                line = f"{head}: &x{index} {tail}"
            elif choice == 1:
                line = f"{head}: *x{draw(st.integers(0, len(lines)))}"
            else:
                line = f"{head}: {draw(tags)}{tail}"
            lines[index] = line
    return "\n".join(lines) + "\n"


def _fuzz(text: str) -> None:
    try:
        parse_fleet(text, "fuzz.yaml")
    except ConfigError as error:
        message = str(error)
        assert message.startswith("fuzz.yaml"), message
        assert SECRET not in message


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(yaml_texts())
def test_fuzz_fleet_loader(text: str) -> None:
    _fuzz(text)


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 100 s of CPU; more on a shared machine
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(yaml_texts())
def test_fuzz_fleet_loader_long(text: str) -> None:
    _fuzz(text)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.binary(max_size=300))
def test_fuzz_fleet_file_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "f.yaml"
    path.write_bytes(data)
    try:
        load_fleet(path)
    except ConfigError as error:
        assert str(error).startswith(str(path))
