"""The skill environment builder (``sandbox/skill_env.py``), run as the container runs it but
on this host's Python: vendored wheels unpacked without pip, a marker that makes the second use
a no-op, and the index used only with a network (a local PEP 503 index that counts its hits
stands in for PyPI; pip is this venv's). The same file in a real container, through the agent,
is in ``test_skills_real.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from callboard.sandbox.config import SandboxProfile
from callboard.sandbox.image import ImageBuildError, build_image
from callboard.sandbox.tools import SKILL_ENV_SOURCE, skills_used
from tests.sandbox.skill_wheels import write_wheel

pytestmark = pytest.mark.timeout(120)


class Index:
    """A simple index on 127.0.0.1 serving ``root/simple/<name>/`` and the wheels; counts hits."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: list[str] = []
        index = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                index.hits.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    def publish(self, wheel: Path, name: str) -> None:
        folder = self.root / "simple" / name
        folder.mkdir(parents=True, exist_ok=True)
        (self.root / wheel.name).write_bytes(wheel.read_bytes())
        (folder / "index.html").write_text(f'<a href="../../{wheel.name}">{wheel.name}</a>\n')


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    served = Index(tmp_path / "index")
    (tmp_path / "index").mkdir()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def build(skill: Path, venv: Path, network: bool, index: Index) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_INDEX_URL": index.url, "PIP_NO_CACHE_DIR": "1"}
    argv = [sys.executable, "-I", "-c", SKILL_ENV_SOURCE, str(skill), str(venv), "1" if network else "0"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=100, check=False)


def imports(venv: Path, module: str) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.greet('x'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


GREET = "def greet(name):\n    return 'hello ' + name\n\ndef main():\n    print(greet('script'))\n"


def test_vendored_wheels_are_unpacked_offline_and_reused(tmp_path: Path, index: Index) -> None:
    skill = tmp_path / "skill"
    write_wheel(skill / "wheels", "tinygreet", "1.0", GREET, script="tinygreet")
    (skill / "requirements.txt").write_text("tinygreet==1.0  # vendored\n")
    venv = tmp_path / "venvs" / "skill"
    first = build(skill, venv, network=False, index=index)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["state"] == "installed" and report["packages"] == ["tinygreet==1.0"]
    assert imports(venv, "tinygreet") == "hello x"
    script = subprocess.run([str(venv / "bin" / "tinygreet")], capture_output=True, text=True, check=False)
    assert script.stdout.strip() == "hello script", script.stderr

    again = build(skill, venv, network=False, index=index)
    assert json.loads(again.stdout)["state"] == "ready"  # the marker matched: nothing reinstalled
    write_wheel(skill / "wheels", "tinygreet", "1.0", GREET.replace("hello", "hi"))  # changed: rebuilt
    assert json.loads(build(skill, venv, network=False, index=index).stdout)["state"] == "installed"
    assert imports(venv, "tinygreet") == "hi x"
    assert index.hits == []


def test_without_network_the_index_is_never_asked(tmp_path: Path, index: Index) -> None:
    index.publish(write_wheel(tmp_path / "built", "fromindex", "2.0", GREET), "fromindex")
    skill = tmp_path / "skill"
    write_wheel(skill / "wheels", "tinygreet", "1.0", GREET)
    (skill / "requirements.txt").write_text("tinygreet\nfromindex>=1\n")
    offline = build(skill, tmp_path / "venv", network=False, index=index)
    assert offline.returncode == 1
    assert "not installed: fromindex>=1" in offline.stderr and "no network" in offline.stderr
    assert index.hits == []  # pip was not even started

    online = build(skill, tmp_path / "venv", network=True, index=index)
    assert online.returncode == 0, online.stderr
    assert json.loads(online.stdout)["packages"] == ["fromindex==2.0", "tinygreet==1.0"]
    assert any("fromindex" in hit for hit in index.hits)
    assert imports(tmp_path / "venv", "fromindex") == "hello x"


def test_errors_say_what_is_wrong(tmp_path: Path, index: Index) -> None:
    skill = tmp_path / "skill"
    (skill / "wheels").mkdir(parents=True)
    (skill / "wheels" / "native-1.0-cp27-cp27mu-win32.whl").write_bytes(b"PK")
    failed = build(skill, tmp_path / "venv", network=False, index=index)
    assert (
        failed.returncode == 1 and "native-1.0-cp27-cp27mu-win32.whl is not for this sandbox" in failed.stderr
    )

    pip_fails = tmp_path / "other"
    pip_fails.mkdir()
    (pip_fails / "requirements.txt").write_text("no-such-package-anywhere\n")
    done = build(pip_fails, tmp_path / "venv2", network=True, index=index)
    assert done.returncode == 1 and "pip install failed" in done.stderr
    assert "no-such-package-anywhere" in done.stderr  # pip's own words, the tail of them

    plain = tmp_path / "plain"
    plain.mkdir()
    assert json.loads(build(plain, tmp_path / "venv3", network=True, index=index).stdout)["state"] == "none"


def test_which_commands_use_a_skill() -> None:
    profile = SandboxProfile(skills={"pdf": "/srv/skills/pdf", "charts": "/srv/skills/charts"})
    assert skills_used(profile, "/workspace/.skills/pdf/bin", ("python3", "run.py")) == ["pdf"]
    assert skills_used(profile, ".skills/pdf", ("python3", "run.py")) == ["pdf"]  # a process's cwd
    argv = ("python3", ".skills/charts/plot.py", "--out=.skills/pdf/x")
    assert skills_used(profile, "/workspace", argv) == ["charts", "pdf"]
    shell = ("/bin/sh", "-c", "cd /workspace/.skills/pdf && python3 run.py")
    assert skills_used(profile, "/workspace", shell) == ["pdf"]
    assert skills_used(profile, "/workspace", ("cat", "my.skills/pdf", ".skills/unknown/x")) == []


def test_build_image_takes_only_debian_package_names() -> None:
    """``build-image --package python3-pip`` puts pip in the image (for skills' index installs);
    a name that could end debootstrap's ``--include`` list is refused before anything runs."""
    with pytest.raises(ImageBuildError, match="not a Debian package name: 'pip,evil'"):
        build_image(None, "x", packages=["python3", "python3-pip", "pip,evil"])  # type: ignore[arg-type]
