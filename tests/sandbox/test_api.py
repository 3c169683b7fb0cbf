"""The handler-facing contract: argument validation and NoSandbox (no containers)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from callboard.actors.sandbox_session import SessionCall
from callboard.engine.sandbox_api import (
    EditArgs,
    ExecArgs,
    GlobArgs,
    GrepArgs,
    NoSandbox,
    ReadArgs,
    SandboxOff,
    SandboxPathError,
    SandboxTools,
    WriteArgs,
    workspace_path,
)
from callboard.sandbox.config import SandboxProfile

pytestmark = pytest.mark.timeout(60)


def test_exec_takes_argv_or_a_shell_command_not_both() -> None:
    assert ExecArgs(argv=["python3", "-V"]).command is None
    assert ExecArgs(command="ls | wc -l").argv is None
    with pytest.raises(ValidationError, match="exactly one of argv"):
        ExecArgs()
    with pytest.raises(ValidationError, match="exactly one of argv"):
        ExecArgs(argv=["ls"], command="ls")
    with pytest.raises(ValidationError, match="argv must name a program"):
        ExecArgs(argv=[])
    with pytest.raises(ValidationError, match="command must not be empty"):
        ExecArgs(command="   ")


def test_exec_arguments_are_checked_with_the_field_named() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ExecArgs(argv=["env"], env={"BAD NAME": "x"})
    assert "env" in str(excinfo.value) and "BAD NAME" in str(excinfo.value)
    with pytest.raises(ValidationError) as excinfo:
        ExecArgs(argv=["ls"], cwd="../etc")
    assert "cwd" in str(excinfo.value) and "outside the workspace" in str(excinfo.value)
    with pytest.raises(ValidationError, match="timeout"):
        ExecArgs(argv=["ls"], timeout=0)
    with pytest.raises(ValidationError, match="NUL"):
        ExecArgs(argv=["echo", "a\x00b"])
    with pytest.raises(ValidationError, match="stdin is limited"):
        ExecArgs(argv=["cat"], stdin="x" * (2 << 20))
    with pytest.raises(ValidationError, match="extra"):
        ExecArgs.model_validate({"argv": ["ls"], "network": True})  # no way to ask for more than the profile


def test_paths_resolve_inside_the_workspace() -> None:
    assert workspace_path("a/b.txt") == "/workspace/a/b.txt"
    assert workspace_path("/workspace/a/../b") == "/workspace/b"
    assert workspace_path(".") == "/workspace"
    for bad in ("../x", "/etc/passwd", "/workspace/../etc", "/workspacex/y", "", "a\x00"):
        with pytest.raises(SandboxPathError):
            workspace_path(bad)
    with pytest.raises(ValidationError) as excinfo:
        ReadArgs(path="../../etc/shadow")
    assert "path" in str(excinfo.value)


def test_file_tool_arguments() -> None:
    with pytest.raises(ValidationError, match="identical"):
        EditArgs(path="a", old="x", new="x")
    with pytest.raises(ValidationError, match="old"):
        EditArgs(path="a", old="", new="x")
    with pytest.raises(ValidationError, match="must not start with '/'"):
        GlobArgs(pattern="/etc/*")
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        GlobArgs(pattern="../*")
    with pytest.raises(ValidationError) as excinfo:
        GrepArgs(pattern="(unclosed")
    assert "pattern" in str(excinfo.value) and "invalid regular expression" in str(excinfo.value)
    with pytest.raises(ValidationError, match="glob"):
        GrepArgs(pattern="x", glob="/abs/*")
    assert WriteArgs(path="x.txt", content="").path == "/workspace/x.txt"


async def test_no_sandbox_explains_itself_on_every_tool() -> None:
    tools = NoSandbox(SandboxOff("sandboxes are off: no engine"))
    assert isinstance(tools, SandboxTools)
    assert tools.tools == frozenset()
    calls = [
        tools.exec(ExecArgs(argv=["true"])),
        tools.read(ReadArgs(path="a")),
        tools.write(WriteArgs(path="a", content="")),
        tools.edit(EditArgs(path="a", old="a", new="b")),
        tools.glob(GlobArgs(pattern="*")),
        tools.grep(GrepArgs(pattern="a")),
    ]
    for call in calls:
        with pytest.raises(SandboxOff, match="no engine"):
            await call


def test_secrets_stay_out_of_reprs() -> None:
    args = ExecArgs(argv=["deploy"], env={"API_TOKEN": "s3cr3t"}, stdin="password")
    assert "s3cr3t" not in repr(args) and "password" not in repr(args)
    assert "hunter2" not in repr(WriteArgs(path="key", content="hunter2"))
    assert "s3cr3t" not in repr(SessionCall("exec", args))
    assert "s3cr3t" not in repr(SandboxProfile(env={"TOKEN": "s3cr3t"}))
