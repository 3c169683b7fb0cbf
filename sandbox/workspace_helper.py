"""The file tools' helper: runs *inside* the sandbox, as the sandbox user.

``sandbox.backend`` executes this file's source as ``python3 -I -S -c SOURCE``.
The first line of stdin is a JSON request ``{"op": ..., ...}``; the rest is the
payload (the content for ``write``). It prints one JSON object: ``{"ok": true,
...}`` or ``{"ok": false, "code": ..., "error": ...}``. Running here rather
than on the host means the kernel enforces the sandbox user's permissions, the
read-only root and the workspace size, and a hostile regular expression burns
the sandbox's CPU under its time limit, not callboard's. Standard library only
(annotations are never evaluated, so any Python 3 in the image runs it).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from typing import Any

WORKSPACE = "/workspace"
TEXT_CUT = 500


class Fail(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _rel(path: str) -> str:
    return os.path.relpath(path, WORKSPACE)


def _os_fail(error: OSError, path: str) -> Fail:
    codes = {
        errno.ENOENT: "not_found",
        errno.EISDIR: "is_directory",
        errno.ENOTDIR: "not_directory",
        errno.EACCES: "permission",
        errno.EPERM: "permission",
        errno.ENOSPC: "no_space",
        errno.EDQUOT: "no_space",
        errno.EROFS: "read_only",
        errno.ENOTEMPTY: "not_empty",
    }
    return Fail(codes.get(error.errno or 0, "io_error"), f"{_rel(path)}: {error.strerror}")


def _read_bytes(path: str, limit: int) -> tuple[bytes, int, bool]:
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise Fail("is_directory", f"{_rel(path)} is a directory")
            data = handle.read(limit + 1)
    except OSError as error:
        raise _os_fail(error, path) from None
    return data[:limit], max(info.st_size, len(data)), len(data) > limit


def _write_bytes(path: str, data: bytes) -> int:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.isdir(path):
            raise Fail("is_directory", f"{_rel(path)} is a directory")
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as error:
        raise _os_fail(error, path) from None
    return len(data)


def op_read(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    data, size, truncated = _read_bytes(request["path"], request["limit"])
    return {"data": base64.b64encode(data).decode(), "size": size, "truncated": truncated}


def op_write(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    if len(payload) > request["limit"]:
        raise Fail("too_large", f"content is {len(payload)} bytes; the limit is {request['limit']}")
    return {"size": _write_bytes(request["path"], payload)}


def op_edit(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    path = request["path"]
    edit = json.loads(payload)
    data, _, truncated = _read_bytes(path, request["limit"])
    if truncated:
        raise Fail("too_large", f"{_rel(path)} is larger than the file limit ({request['limit']} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Fail("not_text", f"{_rel(path)} is not UTF-8 text") from None
    count = text.count(edit["old"])
    if count == 0:
        raise Fail("no_match", f"the old text was not found in {_rel(path)}")
    if count > 1 and not edit["replace_all"]:
        raise Fail(
            "ambiguous",
            f"the old text occurs {count} times in {_rel(path)}: give more context or set replace_all",
        )
    updated = text.replace(edit["old"], edit["new"], -1 if edit["replace_all"] else 1)
    encoded = updated.encode("utf-8")
    if len(encoded) > request["limit"]:
        raise Fail("too_large", f"the edited file would exceed the file limit ({request['limit']} bytes)")
    _write_bytes(path, encoded)
    return {"replacements": count if edit["replace_all"] else 1}


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _walk(base: str) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of everything below base, depth first, symlinked dirs not followed."""
    for root, dirs, files in os.walk(base, followlinks=False):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            try:
                yield path, os.lstat(path)
            except OSError:
                continue


def op_list(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    base, limit = request["path"], request["limit"]
    try:
        info = os.lstat(base)
    except OSError as error:
        raise _os_fail(error, base) from None
    if not stat.S_ISDIR(info.st_mode):
        return {"entries": [[_rel(base), _kind(info.st_mode), info.st_size]], "truncated": False}
    found: Iterator[tuple[str, os.stat_result]]
    if request["recursive"]:
        found = _walk(base)
    else:
        try:
            names = sorted(os.listdir(base))
        except OSError as error:
            raise _os_fail(error, base) from None
        found = ((os.path.join(base, n), os.lstat(os.path.join(base, n))) for n in names)
    entries: list[list[Any]] = []
    for path, info in found:
        if len(entries) >= limit:
            return {"entries": entries, "truncated": True}
        entries.append([_rel(path), _kind(info.st_mode), info.st_size])
    return {"entries": entries, "truncated": False}


def op_delete(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    path = request["path"]
    if os.path.normpath(path) == WORKSPACE:
        raise Fail("bad_path", "the workspace itself cannot be deleted")
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            if request["recursive"]:
                shutil.rmtree(path)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)
    except OSError as error:
        raise _os_fail(error, getattr(error, "filename", None) or path) from None
    return {}


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*``/``?``/``[...]`` within one name, ``**`` for any number of directories."""
    parts = pattern.split("/")
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_segment(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _segment(part: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(part):
        char = part[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = part.find("]", i + 1 if i < len(part) and part[i] in "!]" else i)
            if end < 0:
                out.append(re.escape(char))
                continue
            body = part[i:end].replace("\\", "\\\\")
            i = end + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def _files(base: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        info = os.lstat(base)
    except OSError as error:
        raise _os_fail(error, base) from None
    if not stat.S_ISDIR(info.st_mode):
        yield base, info
        return
    for path, info in _walk(base):
        if not stat.S_ISDIR(info.st_mode):
            yield path, info


def op_glob(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    base, limit = request["path"], request["limit"]
    matcher = glob_regex(request["pattern"])
    paths = sorted(_rel(p) for p, _ in _files(base) if matcher.match(os.path.relpath(p, base)))
    return {"paths": paths[:limit], "truncated": len(paths) > limit}


def op_grep(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    base, limit, max_file = request["path"], request["limit"], request["max_file"]
    regex = re.compile(request["pattern"], re.IGNORECASE if request["ignore_case"] else 0)
    only = glob_regex(request["glob"]) if request.get("glob") else None
    matches: list[list[Any]] = []
    searched = 0
    for path, info in _files(base):
        if only is not None and not only.match(os.path.relpath(path, base)):
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_file:
            continue
        try:
            with open(path, "rb") as handle:
                data = handle.read(max_file)
        except OSError:
            continue
        if b"\x00" in data[:8192]:
            continue
        searched += 1
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if regex.search(line):
                if len(matches) >= limit:
                    return {"matches": matches, "truncated": True, "files_searched": searched}
                matches.append([_rel(path), number, line[:TEXT_CUT]])
    return {"matches": matches, "truncated": False, "files_searched": searched}


OPS: dict[str, Callable[[dict[str, Any], bytes], dict[str, Any]]] = {
    "read": op_read,
    "write": op_write,
    "edit": op_edit,
    "list": op_list,
    "delete": op_delete,
    "glob": op_glob,
    "grep": op_grep,
}


def main() -> None:
    stdin = sys.stdin.buffer
    request = json.loads(stdin.readline())
    payload = stdin.read()
    try:
        reply = OPS[request["op"]](request, payload)
        reply["ok"] = True
    except Fail as failure:
        reply = {"ok": False, "code": failure.code, "error": str(failure)}
    sys.stdout.write(json.dumps(reply))


if __name__ == "__main__":
    main()
