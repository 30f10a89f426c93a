"""Where the time of one component execution went: how long its code held the event loop.

`timed_on_loop` drives a component's coroutine step by step, the way a task would, and times each
step: a step is time the component's code kept the loop to itself. `timed_on_thread` times a sync
component's `run` on the `run()` path, which holds the loop when `run()` was called on a loop's
thread. While a step runs, its thread's entry in `RUNNING_ON_THREAD` names the execution and the
execution's `step_started` says since when, so the loop watchdog (loop.py) can tell whose code it
caught holding the loop, and sample it as soon as it has held it too long.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import types
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from hayscope.gc_pauses import GcPauses

if TYPE_CHECKING:
    from hayscope.recording import ComponentExecution

T = TypeVar("T")

DEFAULT_BLOCK_THRESHOLD = 0.1
# Blocking steps remembered per loop thread (more than fit between two heartbeats)
RECENT_BLOCKS = 32

# thread id -> the component execution whose code runs on that thread right now
RUNNING_ON_THREAD: dict[int, ComponentExecution] = {}
# An execution's `inner_blocking` when no step inside its current one blocked: (seconds held, collecting)
NO_INNER_BLOCKING = (0.0, 0.0)


class BlockingSettings:
    """Process-wide: from how long a step counts as blocking its thread's loop (set by LoopLagMonitor)."""

    # loop thread id -> the threshold of the monitors watching that loop (the lowest; others: the default)
    by_thread: dict[int, float] = {}
    _watching: dict[int, tuple[int, float]] = {}  # id(monitor) -> its loop thread and threshold
    # the lowest threshold in use: a step no longer than this blocked no loop (checked on every step)
    threshold: float = DEFAULT_BLOCK_THRESHOLD
    # loop thread id -> time.monotonic() at which the last blocking step on it ended, and the
    # execution blamed for it (None: its own share was under the threshold)
    last_block: dict[int, tuple[float, ComponentExecution | None]] = {}
    # loop thread id -> its latest blocking steps: (time.monotonic() at the end, seconds held
    # beyond the steps inside it, seconds of them collecting garbage), for the monitor to tell
    # how much of a late heartbeat they explain
    recent_blocks: dict[int, collections.deque[tuple[float, float, float]]] = {}

    @classmethod
    def watch(cls, monitor: object, thread: int, threshold: float | None) -> None:
        """`monitor` starts watching the loop on `thread` with `threshold` (None: it stops)."""
        if threshold is None:
            cls._watching.pop(id(monitor), None)
        else:
            cls._watching[id(monitor)] = (thread, threshold)
        by_thread: dict[int, float] = {}
        for watched, its_threshold in cls._watching.values():
            by_thread[watched] = min(its_threshold, by_thread.get(watched, its_threshold))
        cls.by_thread = by_thread  # (a new dict: the loops' threads read it meanwhile)
        cls.threshold = min([DEFAULT_BLOCK_THRESHOLD, *by_thread.values()])


@types.coroutine  # awaitable as it is: no wrapper object, one call less per execution
def timed_on_loop(coroutine: Coroutine[Any, Any, Any], execution: ComponentExecution) -> Generator[Any, Any, Any]:
    """Awaits `coroutine`, adding each of its steps to `execution.loop_held`."""
    thread = threading.get_ident()
    send_value: Any = None
    error: BaseException | None = None
    while True:
        outer = RUNNING_ON_THREAD.get(thread)
        collecting_before = GcPauses.total
        started = execution.step_started = time.perf_counter()  # set before the watchdog can see it
        RUNNING_ON_THREAD[thread] = execution
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
                _blocked(execution, elapsed, GcPauses.total - collecting_before, outer)
        try:
            send_value, error = (yield yielded), None
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as thrown:  # cancellation and anything else thrown into the task
            send_value, error = None, thrown


def timed_on_thread(execution: ComponentExecution, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` as one step of `execution` on this thread: if the thread runs an
    event loop (a sync `run()` called from a coroutine), a step past the threshold blocked it."""
    thread = threading.get_ident()
    outer = RUNNING_ON_THREAD.get(thread)
    collecting_before = GcPauses.total
    started = execution.step_started = time.perf_counter()
    RUNNING_ON_THREAD[thread] = execution
    try:
        return function(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - started
        if outer is None:
            del RUNNING_ON_THREAD[thread]
        else:
            RUNNING_ON_THREAD[thread] = outer
        if elapsed > BlockingSettings.threshold and asyncio._get_running_loop() is not None:
            _blocked(execution, elapsed, GcPauses.total - collecting_before, outer)


def _blocked(
    execution: ComponentExecution, elapsed: float, collecting: float, outer: ComponentExecution | None
) -> None:
    """A step held the loop for `elapsed` seconds, `collecting` of them in garbage collection: the
    component is blamed for its own share when that passes the threshold, the collector for its
    share when that does or when the component's own share does not. Steps of other executions that
    ran inside this one (a traced `run()` called by a component) and blocked were blamed for
    themselves: not again as part of the `outer` step they ran in."""
    thread = threading.get_ident()
    threshold = BlockingSettings.by_thread.get(thread, DEFAULT_BLOCK_THRESHOLD)
    held_inside, collecting_inside = execution.inner_blocking
    execution.inner_blocking = NO_INNER_BLOCKING
    if elapsed <= threshold:  # past the lowest threshold in use, not this loop's
        return
    if outer is not None:  # this whole step ran inside one of `outer`'s
        held, collecting_then = outer.inner_blocking
        outer.inner_blocking = (held + elapsed, collecting_then + collecting)
    elapsed -= held_inside
    collecting -= collecting_inside
    own = elapsed - collecting
    if own > threshold:
        execution.blocked_loop(own)
        blamed: ComponentExecution | None = execution
    elif held_inside:  # the step inside this one that was blamed stays the one to blame
        blamed = BlockingSettings.last_block.get(thread, (0.0, None))[1]
    else:
        blamed = None
    ended = time.monotonic()
    BlockingSettings.last_block[thread] = (ended, blamed)
    recent = BlockingSettings.recent_blocks.get(thread)
    if recent is None:
        recent = BlockingSettings.recent_blocks[thread] = collections.deque(maxlen=RECENT_BLOCKS)
    recent.append((ended, elapsed, collecting))
    # (what is left once the steps inside are taken out may not have blocked the loop at all)
    if collecting > 0 and (collecting > threshold or own <= threshold < elapsed):
        execution.blocked_by_gc(collecting)
