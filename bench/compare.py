"""Engine CPU per event of several source trees, side by side.

A change to the hot path is worth a few percent at a time, less than what a
shared machine does to one run's throughput. So each tree (a git revision of
this repository, unpacked with ``git archive``, or a folder holding a callboard
source tree) runs its own engine on the ``bench e2e`` fleet, pinned to one core,
and the trees take turns, round after round, under the same load from this
process on the other core: 1,000 chats x 10 messages as fast as acks allow,
1,000 x 5 paced at 5,000/s, and one chat x 2,000. The figure to read is the
engine's CPU time per event (every thread), as a median over the rounds and as
a ratio to the first tree; throughput and ack p99 are printed too.

    callboard bench compare REV_OR_DIR [REV_OR_DIR ...] [--rounds 3] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from callboard.bench.e2e import FLEET, Load, drive, timed_load
from callboard.bench.harness import free_port, narrator, pin, print_report, process, split_cpus, wait_ready
from callboard.engine.loop import run as run_loop

#: the loads every tree gets, in this order, each round: (name, sessions, messages each, rate)
LOADS = (("S=1000", 1000, 10, 0.0), ("paced 5000/s", 1000, 5, 5000.0), ("S=1", 1, 2000, 0.0))
WARMUP = Load(sessions=1000, messages=2, connections=50)


def loads(quick: bool) -> dict[str, Load]:
    """The loads, a fifth as many messages with ``quick``."""
    scale = 0.2 if quick else 1.0
    return {
        name: Load(
            sessions=sessions,
            messages=max(1, int(messages * scale)),
            connections=min(sessions, 50),
            rate=rate,
        )
        for name, sessions, messages, rate in LOADS
    }


#: runs ``callboard run`` from the tree given first, not from this install (an editable
#: install's import hook would otherwise win over ``sys.path``), and refuses to run another
_BOOT = """
import sys
tree = sys.argv.pop(1)
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
sys.path.insert(0, tree)
import callboard
if not callboard.__file__.startswith(tree):
    sys.exit(f"callboard came from {callboard.__file__}, not from {tree}")
from callboard.cli import main
sys.exit(main())
"""


def unpack(source: str, into: Path) -> Path:
    """A folder holding the tree ``source`` names: the folder itself, or a revision unpacked."""
    folder = Path(source)
    if folder.is_dir():
        if not (folder / "callboard" / "__init__.py").exists():
            raise SystemExit(f"{source}: no callboard/__init__.py in this folder")
        return folder.resolve()
    target = into / f"tree{len(list(into.iterdir()))}"
    target.mkdir()
    archive = subprocess.run(["git", "archive", source], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"{source}: neither a folder nor a git revision ({archive.stderr.decode().strip()})")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def one_round(tree: Path, cpu: int | None, tmp: Path, quick: bool) -> dict[str, dict[str, float]]:
    """Every load through a fresh engine of ``tree``: CPU µs/event, handled/s, ack p99."""
    port = free_port()
    config = tmp / f"fleet-{port}.yaml"
    config.write_text(FLEET.format(journal=tmp / f"journal-{port}.sqlite3", port=port, window="0s"))
    argv = [sys.executable, "-c", _BOOT, str(tree), "--log-level", "WARNING", "run", str(config)]
    figures: dict[str, dict[str, float]] = {}
    with process(argv, cpu) as engine:
        run_loop(wait_ready(f"http://127.0.0.1:{port}/readyz", engine))
        url = f"ws://127.0.0.1:{port}/web/bench/ws"
        run_loop(drive(url, WARMUP, 0.0, tag="warm-"))
        for name, load in loads(quick).items():
            result = timed_load(engine.pid, drive(url, load, 0.0, tag=f"{name.replace(' ', '')}-"))
            if result.errors or result.out_of_order:
                raise SystemExit(f"{tree} {name}: {result.errors} errors, {result.out_of_order} out of order")
            figures[name] = {
                "cpu_us_per_event": result.cpu_us_per_event,
                "handled_per_s": result.handled_per_s,
                "ack_p99_ms": result.ack_p99_ms,
            }
    return figures


def measure(sources: list[str], rounds: int, quick: bool, quiet: bool) -> dict[str, Any]:
    say = narrator(quiet)
    engine_cpu, load_cpu = split_cpus()
    pin(load_cpu)
    runs: dict[str, list[dict[str, dict[str, float]]]] = {source: [] for source in sources}
    with tempfile.TemporaryDirectory(prefix="callboard-compare-") as tmp:
        trees_dir = Path(tmp) / "trees"
        trees_dir.mkdir()
        trees = {source: unpack(source, trees_dir) for source in sources}
        for number in range(1, rounds + 1):
            for source, tree in trees.items():
                say(f"round {number} of {rounds}: {source}")
                runs[source].append(one_round(tree, engine_cpu, Path(tmp), quick))
    medians = {
        source: {
            name: {key: statistics.median(run[name][key] for run in per_round) for key in per_round[0][name]}
            for name in per_round[0]
        }
        for source, per_round in runs.items()
    }
    first = medians[sources[0]]
    return {
        "quick": quick,
        "rounds": rounds,
        "engine_cpu": engine_cpu,
        "load_cpu": load_cpu,
        "trees": sources,
        "runs": runs,
        "medians": medians,
        "cpu_ratio_to_first": {
            source: {
                name: figures[name]["cpu_us_per_event"] / first[name]["cpu_us_per_event"] for name in figures
            }
            for source, figures in medians.items()
        },
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"engine CPU per event, medians of {report['rounds']} round(s), trees in turn (engine on CPU "
        f"{report['engine_cpu']}, load on CPU {report['load_cpu']}); ratio to {report['trees'][0]}",
        "",
        f"{'tree':<24}{'load':<15}{'CPU us/ev':>10}{'ratio':>8}{'handled/s':>11}{'ack p99 ms':>12}",
    ]
    for source in report["trees"]:
        for name, figures in report["medians"][source].items():
            ratio = report["cpu_ratio_to_first"][source][name]
            lines.append(
                f"{source[:23]:<24}{name:<15}{figures['cpu_us_per_event']:>10.0f}{ratio:>8.2f}"
                f"{figures['handled_per_s']:>11,.0f}{figures['ack_p99_ms']:>12.1f}"
            )
    lines.append("")
    lines.append("each round's figures are in --json ('runs'); CPU per event is the one to compare")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench compare", description=__doc__)
    parser.add_argument("trees", nargs="+", metavar="REV_OR_DIR", help="git revisions or source folders")
    parser.add_argument("--rounds", type=int, default=3, help="turns each tree takes (default 3)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the messages per load")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print_report(measure(args.trees, args.rounds, args.quick, args.json), args.json, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
