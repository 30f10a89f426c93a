"""One span per execution when haystack's own tracer is enabled too.

haystack opens `haystack.pipeline.run` and `haystack.component.run` through its global
`haystack.tracing.tracer` from inside the very code `TracedAsyncPipeline` delegates to. With a real
tracer behind it (opentelemetry-haystack, Datadog, Langfuse) every execution would get two spans, and
haystack's pipeline span, held current across the generator's `yield`s, would leak into the consumer.

So when a real tracer is enabled, `ensure_bridge()` puts `HaystackTracerBridge` in front of it. The
bridge passes every call through unchanged, except the one pipeline span and the one component span
that haystack opens for a run or execution that hayscope already traces: for those it hands back
hayscope's own span, so haystack's tags land on it and nothing else is opened or made current.
Spans haystack opens inside a component (agent steps, tool calls, nested pipelines) pass through and
nest under the component span, which is current there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from haystack import tracing
from haystack.tracing import utils as tracing_utils
from haystack.tracing.tracer import NullTracer
from opentelemetry.trace import Span as OtelSpan

from hayscope import semconv
from hayscope.recording import current_execution, current_run


class _HayscopeSpan(tracing.Span):
    """haystack's view of a span hayscope opened; content tags only through hayscope's content capture.

    hayscope records content itself (recording.py), so haystack's content tags are dropped here;
    haystack's other tags land as they are.
    """

    __slots__ = ("_span",)

    def __init__(self, span: OtelSpan) -> None:
        self._span = span

    def set_tag(self, key: str, value: Any) -> None:
        if key in semconv.HAYSTACK_CONTENT_TAGS:
            return
        if self._span.is_recording():
            self._span.set_attribute(key, tracing_utils.coerce_tag_value(value))

    def raw_span(self) -> Any:
        return self._span

    def get_correlation_data_for_logs(self) -> dict[str, Any]:
        span_context = self._span.get_span_context()
        return {"trace_id": span_context.trace_id, "span_id": span_context.span_id}


def _claim(operation_name: str) -> OtelSpan | None:
    """hayscope's span for this haystack span, if hayscope traces it and nobody took it yet."""
    if operation_name == semconv.COMPONENT_SPAN:
        execution = current_execution()
        if execution is not None and not execution.haystack_span_claimed:
            execution.haystack_span_claimed = True
            return execution.span
    elif operation_name == semconv.PIPELINE_SPAN:
        run = current_run()
        if run is not None and not run.haystack_span_claimed and current_execution() is None:
            run.haystack_span_claimed = True
            return run.span
    return None


class HaystackTracerBridge(tracing.Tracer):
    """A pass-through wrapper of haystack's active tracer that yields hayscope's spans where they exist."""

    def __init__(self, wrapped: tracing.Tracer) -> None:
        self.wrapped = wrapped

    @contextlib.contextmanager
    def trace(
        self, operation_name: str, tags: dict[str, Any] | None = None, parent_span: tracing.Span | None = None
    ) -> Iterator[tracing.Span]:
        own = _claim(operation_name)
        if own is None:
            with self.wrapped.trace(operation_name, tags=tags, parent_span=parent_span) as span:
                yield span
            return
        span = _HayscopeSpan(own)
        if tags:
            span.set_tags(tags)
        yield span

    def current_span(self) -> tracing.Span | None:
        return self.wrapped.current_span()


def ensure_bridge() -> None:
    """Put the bridge in front of haystack's tracer when a real one is enabled (cheap when not)."""
    actual = tracing.tracer.actual_tracer
    if isinstance(actual, (NullTracer, HaystackTracerBridge)):
        return
    tracing.tracer.actual_tracer = HaystackTracerBridge(actual)
