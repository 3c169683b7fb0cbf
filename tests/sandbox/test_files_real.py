"""The file tools and the backend's file operations against a real container."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import (
    EditArgs,
    ExecArgs,
    GlobArgs,
    GrepArgs,
    ReadArgs,
    SandboxEditError,
    SandboxFileError,
    SandboxFileNotFound,
    SandboxTools,
    WriteArgs,
)
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxProfile, SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.engine import EngineEndpoint
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, spawn_manager

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def tools(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> SandboxTools:
    return chat_tools(spawn_manager(system, fleet, settings()))


async def test_write_read_edit_round_trip(tools: SandboxTools) -> None:
    written = await tools.write(WriteArgs(path="src/app.py", content="def main():\n    return 1\n\nmain()\n"))
    assert (written.path, written.size) == ("/workspace/src/app.py", 33)
    read = await tools.read(ReadArgs(path="/workspace/src/app.py"))
    assert read.content.startswith("def main()")
    assert (read.size, read.lines, read.truncated, read.binary) == (33, 4, False, False)
    window = await tools.read(ReadArgs(path="src/app.py", offset=1, limit=1))
    assert window.content == "    return 1\n"
    edited = await tools.edit(EditArgs(path="src/app.py", old="return 1", new="return 2"))
    assert edited.replacements == 1
    ran = await tools.exec(ExecArgs(argv=["python3", "-c", "import app; print(app.main())"], cwd="src"))
    assert ran.stdout.endswith("2\n")
    owner = await tools.exec(ExecArgs(command="stat -c %u src/app.py"))
    assert owner.stdout.strip() == "1000"  # written as the sandbox user, not root


async def test_edit_refuses_missing_and_ambiguous_text(tools: SandboxTools) -> None:
    await tools.write(WriteArgs(path="t.txt", content="x = 1\nx = 1\n"))
    with pytest.raises(SandboxEditError, match="occurs 2 times"):
        await tools.edit(EditArgs(path="t.txt", old="x = 1", new="x = 2"))
    with pytest.raises(SandboxEditError, match="not found"):
        await tools.edit(EditArgs(path="t.txt", old="y", new="z"))
    done = await tools.edit(EditArgs(path="t.txt", old="x = 1", new="x = 2", replace_all=True))
    assert done.replacements == 2
    assert (await tools.read(ReadArgs(path="t.txt"))).content == "x = 2\nx = 2\n"


async def test_missing_files_directories_and_binaries(tools: SandboxTools) -> None:
    with pytest.raises(SandboxFileNotFound):
        await tools.read(ReadArgs(path="nope.txt"))
    with pytest.raises(SandboxFileNotFound):
        await tools.edit(EditArgs(path="nope.txt", old="a", new="b"))
    await tools.exec(ExecArgs(command="mkdir d && printf 'a\\000b' > bin"))
    with pytest.raises(SandboxFileError, match=r"(?i)is a directory"):
        await tools.read(ReadArgs(path="d"))
    binary = await tools.read(ReadArgs(path="bin"))
    assert binary.binary


async def test_glob_and_grep(tools: SandboxTools) -> None:
    for path, content in {
        "a.py": "import os\n",
        "pkg/b.py": "TODO: fix\nok\n",
        "pkg/deep/c.py": "todo later\n",
        "notes.md": "TODO in markdown\n",
    }.items():
        await tools.write(WriteArgs(path=path, content=content))
    found = await tools.glob(GlobArgs(pattern="**/*.py"))
    assert found.paths == ["a.py", "pkg/b.py", "pkg/deep/c.py"]
    assert (await tools.glob(GlobArgs(pattern="*.py", path="pkg"))).paths == ["pkg/b.py"]
    hits = await tools.grep(GrepArgs(pattern=r"todo\b", ignore_case=True, glob="**/*.py"))
    assert [(m.path, m.line) for m in hits.matches] == [("pkg/b.py", 1), ("pkg/deep/c.py", 1)]
    assert hits.files_searched == 3
    exact = await tools.grep(GrepArgs(pattern="^TODO", path="notes.md"))
    assert [m.text for m in exact.matches] == ["TODO in markdown"]


async def test_a_hostile_regex_burns_the_sandbox_not_callboard(
    engine: Engine, system: ActorSystem, fleet: str
) -> None:
    settings = SandboxSettings.model_validate(
        {"engine_url": engine.url, "image": engine.image, "profiles": {"default": {"exec_timeout": "2s"}}}
    )
    tools = chat_tools(spawn_manager(system, fleet, settings))
    await tools.write(WriteArgs(path="evil.txt", content="a" * 40 + "!\n"))
    with pytest.raises(SandboxFileError, match="did not finish within 2s"):
        await tools.grep(GrepArgs(pattern=r"^(a+)+$"))
    assert (await tools.exec(ExecArgs(argv=["true"]))).ok  # the session survived


async def test_workspace_size_is_enforced_by_the_kernel(
    engine: Engine, system: ActorSystem, fleet: str
) -> None:
    settings = SandboxSettings.model_validate(
        {"engine_url": engine.url, "image": engine.image, "profiles": {"default": {"workspace_size": "2m"}}}
    )
    tools = chat_tools(spawn_manager(system, fleet, settings))
    filled = await tools.exec(ExecArgs(command="head -c 5000000 /dev/zero > big; echo $?; stat -c %s big"))
    written = int(filled.stdout.split()[-1])
    assert written <= 2 << 20
    assert "No space left" in filled.stderr
    with pytest.raises(SandboxFileError, match="No space left"):
        await tools.write(WriteArgs(path="more.txt", content="y" * 100_000))


def test_backend_list_and_delete(engine: Engine, fleet: str) -> None:
    settings = SandboxSettings(engine_url=engine.url, image=engine.image)
    backend = DockerBackend(EngineEndpoint(engine.url, "test"), settings)
    session = backend.create_session(
        SessionSpec(fleet, "files-1", "test", engine.image, SandboxProfile(), False)
    )
    try:
        session.write_file("/workspace/d/one.txt", b"1")
        session.write_file("/workspace/d/two.txt", b"22")
        entries, truncated = session.list_files("/workspace/d")
        assert [(e.path, e.kind, e.size) for e in entries] == [
            ("d/one.txt", "file", 1),
            ("d/two.txt", "file", 2),
        ]
        assert not truncated
        session.delete_file("/workspace/d/one.txt")
        with pytest.raises(SandboxFileError, match=r"(?i)not empty"):
            session.delete_file("/workspace/d")
        session.delete_file("/workspace/d", recursive=True)
        assert session.list_files("/workspace")[0] == []
        assert session.read_file("/etc/hostname", 100).data.strip() == b"sandbox"  # the container's own file
    finally:
        session.stop()
        backend.close()
    assert engine.containers(fleet) == []
