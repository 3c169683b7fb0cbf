"""Workspace images without an engine: sized so that files get the whole quota, read back from
the superblock, refused with a clear error, and the quota kind read from a volume's options."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from callboard.sandbox.workspaces import (
    LABEL_CAPACITY,
    WorkspaceError,
    WorkspaceVolume,
    ext4_space,
    kind_of,
    make_image,
    usage,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 (e2fsprogs) is not installed"),
]


@pytest.mark.parametrize("size", [1 << 20, 4 << 20, 256 << 20, 3 << 30])
def test_an_image_leaves_the_whole_quota_to_files_and_stays_sparse(tmp_path: Path, size: int) -> None:
    image = tmp_path / "ws.img"
    free = make_image(image, size)
    assert ext4_space(image)[0] == free
    files_get = free - ext4_space(image)[1]
    assert size <= files_get <= size + max(2 << 20, size // 500)  # the quota, not much more
    assert image.stat().st_blocks * 512 < size // 20 + (1 << 20)  # sparse: mkfs wrote little
    assert not list(tmp_path.glob(".ws.img.*"))  # no scratch file left

    volume = WorkspaceVolume("ws", "fleet", 0.0, "loop", "acme", str(image), "/nonexistent", free)
    assert usage(volume) == 0  # unmounted: from the superblock


def test_a_failed_image_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkspaceError, match="cannot make the workspace image"):
        make_image(blocker / "ws.img", 1 << 20)
    with pytest.raises(WorkspaceError, match="is not an ext4 image"):
        ext4_space(blocker)


def test_the_quota_kind_comes_from_the_volume_options() -> None:
    loop = {"Options": {"type": "ext4", "device": "/srv/ws/x.img", "o": "loop,nodev,nosuid,discard"}}
    assert kind_of(loop) == "loop"
    assert kind_of({"Options": {"o": "size=1048576"}}) == "driver"
    assert kind_of({"Options": {}}) == kind_of({}) == "measured"
    assert LABEL_CAPACITY == "callboard.workspace.capacity"
