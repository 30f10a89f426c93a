"""Parenting in every concurrent shape: many runs, interleaved streams, abandoned and closed streams."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from opentelemetry import trace

from components import AsyncAdd, Gate, SyncAdd
from hayscope.testing import TelemetryCapture

COMPONENTS = ("first", "second", "third")


def chain(capture: TelemetryCapture, name: str, delay: float = 0.0):
    pipeline = capture.pipeline(name=name)
    pipeline.add_component("first", AsyncAdd(1, delay=delay))
    pipeline.add_component("second", SyncAdd(10))
    pipeline.add_component("third", AsyncAdd(100, delay=delay))
    pipeline.connect("first.value", "second.value")
    pipeline.connect("second.value", "third.value")
    return pipeline


def fan_out_with_held_branch(capture: TelemetryCapture, name: str, gate: Gate):
    """first -> (fast, held): once `fast` has been yielded, `held` is in flight until the gate opens."""
    pipeline = capture.pipeline(name=name)
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("fast", AsyncAdd(1))
    pipeline.add_component("held", gate)
    pipeline.connect("first.value", "fast.value")
    pipeline.connect("first.value", "held.value")
    return pipeline


def traces(capture: TelemetryCapture) -> dict[int, list]:
    grouped: dict[int, list] = defaultdict(list)
    for span in capture.spans():
        grouped[span.context.trace_id].append(span)
    return grouped


def assert_one_complete_trace_per_run(capture: TelemetryCapture, runs: int, pipeline_names: set[str]) -> None:
    """Each trace: exactly one pipeline span (a root) and every component span a direct child of it."""
    grouped = traces(capture)
    assert len(grouped) == runs
    seen_pipelines = set()
    for spans in grouped.values():
        roots = [s for s in spans if s.name.startswith("haystack.pipeline.run")]
        assert len(roots) == 1, [s.name for s in spans]
        root = roots[0]
        assert root.parent is None
        seen_pipelines.add(root.attributes["haystack.pipeline.name"])
        components = [s for s in spans if s.name.startswith("haystack.component.run")]
        assert sorted(s.attributes["haystack.component.name"] for s in components) == sorted(COMPONENTS)
        assert all(s.parent.span_id == root.context.span_id for s in components)
        # Anything else is a wait made visible (queued for a worker thread, ...), under its component.
        waits = [s for s in spans if s is not root and s not in components]
        assert {s.parent.span_id for s in waits} <= {s.context.span_id for s in components}
    assert seen_pipelines == pipeline_names


async def test_sixty_concurrent_runs_on_one_pipeline_object_stay_in_their_own_traces(capture, context_errors):
    pipeline = chain(capture, "shared", delay=0.001)

    results = await asyncio.gather(*(pipeline.run_async({"first": {"value": i}}) for i in range(60)))

    assert results == [{"third": {"value": i + 111}} for i in range(60)]
    assert_one_complete_trace_per_run(capture, 60, {"shared"})
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_concurrent_runs_on_several_pipelines_stay_in_their_own_traces(capture, context_errors):
    pipelines = [chain(capture, f"p{i}", delay=0.001) for i in range(3)]

    await asyncio.gather(*(pipelines[i % 3].run_async({"first": {"value": i}}) for i in range(60)))

    assert_one_complete_trace_per_run(capture, 60, {"p0", "p1", "p2"})


async def test_streams_advanced_in_turn_from_one_task_never_leak_into_the_consumer(capture, context_errors):
    pipeline = chain(capture, "streams")
    caller = capture.tracer_provider.get_tracer("caller")
    streams = [
        pipeline.run_async_generator({"first": {"value": i}}, include_outputs_from=set(COMPONENTS)) for i in range(5)
    ]
    outputs: list[list[dict]] = [[] for _ in streams]
    live = set(range(len(streams)))
    while live:
        for index in sorted(live):
            # The consumer's own span between steps must stay the consumer's.
            with caller.start_as_current_span(f"consumer step {index}") as step:
                try:
                    outputs[index].append(await anext(streams[index]))
                except StopAsyncIteration:
                    live.discard(index)
                assert trace.get_current_span() is step
            assert trace.get_current_span() is trace.INVALID_SPAN

    for i, produced in enumerate(outputs):
        assert produced[-1] == {"first": {"value": i + 1}, "second": {"value": i + 11}, "third": {"value": i + 111}}
    # A run starts when it is first advanced: its parent is the consumer step of that first round, and
    # no later step, nor any other stream, ever becomes part of its trace.
    for spans in traces(capture).values():
        runs = [s for s in spans if s.name == "haystack.pipeline.run streams"]
        steps = [s for s in spans if s.name.startswith("consumer step")]
        if runs:
            assert len(runs) == 1 and len(steps) == 1
            assert runs[0].parent.span_id == steps[0].context.span_id
            assert len(spans) == 2 + len(COMPONENTS)


def test_streams_abandoned_after_their_first_output_end_every_span_as_cancelled(capture, context_errors):
    gate = Gate()
    pipeline = fan_out_with_held_branch(capture, "abandoned", gate)

    async def consume_first_outputs() -> list[dict]:
        streams = [pipeline.run_async_generator({"first": {"value": i}}) for i in range(4)]
        firsts = [await anext(stream) for stream in streams]
        await gate.entered.wait()  # every stream has "held" in flight now
        # Abandoned without aclose(): asyncio finalizes them when the loop shuts down, in another context.
        return firsts

    firsts = asyncio.run(consume_first_outputs())

    assert firsts == [{"fast": {"value": i + 2}} for i in range(4)]
    runs = capture.spans_named("haystack.pipeline.run abandoned")
    assert len(runs) == 4
    assert {s.attributes["hayscope.status"] for s in runs} == {"cancelled"}
    held = capture.spans_named("haystack.component.run held")
    assert len(held) == 4
    assert {s.attributes["hayscope.status"] for s in held} == {"cancelled"}
    for span in held:
        assert span.parent.span_id in {r.context.span_id for r in runs}
    assert capture.sample("haystack_pipeline_runs_in_flight", pipeline="abandoned") == 0
    assert capture.sample("haystack_components_in_flight", pipeline="abandoned", component="held", mode="async") == 0
    assert capture.sample("haystack_pipeline_runs_total", pipeline="abandoned", status="cancelled") == 4


async def test_a_closed_stream_ends_its_spans_as_cancelled(capture, context_errors):
    gate = Gate()
    pipeline = fan_out_with_held_branch(capture, "closed", gate)

    stream = pipeline.run_async_generator({"first": {"value": 0}})
    assert await anext(stream) == {"fast": {"value": 2}}
    await gate.entered.wait()
    await stream.aclose()

    (run,) = capture.spans_named("haystack.pipeline.run closed")
    (held,) = capture.spans_named("haystack.component.run held")
    assert run.attributes["hayscope.status"] == "cancelled"
    assert held.attributes["hayscope.status"] == "cancelled"
    assert held.parent.span_id == run.context.span_id
    assert run.status.is_ok and held.status.is_ok  # cancelled is not an error
    assert capture.sample("haystack_pipeline_runs_in_flight", pipeline="closed") == 0
    assert capture.sample("haystack_components_in_flight", pipeline="closed", component="held", mode="async") == 0
