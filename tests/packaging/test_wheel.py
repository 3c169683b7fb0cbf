"""The wheel a user installs exposes one top-level package, `callboard`, and runs the demo
from a fresh virtual environment outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from callboard.bench.harness import free_port

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=500)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, python of a fresh venv with the wheel installed); built from a copy of the
    checkout's files (not ignored ones), so no build state or venv leaks in."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, files.decode().split("\0")):
        origin, target = ROOT / name, source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        elif origin.exists():
            shutil.copy2(origin, target)
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", source, cwd=work
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("callboard-*.whl")
    venv.create(work / "venv", with_pip=True)
    python = work / "venv" / "bin" / "python"
    pip = _run(python, "-m", "pip", "install", "-q", wheel, cwd=work)
    assert pip.returncode == 0, pip.stderr
    return wheel, python


def test_wheel_holds_only_callboard(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {"callboard"}
    assert "callboard/py.typed" in names
    assert "callboard/engine/events.py" in names
    assert "callboard/adapters/web/static/index.html" in names


def test_fresh_venv_imports_only_callboard(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, python = installed
    ok = _run(
        python, "-c", "import callboard.engine, callboard.adapters.web, callboard.testing", cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    for bare in ("engine", "actors", "adapters", "handlers", "sandbox", "bench"):
        gone = _run(python, "-c", f"import {bare}", cwd=tmp_path)
        assert gone.returncode != 0 and "ModuleNotFoundError" in gone.stderr, bare


def test_fresh_venv_serves_the_demo(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, python = installed
    shutil.copy(ROOT / "config" / "demo.yaml", tmp_path / "demo.yaml")
    port = free_port()
    proc = subprocess.Popen(
        [python.parent / "callboard", "run", "demo.yaml"],
        cwd=tmp_path,
        env={**os.environ, "CALLBOARD_PORT": str(port), "DOCKER_HOST": "unix:///nonexistent.sock"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    page = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/web/demo/", timeout=5) as response:
                page = response.read().decode()
            break
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    _, errors = proc.communicate(timeout=30)
    assert "callboard demo" in page, errors
    assert proc.returncode == 0, errors
