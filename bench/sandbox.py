"""Sandbox benchmark: cold start, warm exec latency, 20 concurrent sessions, and the host floor.

Every figure goes through the real path (tools API -> manager -> session actor
-> docker SDK -> engine -> container) except the "backend" row, which calls
the docker backend directly to show what the actors add. The host row runs
the same command with ``subprocess.run`` in the same process and run, so the
ratio holds when the machine's load moves the absolute figures.

    callboard bench sandbox [--quick] [--json] [--engine-url URL]

The engine is ``--engine-url``, else ``DOCKER_HOST`` or the usual sockets;
failing those, a private Podman service is started for the run (podman must be
installed). A missing sandbox image is built first (about 40 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from mcp.client.session import ClientSession

from callboard.actors.sandbox import SessionTools, tools_for
from callboard.actors.sandbox_manager import SandboxManager
from callboard.bench.harness import Progress
from callboard.engine import ActorSystem
from callboard.engine.loop import run as run_loop
from callboard.engine.sandbox_api import ExecArgs, ReadArgs, SandboxError, WriteArgs
from callboard.engine.sandbox_processes import ProcessArgs
from callboard.handlers.agent.config import McpServerConfig
from callboard.handlers.agent.mcp import McpConnection, McpPool, attached_stdio, process_id, stdio_opener
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxPolicy, SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend, DockerSession
from callboard.sandbox.engine import EngineEndpoint, resolve_endpoint
from callboard.sandbox.image import build_image, image_id
from callboard.sandbox.podman_service import PodmanService, PodmanUnavailable
from callboard.sandbox.tools import WorkspaceTools
from callboard.testing import stdio_mcp_server

COMMAND = ["echo", "hello"]
MCP_SERVER = Path(stdio_mcp_server.__file__).read_text()
CONCURRENT = 20


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _percentile(samples, 0.5) * 1000,
        "p99_ms": _percentile(samples, 0.99) * 1000,
        "max_ms": max(samples) * 1000,
        "n": len(samples),
    }


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    result = await call()
    elapsed = time.perf_counter() - started
    if getattr(result, "exit_code", 0) != 0:
        raise SandboxError(f"benchmark command failed: {result!r}")
    return elapsed


def host_latency(samples: int) -> list[float]:
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run(COMMAND, capture_output=True, check=True)
        timings.append(time.perf_counter() - started)
    return timings


def _direct_session(endpoint: EngineEndpoint, settings: SandboxSettings, fleet: str) -> WorkspaceTools:
    """A session driven without actors: the docker backend alone."""
    backend = DockerBackend(endpoint, settings)
    # a fleet of its own: the manager's sweep would rightly remove it as an orphan of its fleet
    spec = SessionSpec(f"{fleet}-direct", "s", "bench", settings.image, settings.profile("default"), False)
    return WorkspaceTools(backend.create_session(spec))


def _close_direct(tools: WorkspaceTools) -> None:
    tools.session.stop()
    if isinstance(tools.session, DockerSession):
        tools.session.backend.close()


async def actor_figures(
    endpoint: EngineEndpoint,
    settings: SandboxSettings,
    fleet: str,
    quick: bool,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    system = ActorSystem("bench-sandbox")
    manager = system.spawn(SandboxManager, "sandbox", fleet, settings)
    policy = SandboxPolicy(enabled=True)
    args = ExecArgs(argv=COMMAND)

    def tools(chat: str) -> Any:
        return tools_for(manager, policy, "bench", "private", chat, "u")

    try:
        progress("cold starts")
        cold = [await _timed(partial(tools(f"cold-{i}").exec, args)) for i in range(5 if quick else 15)]
        progress("warm exec, through the actors and straight to the backend, interleaved")
        warm_tools = tools("warm")
        direct = await asyncio.to_thread(_direct_session, endpoint, settings, fleet)
        try:
            for _ in range(3):
                await warm_tools.exec(args)
                await asyncio.to_thread(direct.exec, args)
            warm: list[float] = []
            backend: list[float] = []
            for index in range(50 if quick else 300):
                pair = [
                    (warm, lambda: warm_tools.exec(args)),
                    (backend, lambda: asyncio.to_thread(direct.exec, args)),
                ]
                for samples, call in pair if index % 2 else reversed(pair):  # alternate who goes first
                    samples.append(await _timed(call))
        finally:
            await asyncio.to_thread(_close_direct, direct)
        progress("file tools and a 16-call tool loop")
        write_args = WriteArgs(path="bench.txt", content="x" * 1024)
        read_args = ReadArgs(path="bench.txt")
        writes = [await _timed(lambda: warm_tools.write(write_args)) for _ in range(50 if quick else 300)]
        reads = [await _timed(lambda: warm_tools.read(read_args)) for _ in range(50 if quick else 300)]
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: warm_tools.exec(args),
            lambda: warm_tools.write(write_args),
            lambda: warm_tools.read(read_args),
            lambda: warm_tools.exec(args),
        ]
        loops: list[float] = []
        for _ in range(5 if quick else 20):
            started = time.perf_counter()
            for step in range(16):
                await calls[step % 4]()
            loops.append(time.perf_counter() - started)
        progress("MCP tool calls (stdio server in the sandbox) against warm exec, interleaved")
        mcp = await _mcp_figures(warm_tools, args, 50 if quick else 300)
        progress(f"{CONCURRENT} concurrent sessions")
        burst: dict[str, Any] = {}
        for phase in ("cold", "warm"):
            started = time.perf_counter()
            each = await asyncio.gather(
                *(_timed(partial(tools(f"burst-{i}").exec, args)) for i in range(CONCURRENT))
            )
            burst[phase] = {"wall_s": time.perf_counter() - started, **_summary(list(each))}
        return {
            "cold_start": _summary(cold),
            "warm_exec": _summary(warm),
            "backend_exec": _summary(backend),
            "write_file": _summary(writes),
            "read_file": _summary(reads),
            "tool_loop_16": _summary(loops),
            "concurrent": burst,
            **mcp,
        }
    finally:
        await system.shutdown(timeout=60)


async def _mcp_figures(tools: SessionTools, args: ExecArgs, samples: int) -> dict[str, Any]:
    """One ``tools/call`` of the test MCP server (a managed process in the same sandbox, over the
    attached stdio, through the official client) against one warm exec, alternating order; then
    a run's first call with a fresh session (attach, ``initialize``, ``tools/list``, call, as every
    run paid before sessions were pooled) against one on the pooled session, alternating."""
    await tools.start_process(ProcessArgs(process_id="mcp-bench", argv=["python3", "-c", MCP_SERVER]))
    attachment = await tools.attach("mcp-bench")
    async with attached_stdio(attachment) as streams, ClientSession(*streams) as session:
        await session.initialize()
        for _ in range(3):
            await session.call_tool("add", {"a": 1, "b": 2})
        calls: list[float] = []
        execs: list[float] = []
        for index in range(samples):  # who goes first alternates
            pair = [
                (calls, lambda: session.call_tool("add", {"a": 2, "b": 40})),
                (execs, lambda: tools.exec(args)),
            ]
            for taken, call in pair if index % 2 else reversed(pair):
                taken.append(await _timed(call))
    await tools.stop_process("mcp-bench")
    # two servers (one attacher each): mcp-fresh is attached anew per sample, mcp-pooled once
    fresh_server = McpServerConfig(name="fresh", command=["python3", "-c", MCP_SERVER])
    pooled_server = McpServerConfig(name="pooled", command=["python3", "-c", MCP_SERVER])
    pool = McpPool()

    async def fresh() -> None:
        connection = await McpConnection.opened(fresh_server, stdio_opener(tools, fresh_server))
        try:
            await connection.call("add", {"a": 2, "b": 40})
        finally:
            await connection.close()

    async def pooled() -> None:
        opener = stdio_opener(tools, pooled_server)
        connection = await pool.connect(("bench",), pooled_server, opener)
        await connection.call("add", {"a": 2, "b": 40})

    firsts: dict[str, list[float]] = {"fresh": [], "pooled": []}
    try:
        await fresh()  # both servers started and warm
        await pooled()
        for index in range(max(10, samples // 5)):
            kinds = [("fresh", fresh), ("pooled", pooled)]
            for kind, first in kinds if index % 2 else reversed(kinds):
                firsts[kind].append(await _timed(first))
    finally:
        await pool.close()
    for server in (fresh_server, pooled_server):
        await tools.stop_process(process_id(server))
    return {
        "mcp_call": _summary(calls),
        "mcp_exec_alongside": _summary(execs),
        "mcp_first_call_fresh": _summary(firsts["fresh"]),
        "mcp_first_call_pooled": _summary(firsts["pooled"]),
    }


def measure(endpoint: EngineEndpoint, settings: SandboxSettings, quick: bool, quiet: bool) -> dict[str, Any]:
    steps = Progress(7, quiet)
    progress = steps.step

    fleet = f"bench-{os.getpid()}"
    backend = DockerBackend(endpoint, settings)
    info = backend.ping()
    backend.close()
    samples = 50 if quick else 300
    progress("host subprocess.run")
    host = _summary(host_latency(samples))
    try:
        actors = run_loop(actor_figures(endpoint, settings, fleet, quick, progress))
    finally:
        steps.close()
    mcp, alongside = actors["mcp_call"], actors["mcp_exec_alongside"]
    return {
        "quick": quick,
        "python": sys.version.split()[0],
        "engine": f"{info.product} {info.version} (API {info.api_version})",
        "endpoint": info.endpoint,
        "image": settings.image,
        "command": " ".join(COMMAND),
        "cpus": os.cpu_count(),
        "host_subprocess": host,
        **actors,
        "ratio_warm_exec_to_host_p50": actors["warm_exec"]["p50_ms"] / host["p50_ms"],
        "ratio_read_file_to_host_p50": actors["read_file"]["p50_ms"] / host["p50_ms"],
        "actor_overhead_p50_ms": actors["warm_exec"]["p50_ms"] - actors["backend_exec"]["p50_ms"],
        "ratio_mcp_call_to_warm_exec_p50": mcp["p50_ms"] / alongside["p50_ms"],
        "ratio_mcp_call_to_warm_exec_p99": mcp["p99_ms"] / alongside["p99_ms"],
        "ratio_mcp_first_call_fresh_to_pooled_p50": actors["mcp_first_call_fresh"]["p50_ms"]
        / actors["mcp_first_call_pooled"]["p50_ms"],
    }


def render(result: dict[str, Any]) -> str:
    def row(label: str, figures: dict[str, float], last: str = "p99_ms") -> str:
        return f"  {label:<34}{figures['p50_ms']:>10.1f} ms{figures[last]:>11.1f} ms   n={figures['n']:.0f}"

    lines = [
        f"callboard sandbox benchmark: {result['engine']} at {result['endpoint']}",
        f"image {result['image']}, Python {result['python']}, {result['cpus']} CPUs, "
        f"command `{result['command']}`",
        "",
        f"  {'':<34}{'p50':>13}{'p99':>14}",
        row("host subprocess.run", result["host_subprocess"]),
        row("warm exec (tools API -> actors)", result["warm_exec"]),
        row("warm exec (docker backend only)", result["backend_exec"]),
        row("write 1 KiB file (tools API)", result["write_file"]),
        row("read it back (tools API)", result["read_file"]),
        row("16-call tool loop (exec/write/read)", result["tool_loop_16"]),
        row("cold start + first exec (max)", result["cold_start"], "max_ms"),
        row("MCP tools/call (stdio, in sandbox)", result["mcp_call"]),
        row("warm exec, interleaved with it", result["mcp_exec_alongside"]),
        row("1st MCP call of a run, fresh", result["mcp_first_call_fresh"]),
        row("1st MCP call of a run, pooled", result["mcp_first_call_pooled"]),
        "",
        f"  {CONCURRENT} concurrent sessions, each `{result['command']}`:",
    ]
    for phase, label in (("cold", "cold (container start + exec)"), ("warm", "warm (exec only)")):
        burst = result["concurrent"][phase]
        lines.append(
            f"    {label:<32} wall {burst['wall_s']:.2f} s, per call p50 {burst['p50_ms']:.0f} ms, "
            f"max {burst['max_ms']:.0f} ms"
        )
    lines += [
        "",
        f"warm exec / host subprocess.run (p50): {result['ratio_warm_exec_to_host_p50']:.0f}x",
        f"read file / host subprocess.run (p50): {result['ratio_read_file_to_host_p50']:.0f}x",
        "warm exec p50, actors minus backend alone (alternating order): "
        f"{result['actor_overhead_p50_ms']:.2f} ms",
        f"MCP tool call / warm exec: p50 {result['ratio_mcp_call_to_warm_exec_p50']:.2f}x, "
        f"p99 {result['ratio_mcp_call_to_warm_exec_p99']:.2f}x",
        "a run's first MCP call, fresh session (attach, initialize, tools/list) / pooled (p50): "
        f"{result['ratio_mcp_first_call_fresh_to_pooled_p50']:.1f}x",
    ]
    return "\n".join(lines)


def _engine(url: str | None, workdir: Path) -> tuple[EngineEndpoint, PodmanService | None]:
    endpoint = resolve_endpoint(SandboxSettings(engine_url=url))
    if endpoint is not None:
        return endpoint, None
    service = PodmanService(workdir)
    service.start()
    return EngineEndpoint(service.url, "private podman service"), service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench sandbox", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 30 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--engine-url", help="Docker Engine API endpoint (default: DOCKER_HOST, usual sockets)"
    )
    parser.add_argument("--image", help="sandbox image (default: the configured default)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="callboard-bench-") as workdir:
        try:
            endpoint, service = _engine(args.engine_url, Path(workdir))
        except PodmanUnavailable as error:
            print(f"error: no container engine: {error}", file=sys.stderr)
            return 1
        try:
            overrides = {"image": args.image} if args.image else {}
            settings = SandboxSettings(engine_url=endpoint.url, max_sessions=CONCURRENT + 20, **overrides)
            backend = DockerBackend(endpoint, settings)
            try:
                if image_id(backend.client, settings.image) is None:
                    print(f"building {settings.image} first (about 40 s) ...", file=sys.stderr)
                    build_image(
                        backend.client, settings.image, progress=lambda line: print(line, file=sys.stderr)
                    )
            finally:
                backend.close()
            result = measure(endpoint, settings, args.quick, quiet=args.json)
        except SandboxError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            if service is not None:
                service.stop()
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
