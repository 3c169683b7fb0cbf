"""A skill's Python environment: a venv with its dependencies, built inside the sandbox on
the skill's first use. Runs *inside* the container, as the sandbox user, standard library only.

Started as ``python3 -I -c SOURCE SKILL_DIR VENV_DIR NETWORK`` (``NETWORK``: ``1`` when the
container has a network). A skill folder may hold ``requirements.txt`` and a ``wheels/`` folder
of vendored wheels:

- **no network**: every vendored wheel is unpacked into the venv with ``zipfile`` (a wheel is a
  zip of files laid out for site-packages); nothing else is tried, so nothing contacts a
  package index. Each requirement must then be among them (``==`` pins are checked).
- **network**: ``pip install --target`` from the index, with ``--find-links wheels/``, when the
  image has pip; without pip the vendored wheels are unpacked as above and a requirement they
  do not cover is an error that says so.

The image has ``python3`` without pip or ``ensurepip`` (``python3 -m venv --without-pip`` is
enough for a venv), and unpacking wheels needs nothing else. A marker file in the venv holds a
fingerprint of ``requirements.txt`` and the wheels (names, sizes, times): the next use with the
same fingerprint (a persistent workspace, a later container) reuses the venv as it is.

Prints one JSON line: ``{"state": "none" | "ready" | "installed", "venv", "packages",
"seconds"}``; on failure exits 1 with the reason (and pip's output tail) on stderr.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib.util
import json
import platform
import re
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

MARKER = ".callboard-skill.json"
#: how much of pip's output an error carries
TAIL = 3000
_WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


class Fail(Exception):
    """The environment cannot be built; the message says why."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fingerprint(skill: Path, wheels: list[Path]) -> str:
    digest = hashlib.sha256()
    requirements = skill / "requirements.txt"
    if requirements.is_file():
        digest.update(requirements.read_bytes())
    for wheel in wheels:
        stat = wheel.stat()
        digest.update(f"\0{wheel.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def requirements(skill: Path) -> list[tuple[str, str, str]]:
    """(line, normalised name, the rest: version specifiers and markers) per requirement."""
    path = skill / "requirements.txt"
    if not path.is_file():
        return []
    found = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue  # options (an index URL, -r) are pip's business
        match = _REQUIREMENT.match(line)
        if match is None:
            raise Fail(f"requirements.txt: cannot read {line!r}")
        found.append((line, normalize(match.group(1)), match.group(2).split(";", 1)[0].strip()))
    return found


def compatible(wheel: Path) -> bool:
    match = _WHEEL.match(wheel.name)
    if match is None:
        return False
    minor = sys.version_info.minor
    pythons = set(match.group("py").split("."))
    abis = set(match.group("abi").split("."))
    platforms = set(match.group("plat").split("."))
    cpython = {f"cp3{m}" for m in range(minor + 1)} if "abi3" in abis else {f"cp3{minor}"}
    python_ok = bool(pythons & ({"py3", f"py3{minor}"} | cpython))
    abi_ok = bool(abis & {"none", "abi3", f"cp3{minor}"})
    machine = platform.machine()
    plat_ok = "any" in platforms or any(
        p.startswith(("manylinux", "linux")) and p.endswith(machine) for p in platforms
    )
    return python_ok and abi_ok and plat_ok


def unpack(wheel: Path, prefix: Path, site: Path) -> tuple[str, str]:
    """Install one wheel by unpacking it; its (normalised name, version)."""
    if not compatible(wheel):
        here = f"Python 3.{sys.version_info.minor}, {platform.machine()}"
        raise Fail(f"wheels/{wheel.name} is not for this sandbox ({here})")
    python = prefix / "bin" / "python"
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        dist_info = next((top for top in tops if top.endswith(".dist-info")), None)
        if dist_info is None:
            raise Fail(f"wheels/{wheel.name} has no .dist-info")
        data = dist_info[: -len(".dist-info")] + ".data"
        for info in archive.infolist():
            parts = info.filename.split("/")
            if info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
                raise Fail(f"wheels/{wheel.name}: unsafe path {info.filename!r}")
            if info.is_dir():
                continue
            if parts[0] == data and len(parts) > 2:
                kind, rest = parts[1], parts[2:]
                base = {"purelib": site, "platlib": site, "scripts": prefix / "bin"}.get(kind, prefix / kind)
                target = base.joinpath(*rest)
            else:
                target = site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            content = archive.read(info)
            if parts[0] == data and len(parts) > 2 and parts[1] == "scripts":
                if content.startswith(b"#!python"):
                    content = b"#!" + str(python).encode() + content[len(b"#!python") :]
                target.write_bytes(content)
                target.chmod(0o755)
            else:
                target.write_bytes(content)
    entry_points = site / dist_info / "entry_points.txt"
    if entry_points.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(entry_points.read_text())
        if parser.has_section("console_scripts"):
            for script, target_ref in parser.items("console_scripts"):
                module, _, attr = target_ref.partition(":")
                path = prefix / "bin" / script
                call = attr.strip().split()[0] if attr.strip() else "main"
                path.write_text(
                    f"#!{python}\nimport sys\nfrom {module.strip()} import {call.split('.')[0]}\n"
                    f"sys.exit({call}())\n"
                )
                path.chmod(0o755)
    (site / dist_info / "INSTALLER").write_text("callboard\n")
    match = _WHEEL.match(wheel.name)
    assert match is not None
    return normalize(match.group("name")), match.group("version")


def pip_install(skill: Path, site: Path, wheels: list[Path]) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
        "--no-cache-dir", "--target", str(site),
    ]  # fmt: skip
    if wheels:
        command += ["--find-links", str(skill / "wheels")]
    if (skill / "requirements.txt").is_file():
        command += ["-r", str(skill / "requirements.txt")]
    else:
        command += [str(wheel) for wheel in wheels]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise Fail(f"pip install failed (exit {done.returncode}):\n{output[-TAIL:]}")


def build(skill: Path, prefix: Path, network: bool) -> dict[str, object]:
    wheels = sorted((skill / "wheels").glob("*.whl")) if (skill / "wheels").is_dir() else []
    wanted = requirements(skill)
    if not wanted and not wheels:
        return {"state": "none"}
    print_ = fingerprint(skill, wheels)
    marker = prefix / MARKER
    try:
        previous = json.loads(marker.read_text())
    except (OSError, ValueError):
        previous = {}
    if previous.get("fingerprint") == print_:
        return {"state": "ready", "venv": str(prefix), "packages": previous.get("packages", [])}
    venv.EnvBuilder(clear=True, symlinks=True, with_pip=False).create(prefix)
    site = prefix / "lib" / f"python3.{sys.version_info.minor}" / "site-packages"
    has_pip = importlib.util.find_spec("pip") is not None
    installed: dict[str, str] = {}
    if network and has_pip:
        pip_install(skill, site, wheels)
        for dist_info in site.glob("*.dist-info"):
            name, _, version = dist_info.name[: -len(".dist-info")].rpartition("-")
            installed[normalize(name)] = version
    else:
        for wheel in wheels:
            name, version = unpack(wheel, prefix, site)
            installed[name] = version
    missing = []
    for line, name, specifier in wanted:
        have = installed.get(name)
        pin = specifier[2:].strip() if specifier.startswith("==") and "," not in specifier else None
        if have is None or (pin is not None and pin != have):
            missing.append(line if have is None else f"{line} (wheels/ has {have})")
    if missing:
        if network:
            why = "the sandbox image has no pip to fetch them from the package index"
        else:
            why = "the sandbox has no network, so only the vendored wheels (wheels/) are used"
        raise Fail(f"not installed: {', '.join(missing)}; {why}")
    packages = sorted(f"{name}=={version}" for name, version in installed.items())
    marker.write_text(json.dumps({"fingerprint": print_, "packages": packages}))
    return {"state": "installed", "venv": str(prefix), "packages": packages}


def main() -> None:
    skill, prefix, network = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
    started = time.monotonic()
    try:
        if not skill.is_dir():
            raise Fail(f"no skill folder at {skill}")
        result = build(skill, prefix, network)
    except (Fail, OSError, zipfile.BadZipFile, configparser.Error) as error:
        sys.stderr.write(f"{error}\n")
        sys.exit(1)
    result["seconds"] = round(time.monotonic() - started, 3)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
