"""Plugin benchmark: events through an out-of-process plugin listener, as a
ratio to the in-process echo pipeline, measured side by side in one run.

One engine process (pinned to one core; its plugin runner inherits the pin)
serves two web bots: ``pipe`` answers with the pipeline's echo stage, ``plug``
with the ``bench-echo`` plugin in its runner process, so every event crosses
the Unix socket twice (the event, the reply) plus the answers. The load (this
process, on the other core) alternates between the two bots, three rounds
each; the medians are reported. The journal runs with synchronous=NORMAL so
fsync jitter does not drown the difference being measured. Added latency is read from the paced
scenario (nothing queues there); the bursts give the throughput ratio.

With ``--container`` a third bot, ``box``, is served by the same plugin (a copy named
``bench-echo-box``) with ``isolation: container``: its runner in a sandbox container,
which the engine's CPU pin does not reach (it gets the default profile's one CPU).
The engine is ``--engine-url``, else ``DOCKER_HOST`` or the usual sockets, else a
private Podman service; the sandbox image must exist (``callboard sandbox build-image``).

    callboard bench plugins [--quick] [--json] [--container [--engine-url URL] [--image IMAGE]]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from callboard.bench.e2e import Load, drive
from callboard.bench.harness import (
    engine_argv,
    free_port,
    narrator,
    pin,
    print_report,
    process,
    report_parser,
    split_cpus,
    wait_ready,
)
from callboard.bench.sandbox import _engine
from callboard.engine.loop import run as run_loop
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.image import image_id
from callboard.sandbox.podman_service import PodmanUnavailable

# The load sends on acks, not replies: the backlog bounds and rate limits are lifted (as in
# bench e2e), so both bots see the same unrefused load.
BOT = """
  - id: {id}
    adapter:
      type: web
      max_in_flight: 5000
      send_queue: 100000
      rate_per_connection: {{per_second: 1000000, burst: 1000000}}
      rate_per_user: {{per_second: 1000000, burst: 1000000}}
    session:
      idle_ttl: 1h
      max_pending: 100000000
      debounce: {{window: 0}}
      handler_timeout: 5m
    handlers:
      - event_type: message.received
        handler_type: {handler}
"""

HEAD = """
name: bench
engine:
  journal: {{path: {journal}, synchronous: NORMAL}}
  admin: {{port: {port}}}
  backlog: {{max_events: 100000000}}
plugin_runtime:
  health_interval: 5s
  watch: false
plugins:
  - package: callboard.bench.plugin_echo
bots:"""


def fleet(journal: Path, port: int, box: tuple[Path, str, str] | None = None) -> str:
    """One bot answering through the pipeline's echo stage, one through the plugin, and
    with ``box`` (plugin folder, engine URL, image) one through the plugin in a container."""
    text = HEAD.format(journal=journal, port=port)
    if box is not None:  # HEAD ends with its plugins and "bots:"
        folder, url, image = box
        text = text.removesuffix("bots:") + (
            f"  - path: {folder}\n    isolation: container\n"
            f"sandbox: {{engine_url: '{url}', image: '{image}'}}\nbots:"
        )
    text += (
        BOT.format(id="pipe", handler="pipeline")
        + "        handler_config: {stages: [{type: echo}]}\n"
        + BOT.format(id="plug", handler="plugin")
        + "        handler_config: {plugin_filter: [bench-echo]}\n"
    )
    if box is not None:
        text += (
            BOT.format(id="box", handler="plugin")
            + "        handler_config: {plugin_filter: [bench-echo-box]}\n"
        )
    return text


def box_plugin(folder: Path) -> Path:
    """A copy of the bench plugin under another name (names are unique in a fleet)."""
    source = Path(__file__).resolve().parent / "plugin_echo"
    folder.mkdir()
    shutil.copy(source / "plugin.py", folder / "plugin.py")
    manifest = (source / "plugin.yaml").read_text().replace("name: bench-echo", "name: bench-echo-box")
    (folder / "plugin.yaml").write_text(manifest)
    return folder


ROUNDS = 3


def measure(quick: bool, quiet: bool = False, box: tuple[str, str] | None = None) -> dict[str, Any]:
    """With ``box`` (engine URL, image), also the plugin in a container runner."""
    engine_cpu, load_cpu = split_cpus()
    pin(load_cpu)
    scale = 0.25 if quick else 1.0
    scenarios = {
        "paced 50/s (unloaded)": Load(
            sessions=10, messages=max(10, int(60 * scale)), connections=1, rate=50.0
        ),
        "S=1 (one chat, burst)": Load(sessions=1, messages=max(50, int(2000 * scale)), connections=1),
        "S=200 (concurrent chats)": Load(sessions=200, messages=max(2, int(20 * scale)), connections=20),
    }
    bots = ("pipe", "plug", "box") if box is not None else ("pipe", "plug")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {bot: [] for bot in bots} for name in scenarios
    }
    say = narrator(quiet)
    with tempfile.TemporaryDirectory(prefix="callboard-bench-plugins-") as tmp:
        port = free_port()
        config = Path(tmp) / "fleet.yaml"
        boxed = None if box is None else (box_plugin(Path(tmp) / "box_echo"), *box)
        config.write_text(fleet(Path(tmp) / "journal.sqlite3", port, boxed))
        with process(engine_argv(config), engine_cpu) as engine:
            run_loop(wait_ready(f"http://127.0.0.1:{port}/readyz", engine))
            for name, load in scenarios.items():
                for round_ in range(ROUNDS):
                    for bot in bots:
                        say(f"{name}: {bot}, round {round_ + 1} of {ROUNDS}")
                        url = f"ws://127.0.0.1:{port}/web/{bot}/ws"
                        result = run_loop(drive(url, load, 0.0, tag=f"{bot}{round_}{name[:5]}-"))
                        results[name][bot].append(vars(result))
    report: dict[str, Any] = {
        "quick": quick,
        "engine_cpu": engine_cpu,
        "load_cpu": load_cpu,
        "rounds": ROUNDS,
        "container": box is not None,
        "scenarios": {},
    }
    for name, by_bot in results.items():
        entry: dict[str, Any] = {"events": scenarios[name].sessions * scenarios[name].messages}
        for bot, runs in by_bot.items():
            entry[bot] = {
                key: statistics.median(r[key] for r in runs)
                for key in ("handled_per_s", "reply_p50_ms", "reply_p99_ms")
            }
            entry[bot]["errors"] = sum(r["errors"] for r in runs)
            entry[bot]["out_of_order"] = sum(r["out_of_order"] for r in runs)
            entry[bot]["notes"] = [note for r in runs for note in r["notes"]]
        pipe, plug = entry["pipe"], entry["plug"]
        entry["ratio_plugin_vs_pipeline"] = (
            plug["handled_per_s"] / pipe["handled_per_s"] if pipe["handled_per_s"] else 0.0
        )
        entry["added_p50_ms"] = plug["reply_p50_ms"] - pipe["reply_p50_ms"]
        entry["added_p99_ms"] = plug["reply_p99_ms"] - pipe["reply_p99_ms"]
        if box is not None:  # the container runner against the host-process runner
            boxed_bot = entry["box"]
            entry["ratio_container_vs_process"] = (
                boxed_bot["handled_per_s"] / plug["handled_per_s"] if plug["handled_per_s"] else 0.0
            )
            entry["container_added_p50_ms"] = boxed_bot["reply_p50_ms"] - plug["reply_p50_ms"]
            entry["container_added_p99_ms"] = boxed_bot["reply_p99_ms"] - plug["reply_p99_ms"]
        report["scenarios"][name] = entry
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"callboard plugin benchmark (engine and its runner on CPU {report['engine_cpu']}, load on CPU "
        f"{report['load_cpu']}; medians of {report['rounds']} interleaved rounds; journal NORMAL)",
        "",
        f"{'scenario':<26}{'events':>8}{'pipeline/s':>12}{'plugin/s':>10}{'ratio':>7}"
        f"{'pipeline p50/p99 ms':>21}{'plugin p50/p99 ms':>19}{'added p50/p99 ms':>18}",
    ]
    for name, e in report["scenarios"].items():
        pipe, plug = e["pipe"], e["plug"]
        lines.append(
            f"{name:<26}{e['events']:>8,}{pipe['handled_per_s']:>12,.0f}{plug['handled_per_s']:>10,.0f}"
            f"{e['ratio_plugin_vs_pipeline']:>7.2f}"
            f"{pipe['reply_p50_ms']:>12.2f} /{pipe['reply_p99_ms']:>6.2f}"
            f"{plug['reply_p50_ms']:>10.2f} /{plug['reply_p99_ms']:>6.2f}"
            f"{e['added_p50_ms']:>9.2f} /{e['added_p99_ms']:>6.2f}"
        )
        for bot in ("pipe", "plug", "box") if report.get("container") else ("pipe", "plug"):
            for note in e[bot]["notes"]:
                lines.append(f"    {bot}: {note}")
            if e[bot]["errors"] or e[bot]["out_of_order"]:
                lines.append(f"    {bot}: {e[bot]['errors']} errors, {e[bot]['out_of_order']} out of order")
    lines.append("")
    lines.append(
        "ratio: plugin events/s over pipeline events/s; added: plugin reply latency minus pipeline's"
    )
    if report.get("container"):
        lines += [
            "",
            "the same plugin with isolation: container (runner in a sandbox container, not CPU-pinned)",
            f"{'scenario':<26}{'process/s':>11}{'container/s':>13}{'ratio':>7}"
            f"{'container p50/p99 ms':>22}{'added p50/p99 ms':>18}",
        ]
        for name, e in report["scenarios"].items():
            plug, boxed = e["plug"], e["box"]
            lines.append(
                f"{name:<26}{plug['handled_per_s']:>11,.0f}{boxed['handled_per_s']:>13,.0f}"
                f"{e['ratio_container_vs_process']:>7.2f}"
                f"{boxed['reply_p50_ms']:>13.2f} /{boxed['reply_p99_ms']:>6.2f}"
                f"{e['container_added_p50_ms']:>9.2f} /{e['container_added_p99_ms']:>6.2f}"
            )
        lines.append("ratio: container events/s over process events/s; added: container minus process")
    return "\n".join(lines)


@contextmanager
def container_engine(url: str | None, image: str | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """(engine URL, image) for the container runner: the engine ``bench sandbox`` would use."""
    endpoint, service = _engine(url, workdir)
    try:
        settings = SandboxSettings(engine_url=endpoint.url)
        if image:
            settings = settings.model_copy(update={"image": image})
        backend = DockerBackend(endpoint, settings)
        try:
            if image_id(backend.client, settings.image) is None:
                raise SystemExit(f"error: no image {settings.image}: run `callboard sandbox build-image`")
        finally:
            backend.close()
        yield endpoint.url or endpoint.env_url or "", settings.image
    finally:
        if service is not None:
            service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = report_parser("callboard bench plugins", __doc__, "fewer messages per scenario")
    parser.add_argument("--container", action="store_true", help="also the plugin in a container runner")
    parser.add_argument("--engine-url", help="container engine (default: DOCKER_HOST, usual sockets, podman)")
    parser.add_argument("--image", help="sandbox image (default: the configured default)")
    args = parser.parse_args(argv)
    if not args.container:
        print_report(measure(args.quick, quiet=args.json), args.json, render)
        return 0
    with tempfile.TemporaryDirectory(prefix="callboard-bench-engine-") as workdir:
        try:
            with container_engine(args.engine_url, args.image, Path(workdir)) as box:
                print_report(measure(args.quick, quiet=args.json, box=box), args.json, render)
        except PodmanUnavailable as error:
            print(f"error: no container engine: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
