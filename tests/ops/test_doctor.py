"""`callboard doctor` on a good and on broken environments: each problem is named with what
to do, the exit status says whether anything failed, and no secret is printed."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callboard.actors.config_file import parse_fleet
from callboard.bench.harness import free_port
from callboard.doctor import check_webhooks, diagnose

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456:" + "A" * 35

FLEET = """
name: doc
engine:
  journal: {journal}
  admin: {{host: 127.0.0.1, port: {port}}}
bots:
  - id: web
    adapter: {{type: web}}
{extra}"""

TELEGRAM = """  - id: tg
    adapter:
      type: telegram
      token: {token}
      mode: webhook
      webhook_url: http://127.0.0.1:{hook}/telegram/tg/webhook
      secret_token: s3cret-token-value
"""


def _doctor(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callboard.cli", "doctor", str(path)], capture_output=True, text=True, cwd=ROOT
    )


def test_a_good_environment_passes(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(journal=tmp_path / "j.sqlite3", port=free_port(), extra=""))
    done = _doctor(fleet)
    assert done.returncode == 0, done.stdout
    assert "ok    fleet file:" in done.stdout and "ok    journal:" in done.stdout
    assert "\n0 failed, 0 warnings" in done.stdout


def test_each_problem_is_named_with_its_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text(FLEET.format(journal=blocker / "j.sqlite3", port=port, extra=""))
        done = _doctor(fleet)
    assert done.returncode == 1
    assert "FAIL  journal:" in done.stdout and "not a directory" in done.stdout
    assert f"FAIL  port: 127.0.0.1:{port} cannot be bound" in done.stdout


def test_a_bad_fleet_file_is_reported_by_line_without_its_secret(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    bad_token = "not-a-token-but-secret-material"
    extra = TELEGRAM.format(token=bad_token, hook=1)
    fleet.write_text(FLEET.format(journal=tmp_path / "j.sqlite3", port=free_port(), extra=extra))
    done = _doctor(fleet)
    assert done.returncode == 1
    assert "FAIL  fleet file:" in done.stdout and "token" in done.stdout
    assert bad_token not in done.stdout + done.stderr


def test_webhook_reachability(tmp_path: Path) -> None:
    extra = TELEGRAM.format(token=TOKEN, hook=free_port())
    config = parse_fleet(FLEET.format(journal=tmp_path / "j.sqlite3", port=free_port(), extra=extra))
    (unreachable,) = check_webhooks(config)
    assert unreachable.level == "warn" and "not reachable from here" in unreachable.detail
    (answering,) = check_webhooks(config, fetch=lambda url: 405)
    assert answering.level == "ok" and "HTTP 405" in answering.detail
    assert all(TOKEN not in str(finding) for finding in diagnose(None))
