"""`TimelineSampler`: what the process looked like over time, sampled from the metrics registry.

Every `interval` seconds an asyncio task records a `TimelinePoint`: how late its own sleep woke up
(a heartbeat: the event-loop lag it observed itself), pipeline runs in flight, and the executor
gauges (workers busy, workers at most, submissions queued), each summed over its labels.

Memory is bounded by `max_points`. When the cap is reached, neighbouring points merge pairwise into
their maxima and from then on each stored point stands for twice as many samples: the timeline
keeps covering the whole session at a coarser resolution, and spikes (the maxima) survive.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import structlog
from prometheus_client import CollectorRegistry

from hayscope.executor import live_states

__all__ = ["TimelinePoint", "TimelineSampler", "read_gauges"]

DEFAULT_INTERVAL: Final = 0.1
DEFAULT_MAX_POINTS: Final = 4096

RUNS_IN_FLIGHT: Final = "haystack_pipeline_runs_in_flight"
WORKERS_BUSY: Final = "hayscope_executor_workers_busy"
WORKERS_MAX: Final = "hayscope_executor_workers_max"
QUEUE_DEPTH: Final = "hayscope_executor_queue_depth"
EXECUTOR_GAUGES: Final = (WORKERS_BUSY, WORKERS_MAX, QUEUE_DEPTH)
GAUGES: Final = (RUNS_IN_FLIGHT, *EXECUTOR_GAUGES)

logger = structlog.get_logger("hayscope.report")


@dataclass(frozen=True)
class TimelinePoint:
    """One sample (or the maxima of several, once the timeline was thinned)."""

    t_seconds: float  # since the sampler started
    loop_lag_seconds: float  # how late the sampler's own sleep woke up
    runs_in_flight: float
    executor_busy: float
    executor_max: float
    executor_queue_depth: float


def read_gauges(registry: CollectorRegistry | object) -> dict[str, float]:
    """The sum over all label values of each gauge in `GAUGES` (0 when absent).

    `registry` is a `CollectorRegistry` or anything with its `collect()`; a registry restricted to
    the gauges keeps this cheap, since only their collectors run. prometheus_client's registries
    do not describe collectors by default, so a restricted one cannot find the executor gauges'
    collector; then the counts that collector exports are read from the executors directly.
    """
    sums = dict.fromkeys(GAUGES, 0.0)
    seen: set[str] = set()
    collect = getattr(registry, "collect", None)
    for metric in collect() if collect is not None else ():
        seen.add(metric.name)
        for sample in metric.samples:
            if sample.name in sums and isinstance(sample.value, (int, float)) and math.isfinite(sample.value):
                sums[sample.name] += sample.value
    if not seen.issuperset(EXECUTOR_GAUGES):
        for state in live_states():
            sums[WORKERS_BUSY] += state.busy
            sums[QUEUE_DEPTH] += state.queued
            sums[WORKERS_MAX] += state.max_workers or 0
    return sums


def _merge(points: Iterable[TimelinePoint]) -> TimelinePoint:
    items = list(points)
    return TimelinePoint(
        t_seconds=items[0].t_seconds,
        loop_lag_seconds=max(p.loop_lag_seconds for p in items),
        runs_in_flight=max(p.runs_in_flight for p in items),
        executor_busy=max(p.executor_busy for p in items),
        executor_max=max(p.executor_max for p in items),
        executor_queue_depth=max(p.executor_queue_depth for p in items),
    )


class TimelineSampler:
    """Samples the registry's gauges and its own heartbeat lag every `interval` seconds.

    Use `async with TimelineSampler(registry) as sampler:` or `start()` / `stop()` on a running loop;
    `points` holds what was recorded (also after stopping).
    """

    def __init__(
        self, registry: CollectorRegistry, interval: float = DEFAULT_INTERVAL, *, max_points: int = DEFAULT_MAX_POINTS
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.001 <= interval <= 60:
            raise ValueError(f"interval={interval!r} is out of range: give seconds from 0.001 to 60, e.g. 0.1.")
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"max_points={max_points!r} must be a whole number of 2 or more, e.g. 4096.")
        self.registry = registry
        self.interval = float(interval)
        self.max_points = max_points
        self._gauges = registry.restricted_registry(GAUGES) if isinstance(registry, CollectorRegistry) else registry
        self._points: list[TimelinePoint] = []
        self._pending: list[TimelinePoint] = []  # samples not yet merged into a stored point
        self._stride = 1  # samples per stored point; doubles each time the cap is hit
        self._task: asyncio.Task[None] | None = None
        self.samples = 0  # samples taken, including those merged away
        self.max_loop_lag_seconds = 0.0  # exact, whatever thinning did

    @property
    def points(self) -> tuple[TimelinePoint, ...]:
        return tuple(self._points)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start sampling on the running loop."""
        if self.running:
            raise RuntimeError("this TimelineSampler is already running: stop() it first, or use another one")
        self._task = asyncio.get_running_loop().create_task(self._sample_forever(), name="hayscope-timeline")

    def stop(self) -> None:
        """Stop sampling; safe to call twice. `aclose()` also waits until the task has ended."""
        if self._task is not None:
            self._task.cancel()
        if self._pending:  # a partial stride still says something about the last moments
            self._points.append(_merge(self._pending))
            self._pending.clear()

    async def aclose(self) -> None:
        task = self._task
        self.stop()
        if task is not None and task is not asyncio.current_task():
            # wait() neither raises the task's CancelledError nor swallows a cancellation of ours.
            await asyncio.wait({task})

    async def __aenter__(self) -> TimelineSampler:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _sample_forever(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            self._sample(now - started, max(0.0, now - expected))

    def _sample(self, t_seconds: float, loop_lag_seconds: float) -> None:
        try:
            self.record(t_seconds, loop_lag_seconds, read_gauges(self._gauges))
        except Exception as error:  # a broken collector must not end the session
            logger.warning("timeline sample failed", error=repr(error))

    def record(self, t_seconds: float, loop_lag_seconds: float, gauges: dict[str, float]) -> None:
        """Add one sample (the task calls this; tests may too)."""
        self.samples += 1
        self.max_loop_lag_seconds = max(self.max_loop_lag_seconds, loop_lag_seconds)
        self._pending.append(
            TimelinePoint(
                t_seconds=t_seconds,
                loop_lag_seconds=loop_lag_seconds,
                runs_in_flight=gauges.get(RUNS_IN_FLIGHT, 0.0),
                executor_busy=gauges.get(WORKERS_BUSY, 0.0),
                executor_max=gauges.get(WORKERS_MAX, 0.0),
                executor_queue_depth=gauges.get(QUEUE_DEPTH, 0.0),
            )
        )
        if len(self._pending) < self._stride:
            return
        self._points.append(_merge(self._pending))
        self._pending.clear()
        if len(self._points) >= self.max_points:
            self._points = [_merge(self._points[i : i + 2]) for i in range(0, len(self._points), 2)]
            self._stride *= 2
