"""Where the time of one component execution went: how long its code held the event loop.

`timed_on_loop` drives a component's coroutine step by step, the way a task would, and times each
step: a step is time the component's code kept the loop to itself. While a step runs, the loop
thread's entry in `RUNNING_ON_THREAD` names the execution, so the loop watchdog (loop.py) can tell
whose code it caught holding the loop.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from hayscope.gc_pauses import GcPauses

if TYPE_CHECKING:
    from hayscope.recording import ComponentExecution

# thread id -> the component execution whose code runs on that thread right now (loop threads only)
RUNNING_ON_THREAD: dict[int, ComponentExecution] = {}


class BlockingSettings:
    """Process-wide: from how long a step counts as blocking the loop (set by LoopLagMonitor)."""

    threshold: float = 0.1
    # time.monotonic() at which the last blocking component step ended, and that execution
    last_block_end: float = 0.0
    last_block_execution: ComponentExecution | None = None


@types.coroutine  # awaitable as it is: no wrapper object, one call less per execution
def timed_on_loop(coroutine: Coroutine[Any, Any, Any], execution: ComponentExecution) -> Generator[Any, Any, Any]:
    """Awaits `coroutine`, adding each of its steps to `execution.loop_held`."""
    thread = threading.get_ident()
    send_value: Any = None
    error: BaseException | None = None
    while True:
        outer = RUNNING_ON_THREAD.get(thread)
        RUNNING_ON_THREAD[thread] = execution
        collecting_before = GcPauses.total
        started = time.perf_counter()
        try:
            yielded = coroutine.send(send_value) if error is None else coroutine.throw(error)
        except StopIteration as stop:
            return stop.value
        finally:  # the step is over, whichever way it ended
            elapsed = time.perf_counter() - started
            if outer is None:
                del RUNNING_ON_THREAD[thread]
            else:
                RUNNING_ON_THREAD[thread] = outer
            execution.loop_held += elapsed
            if elapsed > BlockingSettings.threshold:
                _blocked(execution, elapsed, GcPauses.total - collecting_before)
        try:
            send_value, error = (yield yielded), None
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as thrown:  # cancellation and anything else thrown into the task
            send_value, error = None, thrown


def _blocked(execution: ComponentExecution, elapsed: float, collecting: float) -> None:
    """A step held the loop for `elapsed` seconds, `collecting` of them in garbage collection: the
    component is blamed for its own share when that passes the threshold, the collector for its
    share when that does or when the component's own share does not."""
    BlockingSettings.last_block_end = time.monotonic()
    own = elapsed - collecting
    threshold = BlockingSettings.threshold
    BlockingSettings.last_block_execution = execution if own > threshold else None
    if own > threshold:
        execution.blocked_loop(own)
    if collecting > 0 and (collecting > threshold or own <= threshold):
        execution.blocked_by_gc(collecting)
