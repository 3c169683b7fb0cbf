"""What a sandbox call leaves in the audit log: the command or path and the sizes, never the
contents (a command's stdin and environment, a file's text, an edit's strings)."""

from __future__ import annotations

import shlex

from pydantic import BaseModel

from callboard.engine.sandbox_api import (
    EditArgs,
    ExecArgs,
    ExecResult,
    GlobArgs,
    GlobResult,
    GrepArgs,
    GrepResult,
    ReadResult,
    SandboxError,
    WriteArgs,
)
from callboard.engine.sandbox_processes import ProcessArgs

#: characters of a command line or path kept
TARGET_LIMIT = 1000


def target_of(args: BaseModel | str) -> str:
    """The argv (or shell command), path or pattern a call acted on."""
    if isinstance(args, str):
        text = args
    elif isinstance(args, ExecArgs):
        text = args.command if args.command is not None else shlex.join(args.argv or [])
    elif isinstance(args, ProcessArgs):
        text = f"{args.process_id}: {shlex.join(args.argv)}"
    elif isinstance(args, GlobArgs):
        text = f"{args.path}: {args.pattern}"
    elif isinstance(args, GrepArgs):
        text = f"{args.path}: {args.pattern}" + (f" ({args.glob})" if args.glob else "")
    else:
        text = str(getattr(args, "path", ""))
    return text[:TARGET_LIMIT]


def bytes_in(args: BaseModel | str) -> int:
    """What the call sent into the sandbox (sizes only)."""
    if isinstance(args, ExecArgs):
        return len((args.stdin or "").encode())
    if isinstance(args, WriteArgs):
        return len(args.content.encode())
    if isinstance(args, EditArgs):
        return len(args.old.encode()) + len(args.new.encode())
    return 0


def bytes_out(value: BaseModel | None) -> int:
    """What came back out of the sandbox (sizes only)."""
    if isinstance(value, ExecResult):
        return value.stdout_bytes + value.stderr_bytes
    if isinstance(value, ReadResult):
        return len(value.content.encode())
    if isinstance(value, GlobResult):
        return sum(len(path) for path in value.paths)
    if isinstance(value, GrepResult):
        return sum(len(match.text) for match in value.matches)
    return 0


def outcome(value: BaseModel | None, error: BaseException | None) -> tuple[int | None, str]:
    """(exit code, status) for the audit row."""
    if error is not None:
        return None, error.code if isinstance(error, SandboxError) else type(error).__name__
    if isinstance(value, ExecResult):
        return value.exit_code, "timeout" if value.timed_out else "ok"
    return None, "ok"
