"""``callboard`` command line: run, validate, schema, bench, retry, sandbox."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

import orjson

from callboard import logs

BENCHMARKS: dict[str, str] = {
    "actors": "callboard.bench.actors",
    "agent": "callboard.bench.agent",
    "chaos": "callboard.bench.chaos",
    "compare": "callboard.bench.compare",
    "cluster": "callboard.bench.cluster",
    "e2e": "callboard.bench.e2e",
    "flood": "callboard.bench.flood",
    "journal": "callboard.bench.journal",
    "plugins": "callboard.bench.plugins",
    "profile": "callboard.bench.profile",
    "sandbox": "callboard.bench.sandbox",
    "telegram": "callboard.bench.telegram",
    "lark": "callboard.bench.lark",
    "slack": "callboard.bench.slack",
}


def _delegate(module_name: str, rest: list[str]) -> int:
    """Hand the remaining arguments to ``module_name.main`` (imported lazily)."""
    module = importlib.import_module(module_name)
    main: Callable[[list[str]], int] = module.main
    return main(rest)


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    if args.report is None:
        return _delegate(BENCHMARKS[args.scenario], rest)
    import contextlib
    import io
    from pathlib import Path

    from callboard.bench import report

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = _delegate(BENCHMARKS[args.scenario], [*rest, "--json"] if "--json" not in rest else rest)
    if status != 0:
        sys.stdout.write(printed.getvalue())
        return status
    for path in report.write(args.scenario, orjson.loads(printed.getvalue()), Path(args.report)):
        print(path)
    return 0


def _sandbox(args: argparse.Namespace, rest: list[str]) -> int:
    return _delegate("callboard.sandbox.cli", rest)


def _slack(args: argparse.Namespace, rest: list[str]) -> int:
    return _delegate("callboard.adapters.slack.manifest", rest)


def _doctor(args: argparse.Namespace, rest: list[str]) -> int:
    from callboard.doctor import main as doctor

    return doctor([args.file] if args.file else [])


def _validate(args: argparse.Namespace, rest: list[str]) -> int:
    from callboard.actors.config_file import ConfigError, load_fleet

    try:
        config = load_fleet(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    bots = ", ".join(f"{b.id} ({b.adapter.type})" for b in config.bots) or "no bots"
    print(f"{args.file}: OK: fleet {config.name!r}, {bots}")
    return 0


def _schema(args: argparse.Namespace, rest: list[str]) -> int:
    from callboard.actors.config import fleet_model

    schema = fleet_model().model_json_schema()
    sys.stdout.write(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")
    return 0


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    from callboard.actors.config_file import ConfigError
    from callboard.app import serve
    from callboard.engine.loop import run

    try:
        run(serve(args.file))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _admin_of(file: str, token: str | None) -> tuple[str, str | None]:
    """The admin URL of a fleet file, and its token (the configured one, or the
    generated one kept next to the journal) unless one was given."""
    from callboard.actors.admin_auth import token_path
    from callboard.actors.config_file import ConfigError, load_fleet

    try:
        config = load_fleet(file)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    admin = config.engine.admin
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host
    if token is None and admin.token is not None:
        token = admin.token.get_secret_value()
    kept = token_path(config.engine.journal.path)
    if token is None and kept.exists():
        token = kept.read_text().strip()
    return f"http://{host}:{admin.port}", token


def _retry(args: argparse.Namespace, rest: list[str]) -> int:
    """Retry failed runs through the admin API (``/api/bots/{id}/failed``)."""
    import urllib.error
    import urllib.request

    admin, token = args.admin, args.token or os.environ.get("CALLBOARD_ADMIN_TOKEN")
    if args.config:
        admin, token = _admin_of(args.config, token)
    base = f"{admin.rstrip('/')}/api/bots/{args.bot}/failed"
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(method: str, url: str) -> tuple[int, object]:
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:
            raise SystemExit(f"cannot reach {admin}: {exc}") from None

    if args.run is not None:
        targets = [(args.run, args.rule)]
    else:
        status, listed = call("GET", base)
        if status != 200 or not isinstance(listed, list):
            print(f"listing failed runs: HTTP {status}: {listed}", file=sys.stderr)
            return 1
        targets = [(item["run_id"], item["rule"]) for item in listed]
    failures = 0
    for run_id, rule in targets:
        status, answer = call("POST", f"{base}/{run_id}/{rule}/retry")
        print(f"run {run_id} rule {rule}: {'retrying' if status == 202 else f'HTTP {status}: {answer}'}")
        failures += status != 202
    if not targets:
        print(f"bot {args.bot!r} has no failed runs")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callboard", description="Run a fleet of chat bots.")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the fleet in FILE (SIGHUP reloads it)")
    run.add_argument("file")
    run.set_defaults(func=_run)
    validate = sub.add_parser("validate", help="check FILE and report every problem with its line")
    validate.add_argument("file")
    validate.set_defaults(func=_validate)
    schema = sub.add_parser("schema", help="print the fleet file's JSON Schema")
    schema.set_defaults(func=_schema)
    # add_help=False: "--help" reaches the benchmark's or the sandbox tool's own parser
    bench = sub.add_parser("bench", help="run a benchmark (extra flags pass through)", add_help=False)
    bench.add_argument("scenario", choices=sorted(BENCHMARKS))
    bench.add_argument(
        "--report", metavar="DIR", help="write the JSON, a Markdown summary and PNG plots into DIR"
    )
    bench.set_defaults(func=_bench)
    retry = sub.add_parser("retry", help="retry a bot's failed runs (all, or one RUN RULE)")
    retry.add_argument("bot")
    retry.add_argument("run", nargs="?", type=int, help="run id (from /api/bots/BOT/failed)")
    retry.add_argument("rule", nargs="?", type=int, default=0, help="the rule's place in the bot's handlers")
    retry.add_argument("--admin", default="http://127.0.0.1:8765", help="the engine's admin URL")
    retry.add_argument("--token", default=None, help="admin bearer token (default: $CALLBOARD_ADMIN_TOKEN)")
    retry.add_argument("--config", default=None, help="a fleet file: its admin address and token")
    retry.set_defaults(func=_retry)
    sandbox = sub.add_parser("sandbox", help="sandbox: build-image, status, sweep, prune", add_help=False)
    sandbox.set_defaults(func=_sandbox)
    slack = sub.add_parser("slack", help="Slack tools: manifest FILE (the app manifest)", add_help=False)
    slack.set_defaults(func=_slack)
    doctor = sub.add_parser("doctor", help="check this machine and FILE; say what is wrong and how to fix it")
    doctor.add_argument("file", nargs="?")
    doctor.set_defaults(func=_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logs.setup(str(args.log_level))
    if rest and args.command not in ("bench", "sandbox", "slack"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    result: int = args.func(args, rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
