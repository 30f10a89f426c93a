"""Sync components on the async paths: haystack's own execution code, with `run` in the pipeline's executor.

haystack's `_run_component_async` does its bookkeeping (input copies, output checks, visits) on the
event loop and hands a component without `run_async` to `asyncio.to_thread`. `offloaded()` gives it
a stand-in for the component whose `run_async` submits the component's `run` to hayscope's executor
instead, so that the executor's state can be measured, its size chosen, and the queue wait and run
time of each execution timed; everything else stays haystack's own. The stand-in passes for the
component: its `__class__`, type name and module (which haystack's error messages and span tags
quote) and every other attribute are the component's.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from hayscope import semconv
from hayscope.executor import ExecutorState
from hayscope.recording import WAIT_SPAN_THRESHOLD, ComponentExecution


class _Offloaded:
    """Passes for a sync component in haystack's async path; its `run_async` runs `run` in a worker."""

    # The sockets too, copied: haystack reads them on every execution (for its span's tags), and a
    # read that misses the slots and ends in `__getattr__` costs several times a slot's.
    __slots__ = ("__haystack_input__", "__haystack_output__", "_execution", "_executor", "_instance")

    def __init__(self, instance: Any, execution: ComponentExecution, executor: ExecutorState) -> None:
        self._instance = instance
        self._execution = execution
        self._executor = executor
        try:  # (every @component instance has them)
            self.__haystack_input__ = instance.__haystack_input__
            self.__haystack_output__ = instance.__haystack_output__
        except AttributeError:
            pass

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # what isinstance() and haystack's error messages see
        return type(self._instance)

    def __getattr__(self, name: str) -> Any:
        if name in _Offloaded.__slots__:  # not set yet (a copy being made): never the component's
            raise AttributeError(name)
        return getattr(self._instance, name)

    async def run_async(self, **inputs: Any) -> Mapping[str, Any]:
        execution, executor = self._execution, self._executor
        context = contextvars.copy_context()  # the execution's: its span is current in the worker
        submitted, submitted_ns = time.perf_counter(), time.time_ns()
        future, ticket = executor.submit(context.run, _work, execution, self._instance.run, inputs)
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            executor.forget(ticket)  # (if no worker took it yet: cancelled while queued)
            raise
        finally:
            _record_queue_wait(execution, submitted, submitted_ns)


# component class -> its stand-in's class, named like it (haystack tags a span with type(instance)'s name)
_STAND_IN_TYPES: weakref.WeakKeyDictionary[type, type[_Offloaded]] = weakref.WeakKeyDictionary()


def offloaded(component: dict[str, Any], execution: ComponentExecution, executor: ExecutorState) -> dict[str, Any]:
    """haystack's description of a component, with a stand-in whose `run_async` runs `run` in `executor`."""
    instance = component["instance"]
    cls = type(instance)
    stand_in = _STAND_IN_TYPES.get(cls)
    if stand_in is None:
        namespace = {"__slots__": (), "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        stand_in = _STAND_IN_TYPES[cls] = type(cls.__name__, (_Offloaded,), namespace)
    return {**component, "instance": stand_in(instance, execution, executor)}


def _work(execution: ComponentExecution, run: Callable[..., Mapping[str, Any]], inputs: dict[str, Any]) -> Any:
    started = execution.worker_started = time.perf_counter()
    execution.thread = threading.current_thread()
    try:
        return run(**inputs)
    except StopIteration as stop:
        # A future cannot carry StopIteration (asyncio would leave the run waiting forever): raised
        # as a RuntimeError with its message, haystack reports it as the component's failure.
        raise RuntimeError(str(stop)) from stop
    finally:
        execution.run_time = time.perf_counter() - started


def _record_queue_wait(execution: ComponentExecution, submitted: float, submitted_ns: int) -> None:
    started = execution.worker_started
    if started is None:  # given up before a worker took it: it waited all along, and never ran
        started = time.perf_counter()
        execution.run_time = 0.0
    execution.queue_wait = wait = started - submitted
    if wait > WAIT_SPAN_THRESHOLD:
        execution.wait_span(semconv.QUEUE_WAIT_SPAN, submitted_ns, submitted_ns + int(wait * 1e9))
