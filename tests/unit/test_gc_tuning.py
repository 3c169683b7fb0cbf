"""GC settings for serving: start-up objects frozen, thresholds raised, cycles still collected."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from callboard.engine.gc_tuning import GEN0, GEN1, GEN2, tune_for_serving


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_start_up_objects_are_frozen_and_cycles_still_collected() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    kept = Node()
    tune_for_serving()
    assert gc.get_threshold() == (GEN0, GEN1, GEN2)
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen: no collection scans it again
    Node()  # a cycle made while serving
    assert gc.collect() >= 1  # is still reclaimed
