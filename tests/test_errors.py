"""Failing components and cancelled runs: spans end with the right status, the pipeline raises what haystack raises."""

from __future__ import annotations

import asyncio

import pytest
from haystack import Pipeline
from haystack.core.errors import PipelineRuntimeError
from opentelemetry.trace import StatusCode

from components import AsyncAdd, AsyncFail, Gate, SyncFail, ThreadGate


def failing(build, fail_class):
    pipeline = build()
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("broken", fail_class("no model"))
    pipeline.connect("first.value", "broken.value")
    return pipeline


@pytest.mark.parametrize(
    ("fail_class", "mode", "path"),
    [(AsyncFail, "async", "run_async"), (SyncFail, "thread", "run_async"), (SyncFail, "sync", "run")],
)
async def test_a_failing_component_marks_its_span_and_the_run_as_errors(capture, fail_class, mode, path):
    traced = failing(lambda: capture.pipeline(name="failing"), fail_class)
    bare = failing(Pipeline, fail_class)

    async def outcome(pipeline):
        with pytest.raises(PipelineRuntimeError) as raised:
            if path == "run":
                pipeline.run({"first": {"value": 0}})
            else:
                await pipeline.run_async({"first": {"value": 0}})
        return raised.value

    traced_error, bare_error = await outcome(traced), await outcome(bare)

    assert type(traced_error) is type(bare_error)
    assert str(traced_error) == str(bare_error)
    assert traced_error.component_name == "broken"
    assert type(traced_error.__cause__) is ValueError
    (run,) = capture.spans_named("haystack.pipeline.run failing")
    (broken,) = capture.spans_named("haystack.component.run broken")
    (first,) = capture.spans_named("haystack.component.run first")
    assert broken.attributes["haystack.component.execution_mode"] == mode
    for span in (broken, run):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "ValueError"
        assert span.attributes["hayscope.status"] == "error"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "haystack.core.errors.PipelineRuntimeError"
        assert "no model" in event.attributes["exception.message"]
    assert first.status.status_code is StatusCode.UNSET
    assert "haystack.component.visits" not in broken.attributes
    assert capture.sample("haystack_pipeline_runs_total", pipeline="failing", status="error") == 1
    assert (
        capture.sample(
            "haystack_component_duration_seconds_count",
            pipeline="failing",
            component="broken",
            component_type=fail_class.__name__,
            mode=mode,
            status="error",
        )
        == 1
    )
    assert capture.sample("haystack_pipeline_runs_in_flight", pipeline="failing") == 0


@pytest.mark.parametrize(("gate", "mode"), [(Gate, "async"), (ThreadGate, "thread")])
async def test_a_cancelled_run_ends_every_span_as_cancelled_and_restores_the_gauges(capture, context_errors, gate, mode):
    held = gate()
    pipeline = capture.pipeline(name="cancelled")
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("held", held)
    pipeline.connect("first.value", "held.value")

    task = asyncio.create_task(pipeline.run_async({"first": {"value": 0}}))
    if mode == "thread":
        await asyncio.to_thread(held.entered.wait, 10)
    else:
        await held.entered.wait()
    in_flight = capture.sample("haystack_components_in_flight", pipeline="cancelled", component="held", mode=mode)
    runs_in_flight = capture.sample("haystack_pipeline_runs_in_flight", pipeline="cancelled")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    held.release.set()

    assert (in_flight, runs_in_flight) == (1, 1)
    (run,) = capture.spans_named("haystack.pipeline.run cancelled")
    (held_span,) = capture.spans_named("haystack.component.run held")
    assert run.attributes["hayscope.status"] == "cancelled"
    assert held_span.attributes["hayscope.status"] == "cancelled"
    assert held_span.attributes["haystack.component.execution_mode"] == mode
    assert held_span.parent.span_id == run.context.span_id
    assert capture.sample("haystack_components_in_flight", pipeline="cancelled", component="held", mode=mode) == 0
    assert capture.sample("haystack_pipeline_runs_in_flight", pipeline="cancelled") == 0
    assert capture.sample("haystack_pipeline_runs_total", pipeline="cancelled", status="cancelled") == 1
