"""Side by side with haystack's own OpenTelemetry tracer (opentelemetry-haystack): one span per execution."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from haystack import Pipeline, SuperComponent, component, tracing
from haystack.components.agents import Agent
from haystack.dataclasses import ChatMessage, ToolCall
from haystack.tools import create_tool_from_function
from haystack_integrations.tracing.opentelemetry import OpenTelemetryTracer
from opentelemetry import trace

from components import AsyncAdd, Gate, SyncAdd
from hayscope.testing import TelemetryCapture, span_tree


@pytest.fixture
def haystack_tracer(capture: TelemetryCapture) -> Iterator[None]:
    tracing.enable_tracing(OpenTelemetryTracer(capture.tracer_provider.get_tracer("haystack")))
    yield
    tracing.disable_tracing()


def chain(capture: TelemetryCapture):
    pipeline = capture.pipeline(name="both")
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("second", SyncAdd(10))
    pipeline.connect("first.value", "second.value")
    return pipeline


@pytest.mark.parametrize("path", ["run_async", "run"])
async def test_there_is_still_exactly_one_span_per_execution(capture, haystack_tracer, context_errors, path):
    pipeline = chain(capture)

    data = {"first": {"value": 0}}
    result = pipeline.run(data) if path == "run" else await pipeline.run_async(data)

    assert result == {"second": {"value": 11}}
    assert span_tree(capture.spans(), waits=False) == [
        "haystack.pipeline.run both",
        "  haystack.component.run first",
        "  haystack.component.run second",
    ]
    # haystack's own tags land on hayscope's spans, content tags do not (content tracing is off).
    second = capture.spans_named("haystack.component.run second")[0]
    assert second.attributes["haystack.component.fully_qualified_type"] == "components.SyncAdd"
    assert second.attributes["haystack.component.visits"] == 1
    assert "haystack.component.input" not in second.attributes
    root = capture.spans_named("haystack.pipeline.run both")[0]
    assert "haystack.pipeline.input_data" not in root.attributes
    assert root.attributes["haystack.pipeline.execution_mode"] == ("sync" if path == "run" else "async")


async def test_haystack_internal_spans_nest_under_the_component_span(capture, haystack_tracer, context_errors):
    inner = Pipeline()
    inner.add_component("inner_add", SyncAdd(5))
    pipeline = capture.pipeline(name="outer")
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("wrapped", SuperComponent(pipeline=inner))
    pipeline.connect("first.value", "wrapped.value")

    result = await pipeline.run_async({"first": {"value": 0}})

    assert result == {"wrapped": {"value": 6}}
    # The SuperComponent's sync run goes to a worker thread; haystack's spans for its inner pipeline
    # are haystack's own (unnamed), under hayscope's component span.
    assert span_tree(capture.spans(), waits=False) == [
        "haystack.pipeline.run outer",
        "  haystack.component.run first",
        "  haystack.component.run wrapped",
        "    haystack.pipeline.run",
        "      haystack.component.run",
    ]
    inner_component = capture.spans_named("haystack.component.run")[0]
    assert inner_component.attributes["haystack.component.name"] == "inner_add"


@pytest.mark.parametrize("path", ["run_async", "run"])
async def test_a_traced_pipeline_nested_in_a_component_has_one_span_per_execution(
    capture, haystack_tracer, context_errors, path
):
    inner = capture.pipeline(name="inner")
    inner.add_component("inner_add", SyncAdd(5))
    pipeline = capture.pipeline(name="outer")
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("wrapped", SuperComponent(pipeline=inner))
    pipeline.connect("first.value", "wrapped.value")

    data = {"first": {"value": 0}}
    result = pipeline.run(data) if path == "run" else await pipeline.run_async(data)

    assert result == {"wrapped": {"value": 6}}
    # The inner run's pipeline span is its own, not haystack's beside it.
    assert span_tree(capture.spans(), waits=False) == [
        "haystack.pipeline.run outer",
        "  haystack.component.run first",
        "  haystack.component.run wrapped",
        "    haystack.pipeline.run inner",
        "      haystack.component.run inner_add",
    ]


async def test_streams_leave_no_span_current_even_with_haystacks_tracer(capture, haystack_tracer, context_errors):
    gate = Gate()
    pipeline = capture.pipeline(name="streamed")
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("fast", AsyncAdd(1))
    pipeline.add_component("held", gate)
    pipeline.connect("first.value", "fast.value")
    pipeline.connect("first.value", "held.value")

    streams = [pipeline.run_async_generator({"first": {"value": i}}) for i in range(3)]
    for stream in streams:
        assert await anext(stream) == {"fast": {"value": streams.index(stream) + 2}}
        assert trace.get_current_span() is trace.INVALID_SPAN
    await gate.entered.wait()
    await asyncio.gather(*(stream.aclose() for stream in streams))

    runs = capture.spans_named("haystack.pipeline.run streamed")
    assert len(runs) == 3 and len({s.context.trace_id for s in runs}) == 3
    assert all(s.parent is None for s in runs)
    assert len(capture.spans()) == 3 * 4  # a pipeline span and one per execution: first, fast, held


@component
class ScriptedChatGenerator:
    """Stands in for an LLM: asks for the `add` tool first, then answers with the tool's result."""

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage], tools: Any = None) -> dict[str, Any]:
        last = messages[-1]
        if last.tool_call_result is None:
            return {"replies": [ChatMessage.from_assistant(tool_calls=[ToolCall("add", {"a": 2, "b": 3})])]}
        return {"replies": [ChatMessage.from_assistant(f"The sum is {last.tool_call_result.result}.")]}


def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@pytest.mark.parametrize("path", ["run_async", "run"])
async def test_agent_steps_and_tool_calls_nest_under_the_agents_span(capture, haystack_tracer, context_errors, path):
    pipeline = capture.pipeline(name="agentic")
    pipeline.add_component(
        "agent", Agent(chat_generator=ScriptedChatGenerator(), tools=[create_tool_from_function(add)])
    )
    data = {"agent": {"messages": [ChatMessage.from_user("What is 2 + 3?")]}}

    result = pipeline.run(data) if path == "run" else await pipeline.run_async(data)

    assert result["agent"]["last_message"].text == "The sum is 5."
    assert span_tree(capture.spans(), waits=False) == [
        "haystack.pipeline.run agentic",
        "  haystack.component.run agent",
        "    haystack.agent.run",
        "      haystack.agent.step",
        "        haystack.agent.step.llm",
        "        haystack.agent.step.tool",
        "      haystack.agent.step",
        "        haystack.agent.step.llm",
    ]
    spans = capture.spans()
    assert len({span.context.trace_id for span in spans}) == 1
    agent_span = capture.spans_named("haystack.component.run agent")[0]
    assert agent_span.attributes["haystack.component.execution_mode"] == ("sync" if path == "run" else "async")
    tool_span = capture.spans_named("haystack.agent.step.tool")[0]
    assert tool_span.attributes["haystack.tool.name"] == "add"
