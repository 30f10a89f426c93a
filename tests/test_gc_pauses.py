"""A garbage-collection pause during a component's step is the collector's, not the component's.

The workload: a component that runs a full collection (`gc.collect()`) over a heap the test makes
large enough for the collection to take several times the blocking threshold.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from haystack import component

from hayscope import LoopLagMonitor
from hayscope.gc_pauses import GcPauses, _on_collection, install
from hayscope.metrics import GC_COMPONENT

THRESHOLD = 0.02


@pytest.fixture(scope="module")
def big_heap() -> Iterator[list[list[int]]]:
    """Enough tracked objects for a full collection to take at least 3x the threshold here."""
    heap: list[list[int]] = []
    took = 0.0
    while took < 3 * THRESHOLD and len(heap) < 8_000_000:
        heap.extend([] for _ in range(500_000))
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started
    assert took >= 3 * THRESHOLD, f"a full collection of {len(heap)} lists took only {took:.3f} s"
    yield heap
    heap.clear()


@component
class Collecting:
    """Sleeps `seconds` on the loop (its own blocking, if any), then runs a full collection."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        if self.seconds:
            time.sleep(self.seconds)
        gc.collect()
        return {"value": value}


@component
class Awaiting:
    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"value": value}


def test_collection_time_adds_up_once_installed() -> None:
    install()
    install()
    assert gc.callbacks.count(_on_collection) == 1  # once, however often
    before = GcPauses.total
    gc.collect()
    gc.collect(0)
    assert GcPauses.total > before
    assert GcPauses.last_generation == 0


def blocked(capture: Any, pipeline: str, component: str) -> float:
    return capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline=pipeline, component=component) or 0.0


async def test_a_collection_pause_is_blamed_on_the_collector_not_on_the_component(capture, big_heap) -> None:
    pipeline = capture.pipeline(name="gc")
    pipeline.add_component("collect", Collecting())
    pipeline.add_component("after", Awaiting())
    pipeline.connect("collect.value", "after.value")

    with structlog.testing.capture_logs() as logs:
        async with LoopLagMonitor(registry=capture.registry, interval=0.01, threshold=THRESHOLD):
            result = await pipeline.run_async({"collect": {"value": 1}})

    assert result == {"after": {"value": 1}}
    (span,) = capture.spans_named("haystack.component.run collect")
    assert not [e for e in span.events if e.name == "event_loop.blocked"]
    (event,) = [e for e in span.events if e.name == "event_loop.blocked_by_gc"]
    paused = event.attributes["event_loop.blocked.seconds"]
    assert paused >= 3 * THRESHOLD * 0.5 and event.attributes["gc.generation"] == 2
    assert blocked(capture, "gc", GC_COMPONENT) == pytest.approx(paused)
    assert blocked(capture, "gc", "collect") == 0.0
    # the step's own time is still loop-held time: the collection ran on the loop
    assert span.attributes["hayscope.component.loop_held"] >= paused
    warnings = [entry for entry in logs if entry["event"] == "event loop blocked by garbage collection"]
    assert [(w["pipeline"], w["component"], w["generation"]) for w in warnings] == [("gc", "collect", 2)]
    assert not [entry for entry in logs if entry["event"] == "event loop blocked"]


async def test_a_component_that_blocks_and_collects_is_blamed_for_its_own_share_only(capture, big_heap) -> None:
    pipeline = capture.pipeline(name="both")
    pipeline.add_component("collect", Collecting(seconds=0.1))

    async with LoopLagMonitor(registry=capture.registry, interval=0.01, threshold=THRESHOLD):
        await pipeline.run_async({"collect": {"value": 1}})

    (span,) = capture.spans_named("haystack.component.run collect")
    (own,) = [e.attributes["event_loop.blocked.seconds"] for e in span.events if e.name == "event_loop.blocked"]
    (paused,) = [e.attributes["event_loop.blocked.seconds"] for e in span.events if e.name == "event_loop.blocked_by_gc"]
    # its own 0.1 s of sleep (clock reads around the collection shave a few microseconds off)
    assert 0.095 <= own < span.attributes["hayscope.component.loop_held"] - paused / 2
    assert blocked(capture, "both", "collect") == pytest.approx(own)
    assert blocked(capture, "both", GC_COMPONENT) == pytest.approx(paused)


async def test_a_collection_outside_any_component_is_counted_under_none_and_gc(capture, big_heap) -> None:
    loop = asyncio.get_running_loop()
    with structlog.testing.capture_logs() as logs:
        async with LoopLagMonitor(registry=capture.registry, interval=0.01, threshold=THRESHOLD) as monitor:
            await asyncio.sleep(0.02)  # a heartbeat is scheduled
            started = GcPauses.total
            gc.collect()  # the loop is stopped by a collection that no component ran
            paused = GcPauses.total - started
            beat = loop.create_future()
            loop.call_later(monitor.interval * 2, beat.set_result, None)
            await beat

    assert paused > THRESHOLD
    # the collection's share of the heartbeat's lag (it may have started before the beat was due)
    assert paused - monitor.interval <= blocked(capture, "(none)", GC_COMPONENT) <= paused
    assert blocked(capture, "(none)", "(none)") == 0.0
    assert [entry["event"] for entry in logs] == ["event loop blocked by garbage collection"]
