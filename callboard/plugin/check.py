"""``python -m callboard.plugin.check``: validate plugins' config values with their own models.

The host runs this when it reads a fleet file, so a bad value is reported with
the file, line and key before anything starts, while plugin code still runs in
a process of its own. Input (stdin): the plugins as the runner receives them;
output (stdout): one ``{name, error, problems: [{loc, msg}]}`` per plugin that
cannot load, empty when all can.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from callboard.plugin.runner import LoadError, load_class, validate_config


def check(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    failures: list[dict[str, Any]] = []
    for spec in specs:
        try:
            validate_config(load_class(spec), spec.get("config") or {})
        except LoadError as exc:
            failures.append({"name": spec["name"], "error": str(exc), "problems": exc.problems})
        except Exception as exc:
            failures.append(
                {"name": spec["name"], "error": f"cannot load: {type(exc).__name__}: {exc}", "problems": []}
            )
    return failures


def main() -> int:
    sys.stdout.buffer.write(orjson.dumps(check(orjson.loads(sys.stdin.buffer.read()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
