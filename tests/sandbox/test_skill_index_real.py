"""A skill's requirement from the package index, in a real container with network, on an image
with Debian's pip (``build-image --package python3-pip``, built once here: about 2 minutes, hence
``slow``). The index is a local PEP 503 index on the engine's bridge gateway that counts its hits;
the profile's ``env`` points pip at it."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs
from callboard.sandbox import cli
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.image import image_id
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, spawn_manager
from tests.sandbox.skill_wheels import write_wheel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PIP_IMAGE = "localhost/callboard-sandbox-pip:latest"


@pytest.fixture(scope="module")
def pip_image(engine: Engine) -> str:
    if image_id(engine.client, PIP_IMAGE) is None:
        output = io.StringIO()
        argv = ["build-image", "--name", PIP_IMAGE, "--package", "python3-pip", "--engine-url", engine.url]
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            assert cli.main(argv) == 0, output.getvalue()[-1500:]
    return PIP_IMAGE


class Index:
    """A PEP 503 index of ``root`` that counts its requests."""

    def __init__(self, root: Path, host: str, port: int) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                hits.append(self.path)

        self.root = root
        self.server = ThreadingHTTPServer((host, port), partial(Handler, directory=str(root)))


@contextlib.contextmanager
def serving(root: Path, host: str, port: int) -> Iterator[Index]:
    served = Index(root, host, port)
    threading.Thread(target=served.server.serve_forever, daemon=True).start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


async def test_a_requirement_comes_from_the_index_when_the_sandbox_has_network(
    engine: Engine, system: ActorSystem, fleet: str, tmp_path: Path, pip_image: str
) -> None:
    root = tmp_path / "index"
    wheel = write_wheel(tmp_path / "built", "fromindex", "2.0", "def greet(n):\n    return 'indexed ' + n\n")
    (root / "simple" / "fromindex").mkdir(parents=True)
    (root / wheel.name).write_bytes(wheel.read_bytes())
    (root / "simple" / "fromindex" / "index.html").write_text(f'<a href="../../{wheel.name}">x</a>\n')
    skill = tmp_path / "skills" / "online"
    skill.mkdir(parents=True)
    (skill / "requirements.txt").write_text("fromindex>=1\n")
    (skill / "run.py").write_text("import fromindex\nprint(fromindex.greet('agent'))\n")
    for path in (tmp_path / "skills", skill):
        path.chmod(0o755)
    # the bridge's gateway address exists while a container is on the bridge: serve it from then
    gateway = engine.client.api.inspect_network("podman")["IPAM"]["Config"][0]["Gateway"]
    port = _free_port()
    env = {"PIP_INDEX_URL": f"http://{gateway}:{port}/simple/", "PIP_TRUSTED_HOST": gateway}
    settings = SandboxSettings.model_validate(
        {
            "engine_url": engine.url,
            "image": pip_image,
            "allowed_mount_roots": [str(tmp_path)],
            "profiles": {"default": {"network": True, "skills": {"online": str(skill)}, "env": env}},
        }
    )
    tools = chat_tools(spawn_manager(system, fleet, settings))
    assert (await tools.exec(ExecArgs(argv=["true"]))).ok
    with serving(root, gateway, port) as index:
        first = await tools.exec(ExecArgs(argv=["python3", ".skills/online/run.py"]))
        assert first.stdout == "indexed agent\n", first.stderr
        assert "/simple/fromindex/" in index.hits
        asked = len(index.hits)
        again = await tools.exec(ExecArgs(argv=["python3", "run.py"], cwd=".skills/online"))
        assert again.stdout == "indexed agent\n" and len(index.hits) == asked  # not installed again


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
