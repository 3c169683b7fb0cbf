"""Process plumbing the benchmarks (and the tests that run a real engine) share:
free ports, CPU pinning, child processes, readiness, RSS; and a benchmark's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return []


def split_cpus() -> tuple[int | None, int | None]:
    """(engine CPU, load CPU): the server and the load never share a core."""
    available = cpus()
    return (available[0] if available else None, available[1] if len(available) > 1 else None)


def pin(cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def process(argv: list[str], cpu: int | None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: pin(cpu)
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def engine_argv(config: Path, log_level: str = "WARNING") -> list[str]:
    """``callboard run`` of a fleet file, in a child process of this interpreter."""
    return [sys.executable, "-m", "callboard.cli", "--log-level", log_level, "run", str(config)]


@contextlib.asynccontextmanager
async def running_engine(config: Path, port: int, cpu: int | None) -> AsyncIterator[subprocess.Popen[bytes]]:
    """An engine process on fleet file ``config`` (admin on ``port``), pinned to ``cpu``, once ready."""
    with process(engine_argv(config), cpu) as engine:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", engine)
        yield engine


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used: per-event cost
    that, unlike throughput, does not move when other work shares the machine."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Until ``url`` answers 200; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"server exited early: {err[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not answer")


def narrator(quiet: bool) -> Callable[[str], None]:
    """What a benchmark says on stderr while it runs (``say``); nothing when ``quiet`` (``--json``)."""

    def say(text: str) -> None:
        if not quiet:
            print(f"  {text}", file=sys.stderr, flush=True)

    return say


def verdicts(label: str, results: Mapping[str, bool], good: str = "ok", bad: str = "FAILED") -> str:
    """A report's closing line: each check or target by name, ``good`` or ``bad``."""
    return f"{label}: " + ", ".join(f"{name}={good if passed else bad}" for name, passed in results.items())


def report_parser(prog: str, doc: str | None, quick: str) -> argparse.ArgumentParser:
    """A benchmark's command line: ``--quick`` (``quick`` says what it leaves out) and ``--json``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def print_report(report: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """The report as one JSON object (what ``callboard bench --report`` reads), else as text."""
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render(report))


class Progress:
    """What a long benchmark is doing: a progress bar on a terminal, a line per step in a log,
    nothing with ``--json`` (``quiet``), so stdout stays one JSON object."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, leave=False, unit="step")

    def step(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_description(what)
            self.bar.update(1)
        elif not self.quiet:
            print(f"  running {what} ...", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
