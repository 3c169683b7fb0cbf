"""``callboard sandbox`` status, sweep and build-image: output and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.sandbox import cli
from callboard.sandbox import engine as sandbox_engine
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxProfile, SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.engine import EngineEndpoint
from callboard.sandbox.image import apt_mirror, os_codename
from tests.sandbox.conftest import Engine

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(sandbox_engine, "DEFAULT_SOCKETS", ("/nonexistent/docker.sock",))


def test_status_says_off_without_an_engine(no_engine: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("sandbox: off - no container engine configured")
    assert "DOCKER_HOST" in out


def test_status_says_off_for_a_fleet_file_without_sandbox(
    no_engine: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("name: demo\nbots: []\n")
    assert cli.main(["status", "--config", str(fleet)]) == 1
    assert "sandbox: off - sandboxes are disabled" in capsys.readouterr().out


def test_unreachable_engine_and_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--engine-url", f"unix://{tmp_path}/none.sock"]) == 1
    assert "sandbox: unavailable - container engine unix://" in capsys.readouterr().out
    assert cli.main(["sweep", "--fleet", "x", "--engine-url", f"unix://{tmp_path}/none.sock"]) == 1
    assert "error: sandbox unavailable" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("sandbox:\n  max_sessions: many\n")
    assert cli.main(["status", "--config", str(bad)]) == 1
    assert "max_sessions" in capsys.readouterr().err
    assert cli.main(["sweep"]) == 1
    assert "--fleet NAME, --all" in capsys.readouterr().err


def test_mirror_comes_from_the_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment: with a colon\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian trixie main\n")
    assert apt_mirror("trixie", tmp_path) == "http://old.example/debian"
    with pytest.raises(Exception, match="no apt source for suite 'sid'"):
        apt_mirror("sid", tmp_path)
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian"\nVERSION_CODENAME=bookworm\n')
    assert os_codename(release) == "bookworm"


def test_status_sweep_and_build_image_against_a_real_engine(
    engine: Engine, fleet: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = SandboxSettings(engine_url=engine.url, image=engine.image)
    backend = DockerBackend(EngineEndpoint(engine.url, "test"), settings)
    for name in ("a", "b"):
        backend.create_session(SessionSpec(fleet, name, "gone", engine.image, SandboxProfile(), False))
    backend.close()

    assert cli.main(["status", "--engine-url", engine.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sandbox: on\n")
    assert f"{fleet}: 2" in out

    assert cli.main(["sweep", "--fleet", fleet, "--dry-run", "--engine-url", engine.url]) == 0
    assert "would remove 2" in capsys.readouterr().out
    assert len(engine.containers(fleet)) == 2
    assert cli.main(["sweep", "--fleet", fleet, "--engine-url", engine.url]) == 0
    assert f"removed 2 sandbox container(s) of fleet '{fleet}'" in capsys.readouterr().out
    assert engine.containers(fleet) == []

    assert cli.main(["build-image", "--name", engine.image, "--engine-url", engine.url]) == 0
    assert "already exists" in capsys.readouterr().out
    assert cli.main(["status", "--engine-url", engine.url]) == 0
    missing = SandboxSettings(engine_url=engine.url, image="localhost/not-built:1")
    assert cli._status(missing) == 1
    assert "MISSING" in capsys.readouterr().out
