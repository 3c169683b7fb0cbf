"""The in-sandbox file helper's logic, run on a temporary directory (no containers).

The same operations are exercised inside real containers in test_files_real.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callboard.sandbox import workspace_helper as helper

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(helper, "WORKSPACE", str(tmp_path))
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "main.py").write_text("import pkg\nprint('hi')\n")
    (tmp_path / "src" / "pkg" / "util.py").write_text("def f():\n    return 42\n")
    (tmp_path / "README.md").write_text("# title\nhi there\n")
    (tmp_path / "blob.bin").write_bytes(b"hi\x00\x01")
    return tmp_path


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.py", "main.py", True),
        ("*.py", "src/main.py", False),
        ("**/*.py", "main.py", True),
        ("**/*.py", "src/pkg/util.py", True),
        ("src/**", "src/pkg/util.py", True),
        ("src/*/util.py", "src/pkg/util.py", True),
        ("src/*/util.py", "src/util.py", False),
        ("?.md", "a.md", True),
        ("[!a]*.md", "a.md", False),
        ("[ab].md", "b.md", True),
        ("[unclosed", "[unclosed", True),
        ("a.b", "aXb", False),
    ],
)
def test_glob_patterns(pattern: str, path: str, matches: bool) -> None:
    assert bool(helper.glob_regex(pattern).match(path)) is matches


def test_glob_lists_files_relative_to_the_workspace(workspace: Path) -> None:
    reply = helper.op_glob({"path": str(workspace), "pattern": "**/*.py", "limit": 10}, b"")
    assert reply == {"paths": ["src/main.py", "src/pkg/util.py"], "truncated": False}
    limited = helper.op_glob({"path": str(workspace / "src"), "pattern": "**", "limit": 1}, b"")
    assert limited == {"paths": ["src/main.py"], "truncated": True}


def test_grep_skips_binaries_and_honours_glob_and_case(workspace: Path) -> None:
    request: dict[str, Any] = {
        "path": str(workspace),
        "pattern": "HI",
        "glob": None,
        "ignore_case": True,
        "limit": 10,
        "max_file": 1 << 20,
    }
    reply = helper.op_grep(request, b"")
    assert reply["matches"] == [["README.md", 2, "hi there"], ["src/main.py", 2, "print('hi')"]]
    assert reply["files_searched"] == 3  # blob.bin is skipped as binary
    only_py = helper.op_grep({**request, "glob": "**/*.py"}, b"")
    assert [m[0] for m in only_py["matches"]] == ["src/main.py"]
    capped = helper.op_grep({**request, "limit": 1}, b"")
    assert capped["truncated"] is True and len(capped["matches"]) == 1


def test_edit_needs_exactly_one_match_unless_replace_all(workspace: Path) -> None:
    target = workspace / "twice.txt"
    target.write_text("a-a-b")
    request = {"path": str(target), "limit": 1000}
    with pytest.raises(helper.Fail) as excinfo:
        helper.op_edit(request, json.dumps({"old": "a", "new": "c", "replace_all": False}).encode())
    assert excinfo.value.code == "ambiguous" and "2 times" in str(excinfo.value)
    with pytest.raises(helper.Fail) as excinfo:
        helper.op_edit(request, json.dumps({"old": "zz", "new": "c", "replace_all": False}).encode())
    assert excinfo.value.code == "no_match"
    assert helper.op_edit(request, json.dumps({"old": "a", "new": "c", "replace_all": True}).encode()) == {
        "replacements": 2
    }
    assert target.read_text() == "c-c-b"


def test_read_write_list_delete(workspace: Path) -> None:
    path = str(workspace / "new" / "deep" / "f.txt")
    assert helper.op_write({"path": path, "limit": 100}, b"12345") == {"size": 5}
    with pytest.raises(helper.Fail) as excinfo:
        helper.op_write({"path": path, "limit": 3}, b"12345")
    assert excinfo.value.code == "too_large"
    read = helper.op_read({"path": path, "limit": 3}, b"")
    assert read["size"] == 5 and read["truncated"] is True
    listing = helper.op_list({"path": str(workspace / "new"), "recursive": True, "limit": 10}, b"")
    assert listing["entries"] == [
        ["new/deep", "dir", listing["entries"][0][2]],
        ["new/deep/f.txt", "file", 5],
    ]
    with pytest.raises(helper.Fail) as excinfo:
        helper.op_delete({"path": str(workspace / "new"), "recursive": False}, b"")
    assert excinfo.value.code == "not_empty"
    helper.op_delete({"path": str(workspace / "new"), "recursive": True}, b"")
    with pytest.raises(helper.Fail) as excinfo:
        helper.op_read({"path": path, "limit": 3}, b"")
    assert excinfo.value.code == "not_found"
    with pytest.raises(helper.Fail) as excinfo:
        helper.op_delete({"path": str(workspace), "recursive": True}, b"")
    assert excinfo.value.code == "bad_path"


def test_the_script_speaks_json_on_stdin_and_stdout(workspace: Path) -> None:
    source = Path(helper.__file__).read_text()
    request = json.dumps({"op": "read", "path": "/nonexistent/x", "limit": 10}).encode() + b"\n"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", source], input=request, capture_output=True, check=True
    )
    reply = json.loads(done.stdout)
    assert reply["ok"] is False and reply["code"] == "not_found"
