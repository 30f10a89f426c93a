"""Time spent in garbage collection, so that a stall the collector caused is not blamed on a component.

A full collection stops the whole process while it walks the heap (100 ms and more in a large
process, see benchmarks/README.md), inside whatever code allocated last: often a component's step,
which would then look like it blocked the event loop. A `gc.callbacks` hook, installed with the
first traced pipeline, adds up the time collections take; `timed_on_loop` subtracts a blocking
step's share of it from the component's blame and reports it as the collector's (`(gc)`).
"""

from __future__ import annotations

import gc
import time
from typing import Any


class GcPauses:
    """Process-wide: seconds spent collecting since `install()`, and the last generation collected."""

    total: float = 0.0
    last_generation: int = -1
    _started: float = 0.0


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    # Collections never nest, and every thread is stopped during one: plain class fields suffice.
    if phase == "start":
        GcPauses._started = time.perf_counter()
    else:
        GcPauses.total += time.perf_counter() - GcPauses._started
        GcPauses.last_generation = info.get("generation", -1)


def install() -> None:
    """Start adding up collection time (once per process; a gc callback costs ~1 µs a collection)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
