"""The agent tools over one sandbox session: exec, read, write, edit, glob, grep.

Synchronous: a ``SandboxSessionActor`` runs them on its thread. Here the
caller's arguments meet the profile: timeouts and output limits are clamped to
its ceilings, its environment is merged under the caller's, and file sizes are
bounded by its file limit. ``call_timeout`` tells the asking side how long a
call may take, so it can give up with a clear error instead of hanging.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from callboard.engine.sandbox_api import (
    WORKSPACE,
    EditArgs,
    EditResult,
    ExecArgs,
    ExecResult,
    GlobArgs,
    GlobResult,
    GrepArgs,
    GrepMatch,
    GrepResult,
    ReadArgs,
    ReadResult,
    SandboxFileError,
    ToolName,
    WriteArgs,
    WriteResult,
)
from callboard.sandbox.backend import ExecRequest, SandboxSession
from callboard.sandbox.config import SandboxProfile

#: What a call may need besides the command itself: a cold container start, the
#: kill after a timeout, and a few engine round trips.
CALL_OVERHEAD = 15.0


def exec_timeout(profile: SandboxProfile, requested: float | None) -> float:
    return min(requested or profile.exec_timeout, profile.max_exec_timeout)


def call_timeout(profile: SandboxProfile, engine_timeout: float, tool: ToolName, args: BaseModel) -> float:
    """Longest a caller should wait for ``tool`` before reporting the sandbox busy."""
    run = exec_timeout(profile, args.timeout) if isinstance(args, ExecArgs) else profile.exec_timeout
    return run + 2 * engine_timeout + CALL_OVERHEAD


class WorkspaceTools:
    """The six tools over ``session``; one call at a time."""

    def __init__(self, session: SandboxSession) -> None:
        self.session = session
        self.profile = session.spec.profile
        #: bytes a persistent workspace held when last measured (measured quotas only)
        self.used: int | None = None

    def call(self, tool: ToolName, args: BaseModel) -> BaseModel:
        quota = self.session.measured_quota
        if quota is not None and tool in ("write", "edit") and self.used is not None and self.used > quota:
            raise SandboxFileError(
                f"the workspace is over its quota ({self.used} of {quota} bytes): delete files first"
            )
        method = getattr(self, tool)
        result: BaseModel = method(args)
        if quota is not None and tool in ("exec", "write", "edit"):
            self._measure()
        return result

    def _measure(self) -> None:
        """A persistent workspace's usage, for a quota the engine does not enforce."""
        usage = self.session.exec(
            ExecRequest(argv=("du", "-s", "-B1", WORKSPACE), cwd=WORKSPACE, timeout=10.0, output_limit=256)
        )
        try:
            self.used = int(usage.stdout.split()[0])
        except (IndexError, ValueError):
            self.used = None  # unmeasurable (du missing or killed): never block on a guess

    def exec(self, args: ExecArgs) -> ExecResult:
        profile = self.profile
        argv = tuple(args.argv) if args.argv is not None else ("/bin/sh", "-c", args.command or "")
        limit = min(args.output_limit or profile.output_limit, profile.output_limit)
        return self.session.exec(
            ExecRequest(
                argv=argv,
                cwd=args.cwd,
                timeout=exec_timeout(profile, args.timeout),
                output_limit=limit,
                stdin=args.stdin.encode() if args.stdin is not None else None,
                env={**profile.env, **args.env},
            )
        )

    def read(self, args: ReadArgs) -> ReadResult:
        found = self.session.read_file(args.path, self.profile.file_limit)
        binary = b"\x00" in found.data
        try:
            text = found.data.decode("utf-8")
        except UnicodeDecodeError:
            binary = True
            text = found.data.decode("utf-8", "replace")
        lines = text.splitlines(keepends=True)
        end = None if args.limit is None else args.offset + args.limit
        window = lines[args.offset : end]
        return ReadResult(
            path=args.path,
            content="".join(window),
            size=found.size,
            lines=len(lines),
            truncated=found.truncated,
            binary=binary,
        )

    def write(self, args: WriteArgs) -> WriteResult:
        size = self.session.write_file(args.path, args.content.encode())
        return WriteResult(path=args.path, size=size)

    def edit(self, args: EditArgs) -> EditResult:
        payload = json.dumps({"old": args.old, "new": args.new, "replace_all": args.replace_all}).encode()
        reply = self.session.helper("edit", {"path": args.path, "limit": self.profile.file_limit}, payload)
        return EditResult(path=args.path, replacements=int(reply["replacements"]))

    def glob(self, args: GlobArgs) -> GlobResult:
        reply = self.session.helper("glob", {"path": args.path, "pattern": args.pattern, "limit": args.limit})
        return GlobResult(paths=list(reply["paths"]), truncated=bool(reply["truncated"]))

    def grep(self, args: GrepArgs) -> GrepResult:
        request: dict[str, Any] = {
            "path": args.path,
            "pattern": args.pattern,
            "glob": args.glob,
            "ignore_case": args.ignore_case,
            "limit": args.limit,
            "max_file": self.profile.file_limit,
        }
        reply = self.session.helper("grep", request)
        return GrepResult(
            matches=[GrepMatch(path=p, line=n, text=t) for p, n, t in reply["matches"]],
            truncated=bool(reply["truncated"]),
            files_searched=int(reply["files_searched"]),
        )
