"""Sandbox mounts: a directory swapped for a symlink after the last check (while the
engine creates the container) is caught and the container removed.

The engine here is a stand-in that performs the swap inside ``create`` (the
window between callboard's check and the engine resolving the path); the
hardening against real containers is in tests/sandbox/*_real.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from callboard.engine.sandbox_api import SandboxError
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.engine import EngineEndpoint
from callboard.sandbox.mounts import MountRefused, pin


class _Container:
    id = "c0ffee0000000000"

    def start(self) -> None:
        pass


class _Engine:
    """``client.containers.create`` and ``client.api.remove_container``, recording calls."""

    def __init__(self, on_create: Any) -> None:
        self.on_create = on_create
        self.created: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.containers = self
        self.api = self

    def create(self, **options: Any) -> _Container:
        self.created.append(options)
        self.on_create()
        return _Container()

    def remove_container(self, ref: str, force: bool = False, v: bool = False) -> None:
        self.removed.append(ref)

    def close(self) -> None:
        pass


def _backend(tmp_path: Path, on_create: Any) -> tuple[DockerBackend, _Engine, SessionSpec]:
    root = tmp_path / "allowed"
    settings = SandboxSettings.model_validate(
        {
            "allowed_mount_roots": [str(root)],
            "profiles": {"data": {"mounts": [{"source": str(root / "data"), "target": "/mnt/data"}]}},
        }
    )
    backend = DockerBackend(EngineEndpoint(f"unix://{tmp_path}/engine.sock", "test"), settings)
    engine = _Engine(on_create)
    backend.client = engine  # type: ignore[assignment]
    return backend, engine, SessionSpec("f", "s", "i", "img", settings.profiles["data"], False)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "allowed" / "data"
    data.mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    return data, secret


def test_directory_swapped_for_a_symlink_during_create_is_removed(tmp_path: Path) -> None:
    data, secret = _tree(tmp_path)

    def swap() -> None:
        data.rename(tmp_path / "allowed" / "old")
        os.symlink(secret, data)

    backend, engine, spec = _backend(tmp_path, swap)
    with pytest.raises(SandboxError, match="changed while the sandbox was created"):
        backend.create_session(spec)
    assert engine.created and engine.removed == [spec.container_name]


def test_directory_replaced_by_another_directory_is_removed(tmp_path: Path) -> None:
    data, _ = _tree(tmp_path)

    def replace() -> None:
        data.rename(tmp_path / "allowed" / "old")
        data.mkdir()

    backend, engine, spec = _backend(tmp_path, replace)
    with pytest.raises(SandboxError, match="changed"):
        backend.create_session(spec)
    assert engine.removed == [spec.container_name]


def test_untouched_mount_starts(tmp_path: Path) -> None:
    _tree(tmp_path)
    backend, engine, spec = _backend(tmp_path, lambda: None)
    session = backend.create_session(spec)
    assert session is not None and engine.removed == []


def test_pin_refuses_a_symlink_anywhere_in_the_path(tmp_path: Path) -> None:
    data, secret = _tree(tmp_path)
    assert pin(str(data)) == (os.stat(data).st_dev, os.stat(data).st_ino)
    os.symlink(secret, tmp_path / "link")
    with pytest.raises(MountRefused, match="symlink"):
        pin(str(tmp_path / "link"))
    with pytest.raises(MountRefused):
        pin(str(tmp_path / "link" / "x"))
