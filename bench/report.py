"""``callboard bench SCENARIO ... --report DIR``: the benchmark's JSON, a Markdown summary and
PNG plots, written side by side so a run can be kept, compared and pasted into an issue.

Every benchmark prints one JSON object with ``--json``; this module reads that object and
needs nothing else from it. Groups of figures are found by shape: a mapping of names (``S=1``,
``S=1000``, ``socket``...) to mappings of numbers becomes a table and, by field suffix, plots
of throughput (``*_per_s``), latency percentiles (``*_p50_ms``, ``*_p99_ms``...) and ratios
(``ratio*``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import orjson

_PERCENTILE = re.compile(r"^(?P<what>.*?)_?p(?P<p>\d+)_ms$")
#: a row or key that names a scale: "1000", "S=1000", "sessions=10000"
_SCALE = re.compile(r"^(?:[A-Za-z_]+=)?(?P<n>\d+)$")
Number = int | float


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def groups(result: dict[str, Any], prefix: str = "") -> dict[str, dict[str, dict[str, Number]]]:
    """Every mapping of row name -> {field: number} in ``result``, by dotted path."""
    found: dict[str, dict[str, dict[str, Number]]] = {}
    for key, value in result.items():
        if not isinstance(value, dict):
            continue
        path = f"{prefix}{key}"
        rows = {
            name: {field: number for field, number in row.items() if _is_number(number)}
            for name, row in value.items()
            if isinstance(row, dict)
        }
        rows = {name: row for name, row in rows.items() if row}
        if rows and len(rows) == len(value):
            found[path] = rows
        else:
            found.update(groups(value, f"{path}."))
    return found


def _scale(key: str) -> int | None:
    match = _SCALE.match(key)
    return int(match.group("n")) if match else None


def throughput_series(result: dict[str, Any]) -> dict[str, dict[int, Number]]:
    """Throughput against scale (sessions, actors...): mappings like ``{"1000": 5200.0}`` whose
    name says per second, and the ``*_per_s`` fields of groups keyed like ``S=1000``."""
    found: dict[str, dict[int, Number]] = {}
    for key, value in result.items():
        if not isinstance(value, dict) or "per_s" not in key:
            continue
        points = {_scale(k): v for k, v in value.items() if _is_number(v)}
        if points and None not in points and len(points) == len(value):
            found[key] = {k: v for k, v in points.items() if k is not None}
    for path, rows in groups(result).items():
        scales = {name: n for name, n in ((name, _scale(name)) for name in rows) if n is not None}
        if len(scales) < 2:
            continue
        for field in sorted({f for name in scales for f in rows[name] if f.endswith("_per_s")}):
            found[f"{path}.{field}"] = {
                n: rows[name][field] for name, n in scales.items() if field in rows[name]
            }
    return found


def scalars(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Top-level figures that are not part of a group (ratios, targets, settings)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            if all(_is_number(v) or isinstance(v, bool | str) for v in value.values()):
                out.update({f"{path}.{k}": v for k, v in value.items()})
        elif _is_number(value) or isinstance(value, bool | str):
            out[path] = value
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def markdown(name: str, result: dict[str, Any], plots: list[str]) -> str:
    lines = [f"# callboard bench {name}", ""]
    for path, rows in groups(result).items():
        fields = sorted({field for row in rows.values() for field in row})
        lines += [f"## {path}", "", "| | " + " | ".join(fields) + " |", "|---" * (len(fields) + 1) + "|"]
        for row_name, row in rows.items():
            lines.append(f"| {row_name} | " + " | ".join(_fmt(row.get(f, "")) for f in fields) + " |")
        lines.append("")
    flat = scalars(result)
    if flat:
        lines += ["## Figures", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in flat.items()]
        lines.append("")
    lines += [f"![{plot}]({plot})" for plot in plots]
    return "\n".join(lines) + "\n"


def plot(name: str, result: dict[str, Any], directory: Path) -> list[str]:
    """PNG plots of each group's throughput, latency percentiles and ratios; file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(figure: Any, stem: str) -> None:
        file = f"{name}-{stem}.png".replace("/", "_").replace("=", "")
        figure.tight_layout()
        figure.savefig(directory / file, dpi=110)
        plt.close(figure)
        written.append(file)

    for path, rows in groups(result).items():
        names = list(rows)
        throughput = sorted({f for row in rows.values() for f in row if f.endswith("_per_s")})
        if throughput:
            figure, axis = plt.subplots(figsize=(7, 3.6))
            width = 0.8 / len(throughput)
            for index, field in enumerate(throughput):
                xs = [i + index * width for i in range(len(names))]
                axis.bar(xs, [rows[n].get(field, 0) for n in names], width, label=field)
            axis.set_xticks([i + width * (len(throughput) - 1) / 2 for i in range(len(names))], names)
            axis.set_ylabel("per second")
            axis.tick_params(axis="x", labelrotation=20)
            axis.set_title(f"{name}: {path} throughput")
            axis.legend(fontsize=8)
            save(figure, f"{path}-throughput")
        latency = [f for f in sorted({f for row in rows.values() for f in row}) if _PERCENTILE.match(f)]
        if latency:
            figure, axis = plt.subplots(figsize=(7, 3.6))
            for field in latency:
                axis.plot(names, [rows[n].get(field, math.nan) for n in names], marker="o", label=field)
            axis.set_yscale("log")
            axis.set_ylabel("ms")
            axis.tick_params(axis="x", labelrotation=20)
            axis.set_title(f"{name}: {path} latency percentiles")
            axis.legend(fontsize=8)
            save(figure, f"{path}-latency")
    lines = throughput_series(result)
    if lines:
        figure, axis = plt.subplots(figsize=(7, 3.8))
        for label, points in lines.items():
            at = sorted(points)
            axis.plot(at, [points[x] for x in at], marker="o", label=label)
        axis.set_xscale("log")
        axis.set_xlabel("scale (sessions, actors)")
        axis.set_ylabel("per second")
        axis.set_title(f"{name}: throughput against scale")
        axis.legend(fontsize=7)
        save(figure, "throughput-vs-scale")
    ratios = {k: v for k, v in scalars(result).items() if "ratio" in k and _is_number(v)}
    if ratios:
        figure, axis = plt.subplots(figsize=(7, 0.5 + 0.4 * len(ratios)))
        axis.barh(list(ratios), list(ratios.values()))
        axis.axvline(1.0, color="grey", linewidth=0.8)
        axis.set_title(f"{name}: ratio to the baseline measured in the same run")
        save(figure, "ratios")
    return written


def write(name: str, result: dict[str, Any], directory: Path) -> list[Path]:
    """The JSON, the plots and the Markdown that shows them, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    plots = plot(name, result, directory)
    (directory / f"{name}.md").write_text(markdown(name, result, plots))
    return [directory / f"{name}.json", directory / f"{name}.md", *(directory / p for p in plots)]
