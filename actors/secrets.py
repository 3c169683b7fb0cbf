"""Per-fleet secrets kept next to the journal: random on first use, the same after a restart.

Adapters reach them through ``AdapterHost.secret(name)`` (the web chat signs its sessions
with one), so a restart does not sign everybody out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_NAME = re.compile(r"^[a-z0-9-]{1,64}$")
SIZE = 32


class SecretError(Exception):
    """The secret file exists but is not one we wrote (wrong size, or unreadable)."""


def secret_path(journal_path: str, name: str) -> Path:
    return Path(os.path.abspath(journal_path)).parent / f"{name}.secret"


def fleet_secret(journal_path: str, name: str) -> bytes:
    """Read the secret ``name``, creating it (mode 0600, exclusively) if it is missing."""
    if not _NAME.match(name):
        raise ValueError(f"bad secret name {name!r}")
    path = secret_path(journal_path, name)
    path.parent.mkdir(parents=True, exist_ok=True)  # a PostgreSQL journal's path may name no folder yet
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes()
        if len(data) != SIZE:
            raise SecretError(f"{path} is not a {SIZE}-byte secret; remove it to make a new one") from None
        return data
    data = os.urandom(SIZE)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return data
