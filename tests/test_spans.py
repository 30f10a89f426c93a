"""Span trees, parents and attributes of single runs, on every run path."""

from __future__ import annotations

import threading

import pytest
from opentelemetry import trace

from components import AsyncAdd, AsyncTraced, SyncAdd, SyncTraced
from hayscope import TracedAsyncPipeline
from hayscope.testing import TelemetryCapture, span_tree


def chain(capture: TelemetryCapture, name: str = "chain"):
    pipeline = capture.pipeline(name=name)
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("second", SyncAdd(10))
    pipeline.add_component("third", AsyncAdd(100))
    pipeline.connect("first.value", "second.value")
    pipeline.connect("second.value", "third.value")
    return pipeline


def by_name(capture: TelemetryCapture):
    return {span.name: span for span in capture.spans()}


async def test_run_async_gives_one_pipeline_span_and_one_child_per_component(capture):
    result = await chain(capture).run_async({"first": {"value": 0}})

    assert result == {"third": {"value": 111}}
    assert span_tree(capture.spans(), waits=False) == [
        "haystack.pipeline.run chain",
        "  haystack.component.run first",
        "  haystack.component.run second",
        "  haystack.component.run third",
    ]
    spans = by_name(capture)
    root = spans["haystack.pipeline.run chain"]
    assert root.parent is None
    assert {s.context.trace_id for s in spans.values()} == {root.context.trace_id}
    assert dict(root.attributes) == {
        "haystack.pipeline.name": "chain",
        "haystack.pipeline.execution_mode": "async",
        "haystack.pipeline.max_runs_per_component": 100,
        "haystack.pipeline.concurrency_limit": 4,
        "hayscope.status": "ok",
    }
    first = spans["haystack.component.run first"]
    timings = {"hayscope.component.run_time", "hayscope.component.schedule_wait", "hayscope.component.loop_held"}
    assert {k: v for k, v in first.attributes.items() if k not in timings} == {
        "haystack.component.name": "first",
        "haystack.component.type": "AsyncAdd",
        "haystack.component.execution_mode": "async",
        "haystack.pipeline.name": "chain",
        "haystack.component.visits": 1,
        "hayscope.status": "ok",
    }
    assert set(first.attributes) >= timings
    second = spans["haystack.component.run second"]
    assert second.attributes["haystack.component.execution_mode"] == "thread"
    assert second.attributes["haystack.component.type"] == "SyncAdd"
    assert second.attributes["thread.name"] != threading.current_thread().name
    assert second.attributes["thread.id"] != threading.get_ident()
    # Components ran one after the other, inside the run.
    assert root.start_time <= first.start_time < first.end_time <= second.start_time
    assert second.end_time <= spans["haystack.component.run third"].start_time
    assert spans["haystack.component.run third"].end_time <= root.end_time


def test_sync_run_marks_every_component_sync(capture):
    result = chain(capture).run({"first": {"value": 0}})

    assert result == {"third": {"value": 111}}
    spans = by_name(capture)
    root = spans["haystack.pipeline.run chain"]
    assert root.attributes["haystack.pipeline.execution_mode"] == "sync"
    for name in ("first", "second", "third"):
        span = spans[f"haystack.component.run {name}"]
        assert span.parent.span_id == root.context.span_id
        assert span.attributes["haystack.component.execution_mode"] == "sync"
        assert span.attributes["thread.id"] == threading.get_ident()
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_the_pipeline_span_is_a_child_of_the_callers_span(capture):
    tracer = capture.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("request") as request:
        await chain(capture).run_async({"first": {"value": 0}})
        assert trace.get_current_span() is request

    root = by_name(capture)["haystack.pipeline.run chain"]
    assert root.parent.span_id == request.get_span_context().span_id
    assert root.context.trace_id == request.get_span_context().trace_id


@pytest.mark.parametrize("path", ["run_async", "run"])
async def test_spans_opened_inside_a_component_nest_under_its_span(capture, path):
    pipeline = capture.pipeline(name="nested")
    pipeline.add_component("on_loop", AsyncTraced(capture.tracer_provider))
    pipeline.add_component("in_thread", SyncTraced(capture.tracer_provider))
    pipeline.connect("on_loop.value", "in_thread.value")

    if path == "run":
        pipeline.run({"on_loop": {"value": 1}})
    else:
        await pipeline.run_async({"on_loop": {"value": 1}})

    assert span_tree(capture.spans(), waits=False) == [
        "haystack.pipeline.run nested",
        "  haystack.component.run in_thread",
        "    inner work",
        "  haystack.component.run on_loop",
        "    inner work",
    ]


async def test_run_async_generator_yields_haystacks_partial_outputs_inside_one_trace(capture):
    pipeline = chain(capture)

    partials = [p async for p in pipeline.run_async_generator({"first": {"value": 0}}, include_outputs_from={"first"})]

    assert partials == [{"first": {"value": 1}}, {"third": {"value": 111}}, {"first": {"value": 1}, "third": {"value": 111}}]
    assert len({span.context.trace_id for span in capture.spans()}) == 1
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_a_loaded_pipeline_is_traced_under_the_name_it_is_given(capture):
    yaml = chain(capture).dumps()
    loaded = TracedAsyncPipeline.loads(yaml, allowed_modules=["components"]).configure_telemetry(
        name="loaded", **capture.pipeline_kwargs
    )

    await loaded.run_async({"first": {"value": 0}})

    assert "haystack.pipeline.run loaded" in by_name(capture)
