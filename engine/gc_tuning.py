"""Cyclic GC settings for a long-running server.

Under load the cyclic collector was a quarter of the engine's CPU per event: with
CPython's default thresholds (700, 10, 10) every few thousand allocations start
a collection, and the older generations it reaches hold everything loaded at
start-up (modules, config, actors) plus the events in flight. Two changes:

- ``gc.freeze()`` once start-up is done moves every object alive then into the
  permanent generation, which no collection scans again;
- higher thresholds: young collections run less often (most short-lived
  objects are freed by reference counting before a collection sees them), and
  the oldest generation is reached rarely. Events, entities and chains are
  msgspec Structs with ``gc=False``, so they add little to what is tracked.

Memory held by real cycles is still reclaimed, just in larger, rarer batches.
"""

from __future__ import annotations

import gc

#: young collections every 50,000 net allocations of tracked objects (default 700)
GEN0 = 50_000
#: a middle collection every 20 young ones, an old one every 100 middle ones
GEN1 = 20
GEN2 = 100


def tune_for_serving() -> None:
    """Call once, after start-up: collect what start-up left, freeze the rest, raise thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
