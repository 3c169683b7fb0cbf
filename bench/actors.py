"""Actor runtime benchmark: callboard's runtime against pykka and a bare asyncio floor.

Everything runs in one process pinned to one core, side by side, so the ratios
hold on a noisy shared machine even when the absolute figures move.

    callboard bench actors [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pykka

from callboard.bench.harness import print_report, report_parser, verdicts
from callboard.engine import Actor, ActorSystem
from callboard.engine.loop import run as run_loop


class _Done:
    """Counts handled messages; resolves ``future`` at the expected total."""

    __slots__ = ("future", "left")

    def __init__(self, total: int, future: asyncio.Future[None]) -> None:
        self.left = total
        self.future = future

    def hit(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.future.set_result(None)


class Counter(Actor):
    def __init__(self, done: _Done) -> None:
        self.done = done

    async def receive(self, message: Any) -> Any:
        self.done.hit()


class Echo(Actor):
    async def receive(self, message: Any) -> Any:
        return message


class Idle(Actor):
    async def receive(self, message: Any) -> Any:
        return None


# ---------------------------------------------------------------------- callboard


async def tell_throughput(actors: int, messages: int) -> float:
    system = ActorSystem("bench")
    done = _Done(messages, asyncio.get_running_loop().create_future())
    refs = [system.spawn(Counter, f"c{i}", done) for i in range(actors)]
    await system.quiesce()
    gc.collect()
    start = time.perf_counter()
    for i in range(messages):
        refs[i % actors].tell(i)
    await done.future
    elapsed = time.perf_counter() - start
    await system.shutdown()
    return messages / elapsed


async def ask_latency(samples: int) -> tuple[float, float]:
    system = ActorSystem("bench")
    ref = system.spawn(Echo, "echo")
    for _ in range(1000):  # warm up
        await ref.ask(0)
    timings = []
    clock = time.perf_counter_ns
    for i in range(samples):
        t0 = clock()
        await ref.ask(i)
        timings.append(clock() - t0)
    await system.shutdown()
    timings.sort()
    return timings[len(timings) // 2] / 1000, timings[int(len(timings) * 0.99)] / 1000


async def spawn_and_stop(actors: int) -> tuple[float, float]:
    system = ActorSystem("bench")
    gc.collect()
    start = time.perf_counter()
    for i in range(actors):
        system.spawn(Idle, f"i{i}")
    spawned = time.perf_counter() - start
    start = time.perf_counter()
    await system.shutdown(timeout=120)
    stopped = time.perf_counter() - start
    return spawned, stopped


async def idle_bytes(actors: int) -> float:
    system = ActorSystem("bench")
    parent = system.spawn(Idle, "parent")
    context = system._cells[parent.path]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(actors):
        context.spawn(Idle, f"s{i}")
    await system.quiesce()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    await system.shutdown(timeout=120)
    return (after - before) / actors


# ---------------------------------------------------------------------- bare asyncio floor


async def baseline_throughput(actors: int, messages: int) -> float:
    loop = asyncio.get_running_loop()
    done = _Done(messages, loop.create_future())
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(actors)]

    async def consume(queue: asyncio.Queue[int]) -> None:
        while True:
            await queue.get()
            done.hit()

    tasks = [loop.create_task(consume(q)) for q in queues]
    await asyncio.sleep(0)
    gc.collect()
    start = time.perf_counter()
    for i in range(messages):
        queues[i % actors].put_nowait(i)
    await done.future
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return messages / elapsed


# ---------------------------------------------------------------------- pykka


class _PykkaCounter(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, done: threading.Semaphore, counter: list[int], total: int) -> None:
        super().__init__()
        self.done = done
        self.counter = counter
        self.total = total

    def on_receive(self, message: Any) -> Any:
        counter = self.counter
        with _pykka_lock:
            counter[0] += 1
            finished = counter[0] == self.total
        if finished:
            self.done.release()


_pykka_lock = threading.Lock()


def pykka_throughput(actors: int, messages: int) -> float:
    done = threading.Semaphore(0)
    counter = [0]
    refs = [_PykkaCounter.start(done, counter, messages) for _ in range(actors)]
    start = time.perf_counter()
    for i in range(messages):
        refs[i % actors].tell(i)
    done.acquire()
    elapsed = time.perf_counter() - start
    pykka.ActorRegistry.stop_all(block=True)
    return messages / elapsed


# ---------------------------------------------------------------------- driver


def _pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (sched_setaffinity unavailable)"


def _timed(label: str, fn: Callable[[], Any], quiet: bool) -> Any:
    if not quiet:
        print(f"  running {label} ...", file=sys.stderr, flush=True)
    return fn()


def measure(quick: bool, quiet: bool = False) -> dict[str, Any]:
    messages = 200_000 if quick else 1_000_000
    pykka_messages = (
        {100: 50_000, 2_000: 20_000, 10_000: 20_000}
        if quick
        else {
            100: 300_000,
            2_000: 100_000,
            10_000: 60_000,
        }
    )
    big = 100_000
    pinned = _pin_one_core()
    result: dict[str, Any] = {
        "quick": quick,
        "messages": messages,
        "pinning": pinned,
        "python": sys.version.split()[0],
        "tell_msgs_per_s": {},
        "baseline_msgs_per_s": {},
        "pykka_tell_msgs_per_s": {},
        "pykka_messages": {str(n): m for n, m in pykka_messages.items()},
    }
    for n in (100, 10_000, 100_000):
        result["tell_msgs_per_s"][str(n)] = _timed(
            f"callboard tell N={n}", functools.partial(run_loop, tell_throughput(n, messages)), quiet
        )
        result["baseline_msgs_per_s"][str(n)] = _timed(
            f"asyncio baseline N={n}", functools.partial(run_loop, baseline_throughput(n, messages)), quiet
        )
    for n, m in pykka_messages.items():
        result["pykka_tell_msgs_per_s"][str(n)] = _timed(
            f"pykka tell N={n}", functools.partial(pykka_throughput, n, m), quiet
        )
    p50, p99 = _timed("ask latency", lambda: run_loop(ask_latency(20_000 if quick else 100_000)), quiet)
    result["ask_p50_us"] = p50
    result["ask_p99_us"] = p99
    spawn_s, stop_s = _timed("spawn+stop 100k", lambda: run_loop(spawn_and_stop(big)), quiet)
    result["spawn_100k_seconds"] = spawn_s
    result["stop_100k_seconds"] = stop_s
    result["spawn_stop_per_s"] = big / (spawn_s + stop_s)
    result["bytes_per_idle_actor"] = _timed("memory per idle actor", lambda: run_loop(idle_bytes(big)), quiet)
    tell, base, pyk = (
        result["tell_msgs_per_s"],
        result["baseline_msgs_per_s"],
        result["pykka_tell_msgs_per_s"],
    )
    result["ratio_vs_baseline"] = {n: tell[n] / base[n] for n in tell}
    result["ratio_vs_pykka_10000"] = tell["10000"] / pyk["10000"]
    result["targets"] = {
        "tell_10k_ge_400k": tell["10000"] >= 400_000,
        "ge_50x_pykka_at_10k": result["ratio_vs_pykka_10000"] >= 50,
        "within_2x_of_baseline": all(r >= 0.5 for r in result["ratio_vs_baseline"].values()),
        "ask_p99_le_200us": p99 <= 200,
        "idle_actor_le_2KiB": result["bytes_per_idle_actor"] <= 2048,
        "spawn_100k_lt_2s": spawn_s < 2.0,
    }
    return result


def render(result: dict[str, Any]) -> str:
    tell, base, pyk = (
        result["tell_msgs_per_s"],
        result["baseline_msgs_per_s"],
        result["pykka_tell_msgs_per_s"],
    )
    lines = [
        f"callboard actor benchmark ({result['pinning']}, Python {result['python']}, "
        f"{result['messages']:,} messages per tell run)",
        "",
        f"{'tell throughput':<28}{'callboard':>14}{'asyncio floor':>16}{'ratio':>8}",
    ]
    for n in tell:
        lines.append(f"  N={int(n):<24,}{tell[n]:>12,.0f}/s{base[n]:>14,.0f}/s{tell[n] / base[n]:>8.2f}")
    lines.append("")
    lines.append(f"{'pykka ThreadingActor':<28}{'msgs/s':>14}{'messages':>16}")
    for n in pyk:
        lines.append(f"  N={int(n):<24,}{pyk[n]:>12,.0f}/s{result['pykka_messages'][n]:>16,}")
    lines += [
        "",
        f"callboard / pykka at N=10,000:   {result['ratio_vs_pykka_10000']:.1f}x",
        f"ask round trip, unloaded:        p50 {result['ask_p50_us']:.1f} us   "
        f"p99 {result['ask_p99_us']:.1f} us",
        f"spawn 100k actors:               {result['spawn_100k_seconds']:.2f} s "
        f"(stop: {result['stop_100k_seconds']:.2f} s; {result['spawn_stop_per_s']:,.0f} spawn+stop/s)",
        f"memory per idle actor:           {result['bytes_per_idle_actor']:,.0f} bytes (tracemalloc)",
        "",
        verdicts("targets", result["targets"], "met", "MISSED"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = report_parser("callboard bench actors", __doc__, "smaller runs (under 30 s)").parse_args(argv)
    print_report(measure(args.quick, quiet=args.json), args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
