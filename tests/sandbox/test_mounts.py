"""Host mount allow-list: every refusal, in the config layer and again at creation (no containers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from callboard.engine.sandbox_api import SandboxError
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxProfile, SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.engine import EngineEndpoint
from callboard.sandbox.mounts import MountRefused, check_root, check_source, check_target

pytestmark = pytest.mark.timeout(60)


def settings_with(tmp_path: Path, source: str, roots: list[str], **extra: object) -> SandboxSettings:
    return SandboxSettings.model_validate(
        {
            "allowed_mount_roots": roots,
            "profiles": {"data": {"mounts": [{"source": source, "target": "/mnt/data"}]}},
            **extra,
        }
    )


def test_empty_allow_list_refuses_every_mount(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as excinfo:
        settings_with(tmp_path, str(tmp_path), [])
    text = str(excinfo.value)
    assert "profiles.data.mounts.0.source" in text
    assert "allowed_mount_roots is empty" in text


def test_mount_under_an_allowed_root_is_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    settings = settings_with(tmp_path, str(data), [str(tmp_path)])
    assert settings.profiles["data"].mounts[0].read_only is True


def test_outside_the_roots_is_refused(tmp_path: Path) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(ValidationError, match="not under an allowed root"):
        settings_with(tmp_path, str(tmp_path / "other"), [str(tmp_path / "allowed")])


def test_symlink_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", root / "link")
    with pytest.raises(ValidationError, match=r"resolved to .*secret.* not under an allowed root"):
        settings_with(tmp_path, str(root / "link"), [str(root)])


def test_slash_and_system_paths_are_never_mounted(tmp_path: Path) -> None:
    with pytest.raises(MountRefused, match="never mounted"):
        check_source("/", ["/tmp"], [])
    with pytest.raises(MountRefused, match="never mounted"):
        check_source("/tmp/../", ["/tmp"], [])
    with pytest.raises(MountRefused, match="system path /etc"):
        check_source("/etc", ["/etc"], [])
    with pytest.raises(MountRefused, match="system path /proc"):
        check_source("/proc/self", ["/tmp"], [])
    with pytest.raises(MountRefused, match="can never be a mount root"):
        check_root("/")
    with pytest.raises(MountRefused, match="system path"):
        check_root("/var")  # it holds /var/run and the engines' storage
    with pytest.raises(ValidationError, match="can never be a mount root"):
        SandboxSettings(allowed_mount_roots=["/"])


def test_the_engine_socket_is_never_mounted(tmp_path: Path) -> None:
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    socket = socket_dir / "podman.sock"
    socket.touch()
    with pytest.raises(ValidationError, match="would expose the container engine socket"):
        settings_with(tmp_path, str(socket_dir), [str(tmp_path)], engine_url=f"unix://{socket}")
    with pytest.raises(MountRefused, match="engine socket"):
        check_source(str(socket), [str(tmp_path)], [str(socket)])


def test_missing_and_relative_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MountRefused, match="does not exist"):
        check_source(str(tmp_path / "nope"), [str(tmp_path)], [])
    with pytest.raises(MountRefused, match="absolute"):
        check_source("data", [str(tmp_path)], [])


@pytest.mark.parametrize("target", ["/", "/etc/x", "/mnt", "/workspace", "relative", "/usr/lib"])
def test_mount_targets_stay_below_mnt_or_workspace(target: str) -> None:
    with pytest.raises(MountRefused):
        check_target(target)
    assert check_target("/mnt/data/../data") == "/mnt/data"
    assert check_target("/workspace/ref") == "/workspace/ref"


def test_second_check_at_creation_sees_a_swapped_symlink(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "data").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    os.symlink(root / "data", root / "link")
    settings = settings_with(tmp_path, str(root / "link"), [str(root)])
    os.unlink(root / "link")
    os.symlink(tmp_path / "secret", root / "link")  # swapped after the config was accepted
    backend = DockerBackend(EngineEndpoint(f"unix://{tmp_path}/engine.sock", "test"), settings)
    spec = SessionSpec("f", "s", "i", "img", settings.profiles["data"], False)
    with pytest.raises(SandboxError, match="not under an allowed root"):
        backend.container_options(spec)
    backend.close()


def test_mounts_are_refused_with_a_remote_engine(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    settings = settings_with(tmp_path, str(data), [str(tmp_path)])
    backend = DockerBackend(EngineEndpoint("tcp://127.0.0.1:1", "test"), settings)
    spec = SessionSpec("f", "s", "i", "img", settings.profiles["data"], False)
    with pytest.raises(SandboxError, match="need a local engine"):
        backend.container_options(spec)
    backend.close()


def test_profile_without_mounts_builds_hardened_options(tmp_path: Path) -> None:
    settings = SandboxSettings()
    backend = DockerBackend(EngineEndpoint("unix:///nonexistent.sock", "test"), settings)
    options = backend.container_options(SessionSpec("f", "s", "i", "img", SandboxProfile(), False))
    backend.close()
    assert options["network_mode"] == "none"
    assert options["read_only"] is True
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges"]
    assert options["user"] == "65534:65534"  # PID 1's own user; commands run as the profile's
    assert options["labels"] == {"callboard.fleet": "f", "callboard.session": "s", "callboard.instance": "i"}
    assert options["mem_limit"] == options["memswap_limit"]
    assert options["mounts"] == []
