"""`--report DIR`: the benchmark's JSON, a Markdown summary with its tables, and PNG plots found
by the figures' shape (throughput against scale, latency percentiles, ratios)."""

from __future__ import annotations

from pathlib import Path

import orjson

from callboard.bench import report

RESULT = {
    "quick": True,
    "scenarios": {
        "S=1": {"handled_per_s": 900.0, "ack_p50_ms": 2.0, "ack_p99_ms": 9.0},
        "S=1000": {"handled_per_s": 5200.0, "ack_p50_ms": 3.0, "ack_p99_ms": 15.0},
        "paced 5000/s": {"handled_per_s": 4990.0, "ack_p50_ms": 1.0, "ack_p99_ms": 4.0},
    },
    "tell_msgs_per_s": {"100": 1.0e6, "10000": 1.4e6},
    "ratio_handled_vs_baseline": {"S=1": 0.1, "S=1000": 0.3},
    "targets": {"no_errors": True},
}


def test_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    written = report.write("e2e", RESULT, tmp_path / "out")
    names = {path.name for path in written}
    assert {"e2e.json", "e2e.md"} <= names
    assert {
        "e2e-scenarios-throughput.png",
        "e2e-scenarios-latency.png",
        "e2e-throughput-vs-scale.png",
        "e2e-ratios.png",
    } <= names
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert orjson.loads((tmp_path / "out" / "e2e.json").read_bytes()) == RESULT
    summary = (tmp_path / "out" / "e2e.md").read_text()
    assert "| S=1000 | 3 | 15 | 5,200 |" in summary
    assert "| ratio_handled_vs_baseline.S=1000 | 0.3 |" in summary
    assert "![e2e-ratios.png](e2e-ratios.png)" in summary


def test_series_take_only_rows_that_name_a_scale() -> None:
    series = report.throughput_series(RESULT)
    assert series["scenarios.handled_per_s"] == {1: 900.0, 1000: 5200.0}
    assert series["tell_msgs_per_s"] == {100: 1.0e6, 10000: 1.4e6}
