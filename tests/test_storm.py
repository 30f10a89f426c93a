"""A cancellation storm: runs cancelled at random points and streams abandoned leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from typing import Any

from haystack import component
from opentelemetry.sdk.trace import SpanProcessor

from components import AsyncAdd, SyncAdd
from hayscope.testing import TelemetryCapture


class OpenSpans(SpanProcessor):
    """Counts spans started and not ended."""

    def __init__(self) -> None:
        self.open: dict[int, str] = {}
        self.lock = threading.Lock()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        with self.lock:
            self.open[span.context.span_id] = span.name

    def on_end(self, span: Any) -> None:
        with self.lock:
            self.open.pop(span.context.span_id, None)


@component
class Jitter:
    """Sleeps a random few milliseconds on the loop or in its worker thread, so cancels land anywhere."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        threading.Event().wait(self.random.uniform(0, 0.004))
        return {"value": value}


@component
class AsyncJitter(Jitter):
    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        await asyncio.sleep(self.random.uniform(0, 0.004))
        return {"value": value}


def storm_pipeline(capture: TelemetryCapture) -> Any:
    pipeline = capture.pipeline(name="storm", max_workers=4)
    pipeline.add_component("a", SyncAdd(1))
    pipeline.add_component("b", Jitter(1))
    pipeline.add_component("c", AsyncJitter(2))
    pipeline.add_component("d", AsyncAdd(1))
    pipeline.connect("a.value", "b.value")
    pipeline.connect("b.value", "c.value")
    pipeline.connect("c.value", "d.value")
    return pipeline


async def test_cancelled_runs_and_abandoned_streams_leave_no_span_gauge_or_thread_behind(capture, context_errors):
    open_spans = OpenSpans()
    capture.tracer_provider.add_span_processor(open_spans)
    pipeline = storm_pipeline(capture)
    chooser = random.Random(7)
    threads_before = threading.active_count()

    async def cancelled_run() -> None:
        task = asyncio.ensure_future(pipeline.run_async({"a": {"value": 0}}))
        await asyncio.sleep(chooser.uniform(0, 0.008))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def abandoned_stream(close: bool) -> None:
        stream = pipeline.run_async_generator({"a": {"value": 0}})
        async for _ in stream:
            if chooser.random() < 0.5:
                break
        if close:
            await stream.aclose()
        # else: dropped unclosed; the garbage collector finalizes it

    async def full_run() -> None:
        assert await pipeline.run_async({"a": {"value": 0}}) == {"d": {"value": 2}}

    work = []
    for i in range(300):
        kind = i % 4
        work.append(cancelled_run() if kind == 0 else abandoned_stream(kind == 1) if kind < 3 else full_run())
    await asyncio.gather(*work)
    for _ in range(3):  # finalize abandoned generators, then let their cleanup run on the loop
        gc.collect()
        await asyncio.sleep(0)
    sample = capture.sample
    # A cancelled thread-mode execution ends at once; its worker finishes the component it was in.
    deadline = asyncio.get_running_loop().time() + 5
    while sample("hayscope_executor_workers_busy", executor="storm") and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.001)

    assert open_spans.open == {}
    assert sample("haystack_pipeline_runs_in_flight", pipeline="storm") == 0
    for name, mode in (("a", "thread"), ("b", "thread"), ("c", "async"), ("d", "async")):
        assert sample("haystack_components_in_flight", pipeline="storm", component=name, mode=mode) == 0, name
    assert sample("hayscope_executor_workers_busy", executor="storm") == 0
    assert sample("hayscope_executor_queue_depth", executor="storm") == 0
    finished = sum(
        sample("haystack_pipeline_runs_total", pipeline="storm", status=status) or 0
        for status in ("ok", "error", "cancelled")
    )
    assert finished == 300
    assert sample("haystack_pipeline_runs_total", pipeline="storm", status="cancelled") > 0
    # Only the pipeline's own pool (at most 4 workers) may have been added.
    assert threading.active_count() <= threads_before + 4
