"""``callboard bench compare``: trees from folders or git revisions, each engine run from its own
tree (never from this install), figures per tree and their ratio to the first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from callboard.bench.compare import _BOOT, unpack

ROOT = Path(__file__).resolve().parents[2]
COMPARE = [sys.executable, "-m", "callboard.cli", "bench", "compare"]


def test_unpack_a_revision_a_folder_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    trees = tmp_path / "trees"
    trees.mkdir()
    tree = unpack("HEAD", trees)
    assert (tree / "callboard" / "__init__.py").exists()
    assert (tree / "callboard" / "engine").is_symlink()  # the rooms come as they are in git
    assert unpack(str(ROOT), trees) == ROOT
    with pytest.raises(SystemExit, match="neither a folder nor a git revision"):
        unpack("no-such-revision-xyz", trees)
    with pytest.raises(SystemExit, match=r"no callboard/__init__\.py"):
        unpack(str(tmp_path), trees)
    # the engine runs from the tree it is given: a copy that says so
    copy = "def main():\n    print('from the copy')\n    return 0\n"
    (tree / "callboard" / "cli.py").write_text(copy)
    ran = subprocess.run(
        [sys.executable, "-c", _BOOT, str(tree)], capture_output=True, text=True, timeout=60, check=True
    )
    assert ran.stdout.strip() == "from the copy"


@pytest.mark.timeout(300)
def test_compare_two_trees_side_by_side() -> None:
    ran = subprocess.run(
        [*COMPARE, "HEAD", str(ROOT), "--rounds", "1", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=280,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]
    report = orjson.loads(ran.stdout)
    assert report["trees"] == ["HEAD", str(ROOT)]
    for source in report["trees"]:
        assert set(report["medians"][source]) == {"S=1000", "paced 5000/s", "S=1"}
        for figures in report["medians"][source].values():
            assert figures["cpu_us_per_event"] > 0 and figures["handled_per_s"] > 0
    assert report["cpu_ratio_to_first"]["HEAD"] == {"S=1000": 1.0, "paced 5000/s": 1.0, "S=1": 1.0}
