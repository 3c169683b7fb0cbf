"""The adapter author's guide, tried as a third party would: the minimal adapter in
docs/adapters.md is built out of tree, registered through a `callboard.adapters` entry point
(a dist-info on PYTHONPATH, as pip would leave it), and chatted with through `callboard run`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from callboard.bench.harness import free_port
from tests.support import eventually

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]

FLEET = """
name: inbox
engine:
  journal: {journal}
  admin: {{host: 127.0.0.1, port: {port}}}
bots:
  - id: box
    adapter: {{type: {type}}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


def _install(site: Path, dist: str, module: str, code: str, entry: str) -> None:
    """What pip leaves behind for a package with one module and one entry point."""
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[callboard.adapters]\n{entry}\n")


def _guide_code() -> str:
    text = (ROOT / "docs" / "adapters.md").read_text()
    section = text.split("## A minimal adapter", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "docs/adapters.md lost its minimal adapter"
    return match.group(1)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    _install(
        site, "callboard_inbox", "callboard_inbox", _guide_code(), "inbox = callboard_inbox:InboxAdapter"
    )
    _install(
        site,
        "callboard_broken",
        "callboard_broken",
        "import some_missing_sdk  # noqa\n",
        "broken = callboard_broken:Adapter",
    )
    return site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callboard.cli", *args],
        capture_output=True,
        text=True,
        env=_env(site),
        cwd=ROOT,
    )


def _fleet(tmp_path: Path, type_: str, port: int = 0) -> Path:
    path = tmp_path / f"{type_}.yaml"
    path.write_text(FLEET.format(journal=tmp_path / "journal.sqlite3", port=port, type=type_))
    return path


def test_validate_resolves_types_when_parsing(tmp_path: Path, site: Path) -> None:
    ok = _cli(site, "validate", str(_fleet(tmp_path, "inbox")))
    assert ok.returncode == 0, ok.stderr
    assert "box (inbox)" in ok.stdout

    broken = _cli(site, "validate", str(_fleet(tmp_path, "broken")))
    assert broken.returncode == 1
    assert "broken.yaml:8: bots[0].adapter" in broken.stderr
    assert "some_missing_sdk is missing" in broken.stderr

    unknown = _cli(site, "validate", str(_fleet(tmp_path, "nope")))
    assert unknown.returncode == 1
    assert "nope" in unknown.stderr and "'inbox'" in unknown.stderr and "'web'" in unknown.stderr

    schema = _cli(site, "schema")
    assert '"inbox"' in schema.stdout


@pytest.fixture
def engine(tmp_path: Path, site: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "callboard.cli",
            "--log-level",
            "WARNING",
            "run",
            str(_fleet(tmp_path, "inbox", port)),
        ],
        env=_env(site),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    announced = ""
    while "inbox for bot 'box'" not in announced and time.monotonic() < deadline:
        announced += proc.stdout.readline()
    assert f"http://127.0.0.1:{port}/inbox/box/messages" in announced
    try:
        yield f"http://127.0.0.1:{port}/inbox/box"
    finally:
        proc.terminate()
        proc.wait(30)


async def test_chat_with_the_guide_adapter(engine: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{engine}/messages", json={"id": "m1", "chat": "c1", "user": "ann", "text": "hi"}
        ) as r:
            assert r.status == 200 and await r.json() == {"stored": True, "duplicate": False}
        async with http.post(
            f"{engine}/messages", json={"id": "m1", "chat": "c1", "user": "ann", "text": "hi"}
        ) as r:
            assert await r.json() == {"stored": False, "duplicate": True}
        async with http.post(f"{engine}/messages", json={"id": "m2", "chat": "c1"}) as r:
            assert r.status == 400

        async def replies() -> list[dict[str, str]]:
            async with http.get(f"{engine}/replies") as r:
                return list(await r.json())

        got = await eventually(replies)
        assert got == [{"chat": "c1", "text": "hi"}]
