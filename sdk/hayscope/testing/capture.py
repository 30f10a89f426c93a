"""`TelemetryCapture`: spans kept in memory and metrics in a fresh registry, for assertions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler
from prometheus_client import CollectorRegistry

from hayscope.pipeline import TracedAsyncPipeline
from hayscope.semconv import QUEUE_WAIT_SPAN, SCHEDULE_WAIT_SPAN

WAIT_SPAN_NAMES = frozenset({QUEUE_WAIT_SPAN, SCHEDULE_WAIT_SPAN})


class TelemetryCapture:
    """A tracer provider exporting to memory and a fresh `CollectorRegistry`, ready to hand to a pipeline.

    >>> capture = TelemetryCapture()
    >>> pipeline = capture.pipeline(name="rag")      # or TracedAsyncPipeline(**capture.pipeline_kwargs)
    >>> ...                                          # run it
    >>> capture.spans()                              # finished spans, in end order
    >>> capture.sample("haystack_pipeline_runs_total", pipeline="rag", status="ok")
    """

    def __init__(self, sampler: Sampler = ALWAYS_ON) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(sampler=sampler)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.registry = CollectorRegistry()

    @property
    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "registry": self.registry}

    def pipeline(self, **kwargs: Any) -> TracedAsyncPipeline:
        return TracedAsyncPipeline(**self.pipeline_kwargs, **kwargs)

    def spans(self) -> tuple[ReadableSpan, ...]:
        self.tracer_provider.force_flush()
        return self.exporter.get_finished_spans()

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def sample(self, name: str, **labels: str) -> float | None:
        """A sample's value from the registry (None when absent), e.g. `sample('x_total', pipeline='p')`."""
        return self.registry.get_sample_value(name, labels)

    def clear(self) -> None:
        self.exporter.clear()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()


def span_tree(spans: Sequence[ReadableSpan], *, waits: bool = True) -> list[str]:
    """Spans as indented lines (children under parents, siblings by name), for exact tree assertions.

    `waits=False` leaves out the spans hayscope adds for long waits ("queued for a worker thread",
    "waiting to start"), which a loaded machine may or may not produce.
    """
    if not waits:
        spans = [span for span in spans if span.name not in WAIT_SPAN_NAMES]
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {span.context.span_id for span in spans}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: (s.name, s.start_time or 0)):
            lines.append("  " * depth + span.name)
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines
