"""The executor thread-offloaded components run in, and its exported state.

By default a sync component runs where haystack would run it: in the running loop's default
executor, as `asyncio.to_thread` does (each loop has its own, `loop.set_default_executor` picks
it, and a loop started inside a component does not wait for workers of the loop that runs it).
`TracedAsyncPipeline(max_workers=N)` gives a pipeline a pool of its own, and `executor=` runs in
yours; an executor passed to several pipelines is one executor in the metrics, named after its
threads (`thread_name_prefix`) or else the first of them. `ExecutorState` counts what it runs:
submissions waiting for a worker and workers busy; the metrics collector reads those counts when
Prometheus scrapes, so counting costs the hot path a few lock round-trips and nothing else.

A forked child (gunicorn with `preload_app`, multiprocessing's `fork`) gets new pools for the ones
hayscope made: a `ThreadPoolExecutor` copied by fork has no threads, yet counts its parent's idle
workers as its own, so work sent to it would wait forever. An executor you pass in is yours to
make fork-safe.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_EXECUTOR_NAME = "default"

_states: weakref.WeakSet[ExecutorState] = weakref.WeakSet()
_states_lock = threading.Lock()  # loops in other threads add states while a scrape lists them

# One per submission: set once a worker has taken it, or once it was given up before that.
Ticket = list[bool]


def default_max_workers() -> int:
    """What asyncio's default executor (ThreadPoolExecutor) gets on this machine."""
    return min(32, (os.cpu_count() or 1) + 4)


class _LoopDefault:
    """A loop's default executor, reached as `asyncio.to_thread` reaches it. It holds its loop weakly:
    a loop that is gone takes its state with it (see `_loop_defaults`)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)

    def submit(self, fn: Callable[..., T], *args: Any) -> Any:
        # (called on the running loop, which is alive.) Straight to the loop's pool once it exists
        # (asyncio keeps it in `_default_executor`): `run_in_executor` would check `fn` for a
        # coroutine function on every call, ~5,000 CPU instructions per execution; it makes the
        # pool on the first call, as for any other loop.
        loop: Any = self._loop()
        pool = getattr(loop, "_default_executor", None)
        if pool is None:
            return loop.run_in_executor(None, fn, *args)
        return pool.submit(fn, *args)

    @property
    def closed(self) -> bool:
        loop = self._loop()
        return loop is None or loop.is_closed()

    @property
    def _max_workers(self) -> int | None:
        # Read as the metrics collector reads any ThreadPoolExecutor's; before the loop's first
        # offload its pool does not exist yet, and will be made with asyncio's default size.
        pool = getattr(self._loop(), "_default_executor", None)
        return default_max_workers() if pool is None else getattr(pool, "_max_workers", None)


class ExecutorState:
    """An executor, its name in metrics, and how many of our submissions wait or run in it now."""

    __slots__ = ("__weakref__", "_busy", "_lock", "_make_pool", "_queued", "executor", "name")

    def __init__(self, name: str, executor: Executor | _LoopDefault, make_pool: Callable[[], Executor] | None = None) -> None:
        self.name = name
        self.executor = executor
        self._make_pool = make_pool  # set for the pools hayscope makes: how to make one again after a fork
        self._lock = threading.Lock()
        self._queued = 0
        self._busy = 0
        with _states_lock:
            _states.add(self)
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

    @property
    def is_loop_default(self) -> bool:
        """Whether this is a loop's default executor (see `loop_default_state`)."""
        return isinstance(self.executor, _LoopDefault)

    @property
    def max_workers(self) -> int | None:
        """The executor's size, when it says (a ThreadPoolExecutor does)."""
        workers = getattr(self.executor, "_max_workers", None)
        return workers if isinstance(workers, int) else None

    def submit(self, fn: Callable[..., T], *args: Any) -> tuple[Any, Ticket]:
        """`fn(*args)` in the executor, counted as queued until a worker takes it, then busy: its
        future (concurrent or asyncio), and the ticket to `forget` it by if it is given up."""
        ticket: Ticket = [False]
        with self._lock:
            self._queued += 1
        try:
            return self.executor.submit(self._counted, ticket, fn, args), ticket
        except BaseException:  # e.g. an executor already shut down: nothing was queued
            self.forget(ticket)
            raise

    def _counted(self, ticket: Ticket, fn: Callable[..., T], args: tuple[Any, ...]) -> T | None:
        with self._lock:
            if ticket[0]:  # given up while it waited (its caller is gone): not run
                return None
            ticket[0] = True
            self._queued -= 1
            self._busy += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._busy -= 1

    def forget(self, ticket: Ticket) -> None:
        """A submission given up (its run cancelled): no longer queued, if no worker took it yet."""
        with self._lock:
            if not ticket[0]:
                ticket[0] = True
                self._queued -= 1


def executor_state(
    executor: Executor | None = None, max_workers: int | None = None, name: str = ""
) -> ExecutorState | None:
    """The state of `executor`, or of a new pool of `max_workers`; None: the running loop's default
    executor (see `loop_default_state`)."""
    if executor is not None:
        return _state_of_yours(executor, name)
    if max_workers is not None:

        def make_pool() -> Executor:
            return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"hayscope-{name}")

        return ExecutorState(name, make_pool(), make_pool)
    return None


class OwnPool:
    """The pool `max_workers` gives a pipeline, made on its first use: one for the pipeline, its
    copies, and the telemetry rebuilt after `configure_telemetry()`, as an executor passed in is."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._state: ExecutorState | None = None
        self._lock = threading.Lock()  # copies may run first in two threads at once

    def state(self, name: str) -> ExecutorState:
        """The pool's state; `name`, the pipeline's, labels it and its threads when it is made."""
        with self._lock:
            if self._state is None:
                self._state = executor_state(max_workers=self.max_workers, name=name)
            assert self._state is not None
            return self._state


# id of an executor passed in -> its one state, whichever pipelines share it. Keyed by id (executors
# need not be hashable), and held weakly: the state, which holds the executor, lives as long as a
# pipeline uses it, so the id cannot be another executor's meanwhile.
_yours: weakref.WeakValueDictionary[int, ExecutorState] = weakref.WeakValueDictionary()
_yours_lock = threading.Lock()


def _state_of_yours(executor: Executor, name: str) -> ExecutorState:
    """One state per executor passed in, named after its threads (`thread_name_prefix`) or else the
    first pipeline that runs work in it: two states would each count only their own pipeline's work
    and each report the whole pool's size."""
    with _yours_lock:
        state = _yours.get(id(executor))
        if state is None or state.executor is not executor:
            name = _named_threads(executor) or name or f"custom-{id(executor):x}"
            state = _yours[id(executor)] = ExecutorState(name, executor)
        return state


# The prefix a ThreadPoolExecutor gives its threads when none is chosen: numbered per pool, not a name.
_UNNAMED_POOL = re.compile(r"ThreadPoolExecutor-\d+")


def _named_threads(executor: Executor) -> str | None:
    """The `thread_name_prefix` chosen for a ThreadPoolExecutor, if one was (and is not the loops'
    default executors' label, with which its series would be summed)."""
    prefix = getattr(executor, "_thread_name_prefix", None) if isinstance(executor, ThreadPoolExecutor) else None
    if not isinstance(prefix, str) or prefix in ("", DEFAULT_EXECUTOR_NAME) or _UNNAMED_POOL.fullmatch(prefix):
        return None
    return prefix


# event loop -> the state of its default executor (the states of several loops are summed in metrics)
_loop_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ExecutorState] = weakref.WeakKeyDictionary()


def loop_default_state() -> ExecutorState:
    """The state of the running loop's default executor (called on the loop, so no lock needed)."""
    loop = asyncio.get_running_loop()
    state = _loop_defaults.get(loop)
    if state is None:
        state = _loop_defaults[loop] = ExecutorState(DEFAULT_EXECUTOR_NAME, _LoopDefault(loop))
    return state


_fork_hook_registered = False


def _reset_pools_after_fork() -> None:
    """Once an executor state exists: give every one a clean start in each forked child."""
    global _fork_hook_registered
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def _after_fork_in_child() -> None:
    global _states_lock
    _states_lock = threading.Lock()  # (held by another thread of the parent, perhaps)
    for state in list(_states):
        state._after_fork_in_child()


def live_states() -> list[ExecutorState]:
    """Every executor state still in use, for the metrics collector (a closed loop's default executor is not)."""
    with _states_lock:
        states = list(_states)
    return [state for state in states if not getattr(state.executor, "closed", False)]
