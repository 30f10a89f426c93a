"""The executor thread-offloaded components run in, and its exported state.

By default every `TracedAsyncPipeline` shares one thread pool sized like asyncio's default executor,
the one haystack would use (`min(32, cpu_count + 4)` workers). `ExecutorState` counts what it runs:
submissions waiting for a worker and workers busy; the metrics collector reads those counts when
Prometheus scrapes, so counting costs the hot path a few lock round-trips and nothing else.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_EXECUTOR_NAME = "default"

_states: weakref.WeakSet[ExecutorState] = weakref.WeakSet()


def default_max_workers() -> int:
    """What asyncio's default executor (ThreadPoolExecutor) would get on this machine."""
    return min(32, (os.cpu_count() or 1) + 4)


class ExecutorState:
    """An executor, its name in metrics, and how many of our submissions wait or run in it now."""

    __slots__ = ("__weakref__", "_busy", "_lock", "_queued", "executor", "max_workers", "name")

    def __init__(self, name: str, executor: Executor, max_workers: int | None) -> None:
        self.name = name
        self.executor = executor
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._queued = 0
        self._busy = 0
        _states.add(self)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def busy(self) -> int:
        return self._busy

    def track(self, fn: Callable[..., T], started: list[float]) -> Callable[..., T]:
        """`fn` counted as queued now and busy while it runs; `started` receives its start time."""
        with self._lock:
            self._queued += 1

        def run(*args: Any) -> T:
            started.append(time.perf_counter())
            with self._lock:
                self._queued -= 1
                self._busy += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._busy -= 1

        return run

    def forget(self, fn_started: list[float]) -> None:
        """A tracked submission that will never start (its future was cancelled while queued)."""
        if not fn_started:
            with self._lock:
                self._queued -= 1


def executor_state(executor: Executor | None = None, max_workers: int | None = None, name: str = "") -> ExecutorState:
    """The state of `executor`, or of a new pool of `max_workers`, or the shared default pool."""
    if executor is not None:
        workers = getattr(executor, "_max_workers", None)
        return ExecutorState(name or f"custom-{id(executor):x}", executor, workers if isinstance(workers, int) else None)
    if max_workers is not None:
        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"hayscope-{name}")
        return ExecutorState(name, pool, max_workers)
    return _default_state()


_default: ExecutorState | None = None
_default_lock = threading.Lock()


def _default_state() -> ExecutorState:
    global _default
    with _default_lock:
        if _default is None:
            workers = default_max_workers()
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hayscope")
            _default = ExecutorState(DEFAULT_EXECUTOR_NAME, pool, workers)
        return _default


def live_states() -> list[ExecutorState]:
    """Every executor state still in use, for the metrics collector."""
    return list(_states)
