"""The agent tools over one sandbox session: exec, read, write, edit, glob, grep.

Synchronous: a ``SandboxSessionActor`` runs them on its thread. Here the
caller's arguments meet the profile: timeouts and output limits are clamped to
its ceilings, its environment is merged under the caller's, and file sizes are
bounded by its file limit. ``call_timeout`` tells the asking side how long a
call may take, so it can give up with a clear error instead of hanging.

A command or managed process that uses a skill (its working directory is in
``/workspace/.skills/<name>``, or an argument names a path there) first gets that skill's Python environment
(``sandbox/skill_env.py``, run in the container once per container and skill) and then runs
with the venv's ``bin`` first on ``PATH``, so ``python3`` is the venv's.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path
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
from callboard.sandbox.config import SKILLS_DIR, SandboxProfile

#: What a call may need besides the command itself: a cold container start, the
#: kill after a timeout, and a few engine round trips.
CALL_OVERHEAD = 15.0
#: the most a skill's environment may take to build (unpacking wheels, or pip from the index)
SKILL_INSTALL_TIMEOUT = 120.0
SKILL_ENV_SOURCE = Path(__file__).with_name("skill_env.py").read_text()
#: where skills' venvs go: in the workspace, so a persistent workspace keeps them
VENVS_DIR = f"{WORKSPACE}/.venvs"
#: the image's PATH (``sandbox/image.py``), after a skill's venv
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SKILL_REF = re.compile(r"(?:^|[\s'\"=:/])\.skills/([A-Za-z0-9._-]+)")

log = logging.getLogger("callboard.sandbox")


def exec_timeout(profile: SandboxProfile, requested: float | None) -> float:
    return min(requested or profile.exec_timeout, profile.max_exec_timeout)


def call_timeout(profile: SandboxProfile, engine_timeout: float, tool: ToolName, args: BaseModel) -> float:
    """Longest a caller should wait for ``tool`` before reporting the sandbox busy."""
    run = exec_timeout(profile, args.timeout) if isinstance(args, ExecArgs) else profile.exec_timeout
    if isinstance(args, ExecArgs) and profile.skills:
        run += SKILL_INSTALL_TIMEOUT  # the first use of a skill builds its environment first
    return run + 2 * engine_timeout + CALL_OVERHEAD


def skills_used(profile: SandboxProfile, cwd: str, argv: tuple[str, ...]) -> list[str]:
    """The profile's skills a command uses: its working directory is in one, or an argument
    names a path in one (``.skills/pdf/run.py``, ``/workspace/.skills/pdf``)."""
    found: list[str] = []
    cwd = posixpath.normpath(posixpath.join(WORKSPACE, cwd))  # a managed process's may be relative
    relative = posixpath.relpath(cwd, SKILLS_DIR) if cwd.startswith(SKILLS_DIR + "/") else None
    if relative is not None:
        found.append(relative.split("/", 1)[0])
    for part in argv:
        found += _SKILL_REF.findall(part)
    return [name for name in dict.fromkeys(found) if name in profile.skills]


class WorkspaceTools:
    """The six tools over ``session``; one call at a time."""

    def __init__(self, session: SandboxSession) -> None:
        self.session = session
        self.profile = session.spec.profile
        #: bytes a persistent workspace held when last measured (measured quotas only)
        self.used: int | None = None
        #: skill -> its venv, or None when it has no Python dependencies (built in this container)
        self.skill_envs: dict[str, str | None] = {}

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
        env = self.with_skills(args.cwd, argv, {**profile.env, **args.env})
        if isinstance(env, ExecResult):
            return env  # the command does not run without its skills' packages
        return self.session.exec(
            ExecRequest(
                argv=argv,
                cwd=args.cwd,
                timeout=exec_timeout(profile, args.timeout),
                output_limit=limit,
                stdin=args.stdin.encode() if args.stdin is not None else None,
                env=env,
            )
        )

    def with_skills(
        self, cwd: str, argv: tuple[str, ...], env: dict[str, str]
    ) -> dict[str, str] | ExecResult:
        """``env`` for a command (or managed process) that uses skills: their venvs (built on
        first use) first on ``PATH``; or the failed build as the result to report instead."""
        venvs: list[str] = []
        for skill in skills_used(self.profile, cwd, argv):
            built = self.skill_env(skill)
            if isinstance(built, ExecResult):
                return built
            if built is not None:
                venvs.append(built)
        if not venvs:
            return env
        path = ":".join([*(f"{venv}/bin" for venv in venvs), env.get("PATH", IMAGE_PATH)])
        return {**env, "PATH": path, "VIRTUAL_ENV": venvs[0]}

    def skill_env(self, skill: str) -> str | ExecResult | None:
        """The venv of ``skill`` (built on its first use in this container; reused when its
        marker matches), None when it has no Python dependencies, or the failed build as the
        result the caller gets instead of its command's."""
        if skill in self.skill_envs:
            return self.skill_envs[skill]
        prefix = f"{VENVS_DIR}/{skill}"
        network = "1" if self.session.spec.network else "0"
        built = self.session.exec(
            ExecRequest(
                argv=("python3", "-I", "-c", SKILL_ENV_SOURCE, f"{SKILLS_DIR}/{skill}", prefix, network),
                cwd=WORKSPACE,
                timeout=SKILL_INSTALL_TIMEOUT,
                output_limit=self.profile.output_limit,
                env=self.profile.env,
            )
        )
        try:
            report = json.loads(built.stdout) if built.ok else None
        except ValueError:
            report = None
        if report is None:
            why = built.stderr.strip() or built.stdout.strip() or f"exit code {built.exit_code}"
            if built.timed_out:
                why = f"it took longer than {SKILL_INSTALL_TIMEOUT:g}s\n{why}"
            return built.model_copy(
                update={
                    "exit_code": 1 if built.exit_code in (0, None) else built.exit_code,
                    "stdout": "",
                    "stderr": f"skill {skill!r}: its Python dependencies could not be installed, so the "
                    f"command did not run: {why}\n",
                }
            )
        venv = str(report["venv"]) if report["state"] != "none" else None
        if report["state"] == "installed":
            log.info(
                "sandbox %s: skill %s: installed %s in %.1fs",
                self.session.spec.container_name,
                skill,
                ", ".join(report["packages"]),
                report["seconds"],
            )
        self.skill_envs[skill] = venv
        return venv

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
