"""Fleet files: validation errors with file, line and key; interpolation;
secrets kept out of errors; the committed JSON Schema; the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from callboard.actors.config import fleet_model
from callboard.actors.config_file import ConfigError, load_fleet, parse_fleet

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name: t
engine:
  journal: var/t.sqlite3
  admin:
    port: ${T_PORT:-9001}
bots:
  - id: web-1
    adapter: {type: web, title: "${T_TITLE}"}
    session:
      idle_ttl: 2m
      debounce: {window: 250ms, max_wait: 1.5}
    handlers:
      - event_type: message.*
        handler_type: pipeline
        handler_config: {stages: [{type: echo}]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_fleet(text, "fleet.yaml")
    return [str(p) for p in info.value.problems]


def test_valid_file_with_interpolation_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TITLE", "Hello")
    config = parse_fleet(GOOD)
    bot = config.bots[0]
    assert config.engine.admin.port == 9001
    assert bot.adapter.title == "Hello"  # type: ignore[attr-defined]
    assert bot.session.idle_ttl == 120 and bot.session.debounce.window == 0.25
    assert bot.session.debounce.max_wait == 1.5
    assert config.engine.journal.path == "var/t.sqlite3"


def test_missing_variable_names_file_line_and_key() -> None:
    assert problems(GOOD) == ["fleet.yaml:9: bots[0].adapter.title: environment variable T_TITLE is not set"]


def test_errors_name_file_line_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TITLE", "x")
    text = GOOD.replace("idle_ttl: 2m", "idle_ttl: soon").replace("type: echo", "type: echoo")
    text = text.replace("title:", "titel:")
    found = problems(text)
    assert "fleet.yaml:9: bots[0].adapter.titel: unknown key" in found
    assert any(p.startswith("fleet.yaml:11: bots[0].session.idle_ttl: invalid duration") for p in found)
    assert any(p.startswith("fleet.yaml:16: bots[0].handlers[0].handler_config.stages[0]") for p in found)


def test_secrets_never_appear_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TITLE", "x")
    monkeypatch.setenv("SECRET_PORT", "hunter2-very-secret")
    text = GOOD.replace("${T_PORT:-9001}", "${SECRET_PORT}")
    found = problems(text)
    assert found and all("hunter2" not in p for p in found)
    assert any("engine.admin.port" in p for p in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bots: [", "not valid YAML"),
        ("- 1\n- 2", "must be a mapping"),
        ("name: t\nname: u\n", "fleet.yaml:2: name: duplicate key"),
        (
            "bots:\n  - {id: a, adapter: {type: web}}\n  - {id: a, adapter: {type: web}}\n",
            "has the same id as bots[0]",
        ),
        ("bots:\n  - {id: 'bad id', adapter: {type: web}}\n", "bot id must be"),
        ("bots:\n  - {id: a, adapter: {type: nope}}\n", "bots[0].adapter.type"),
        (
            "bots:\n  - id: a\n    adapter: {type: web}\n    session: {debounce: {window: 5, max_wait: 1}}\n",
            "max_wait must be at least window",
        ),
        ("engine: {journal: {path: x, synchronous: SOMETIMES}}", "engine.journal.synchronous"),
    ],
)
def test_bad_files(text: str, expected: str) -> None:
    assert any(expected in p for p in problems(text)), problems(text)


def test_empty_file_is_an_empty_fleet() -> None:
    assert parse_fleet("").bots == []


def test_committed_schema_is_current() -> None:
    committed = orjson.loads((ROOT / "config" / "fleet.schema.json").read_bytes())
    assert committed == fleet_model().model_json_schema()


def test_demo_fleet_is_valid() -> None:
    config = load_fleet(ROOT / "config" / "demo.yaml")
    assert [b.id for b in config.bots] == ["demo"]


def test_cli_validate_and_schema(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("bots:\n  - id: a\n    adapter: {type: web, colour: red}\n")
    cli = [sys.executable, "-m", "callboard.cli"]
    result = subprocess.run([*cli, "validate", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert f"{bad}:3: bots[0].adapter.colour: unknown key" in result.stderr
    ok = subprocess.run([*cli, "validate", "config/demo.yaml"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "OK" in ok.stdout
    missing = subprocess.run([*cli, "validate", str(tmp_path / "none.yaml")], capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    schema = subprocess.run([*cli, "schema"], capture_output=True, cwd=ROOT)
    assert orjson.loads(schema.stdout)["title"] == "FleetConfig"
