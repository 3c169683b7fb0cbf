"""Finding and reading a plugin's ``plugin.yaml`` without running its code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml
from pydantic import ValidationError

from callboard.engine.plugin_protocol import PluginManifest

MANIFEST = "plugin.yaml"


class ManifestError(Exception):
    """The plugin cannot be found or its manifest is invalid."""


def find_manifest(path: str | None, package: str | None) -> tuple[Path, PluginManifest]:
    """(the plugin's folder, its manifest) for a folder or an installed package."""
    if path is not None:
        root = Path(path).resolve()
        if not root.is_dir():
            raise ManifestError(f"plugin folder {path!r} does not exist")
    else:
        assert package is not None
        if not all(part.isidentifier() for part in package.split(".")):
            raise ManifestError(f"package {package!r} is not a package name")
        try:
            spec = importlib.util.find_spec(package)  # imports its parents, never the plugin itself
        except ImportError:
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise ManifestError(f"package {package!r} is not installed (or is not a package)")
        root = Path(locations[0])
    return root, read_manifest(root / MANIFEST)


def read_manifest(file: Path) -> PluginManifest:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError:
        raise ManifestError(f"no readable {MANIFEST} in {str(file.parent)!r}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{file}: the manifest must be a mapping (name:, entry:, ...)")
    try:
        return PluginManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in first)
        raise ManifestError(f"{file}: {problems}") from None


def files_mtime(root: Path) -> float:
    """Newest modification time of the plugin's files (what the watcher compares)."""
    newest = 0.0
    for file in root.rglob("*"):
        if file.suffix in (".py", ".yaml", ".yml", ".json", ".toml") and "__pycache__" not in file.parts:
            try:
                newest = max(newest, file.stat().st_mtime)
            except OSError:
                continue
    return newest
