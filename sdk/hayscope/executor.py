"""The executor thread-offloaded components run in, and its exported state.

By default every `TracedAsyncPipeline` shares one thread pool sized like asyncio's default executor,
the one haystack would use (`min(32, cpu_count + 4)` workers). An executor passed to several
pipelines is one executor in the metrics, named after the first of them. `ExecutorState` counts what it runs:
submissions waiting for a worker and workers busy; the metrics collector reads those counts when
Prometheus scrapes, so counting costs the hot path a few lock round-trips and nothing else.

A forked child (gunicorn with `preload_app`, multiprocessing's `fork`) gets new pools for the ones
hayscope made: a `ThreadPoolExecutor` copied by fork has no threads, yet counts its parent's idle
workers as its own, so work sent to it would wait forever. An executor you pass in is yours to
make fork-safe.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_EXECUTOR_NAME = "default"

_states: weakref.WeakSet[ExecutorState] = weakref.WeakSet()


def default_max_workers() -> int:
    """What asyncio's default executor (ThreadPoolExecutor) would get on this machine."""
    return min(32, (os.cpu_count() or 1) + 4)


class ExecutorState:
    """An executor, its name in metrics, and how many of our submissions wait or run in it now."""

    __slots__ = ("__weakref__", "_busy", "_lock", "_make_pool", "_queued", "executor", "max_workers", "name")

    def __init__(
        self, name: str, executor: Executor, max_workers: int | None, make_pool: Callable[[], Executor] | None = None
    ) -> None:
        self.name = name
        self.executor = executor
        self.max_workers = max_workers
        self._make_pool = make_pool  # set for the pools hayscope makes: how to make one again after a fork
        self._lock = threading.Lock()
        self._queued = 0
        self._busy = 0
        _states.add(self)
        if make_pool is not None:
            _reset_pools_after_fork()

    def _after_fork_in_child(self) -> None:
        # The parent's counts and lock are not the child's; nor is the pool, when hayscope made it.
        self._lock = threading.Lock()
        self._queued = self._busy = 0
        if self._make_pool is not None:
            self.executor = self._make_pool()

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def busy(self) -> int:
        return self._busy

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """`fn(*args)` in the executor, counted as queued until a worker takes it, then busy."""
        with self._lock:
            self._queued += 1
        try:
            return self.executor.submit(self._counted, fn, args)
        except BaseException:  # e.g. an executor already shut down: nothing was queued
            self.forget()
            raise

    def _counted(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._lock:
            self._queued -= 1
            self._busy += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._busy -= 1

    def forget(self) -> None:
        """A submission that will never start: its future was cancelled while queued."""
        with self._lock:
            self._queued -= 1


def executor_state(executor: Executor | None = None, max_workers: int | None = None, name: str = "") -> ExecutorState:
    """The state of `executor`, or of a new pool of `max_workers`, or the shared default pool."""
    if executor is not None:
        return _state_of_yours(executor, name)
    if max_workers is not None:

        def make_pool() -> Executor:
            return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"hayscope-{name}")

        return ExecutorState(name, make_pool(), max_workers, make_pool)
    return _default_state()


# an executor passed in -> its one state, whichever pipelines share it
_yours: weakref.WeakKeyDictionary[Executor, ExecutorState] = weakref.WeakKeyDictionary()
_yours_lock = threading.Lock()


def _state_of_yours(executor: Executor, name: str) -> ExecutorState:
    """One state per executor passed in, named after the first pipeline that runs work in it: two
    states would each count only their own pipeline's work and each report the whole pool's size."""
    with _yours_lock:
        state = _yours.get(executor)
        if state is None:
            workers = getattr(executor, "_max_workers", None)
            state = _yours[executor] = ExecutorState(
                name or f"custom-{id(executor):x}", executor, workers if isinstance(workers, int) else None
            )
        return state


_default: ExecutorState | None = None
_default_lock = threading.Lock()


def _default_state() -> ExecutorState:
    global _default
    with _default_lock:
        if _default is None:
            workers = default_max_workers()

            def make_pool() -> Executor:
                return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hayscope")

            _default = ExecutorState(DEFAULT_EXECUTOR_NAME, make_pool(), workers, make_pool)
        return _default


_fork_hook_registered = False


def _reset_pools_after_fork() -> None:
    """Once a pool exists: give every executor state a clean start in each forked child."""
    global _fork_hook_registered
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def _after_fork_in_child() -> None:
    for state in list(_states):
        state._after_fork_in_child()


def live_states() -> list[ExecutorState]:
    """Every executor state still in use, for the metrics collector."""
    return list(_states)
