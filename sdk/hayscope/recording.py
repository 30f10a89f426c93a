"""What one pipeline run and one component execution record: a span and metric samples.

A run's span is never made current in the caller's context. Instead the run carries an OpenTelemetry
`Context` of its own (its span, and the run itself under `RUN_KEY`), which `TracedAsyncPipeline`
attaches only for the duration of each step it delegates to haystack. Component tasks that haystack
creates during a step copy that context, which is how every component span finds its own run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from hayscope import semconv
from hayscope.metrics import Metrics

RUN_KEY = otel_context.create_key("hayscope.pipeline_run")
EXECUTION_KEY = otel_context.create_key("hayscope.component_execution")


def current_run() -> PipelineRun | None:
    run = otel_context.get_value(RUN_KEY)
    return run if isinstance(run, PipelineRun) else None


def current_execution() -> ComponentExecution | None:
    execution = otel_context.get_value(EXECUTION_KEY)
    return execution if isinstance(execution, ComponentExecution) else None


def status_of(error: BaseException | None) -> str:
    if error is None:
        return semconv.STATUS_OK
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return semconv.STATUS_CANCELLED
    return semconv.STATUS_ERROR


def _exemplar(span: Span) -> dict[str, str] | None:
    span_context = span.get_span_context()
    if not span_context.trace_flags.sampled:
        return None
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


def _end_span(span: Span, status: str, error: BaseException | None) -> None:
    if span.is_recording():
        span.set_attribute(semconv.STATUS, status)
        if status == semconv.STATUS_ERROR and error is not None:
            span.set_attribute(semconv.ERROR_TYPE, semconv.error_type(error))
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


class PipelineTelemetry:
    """Everything one `TracedAsyncPipeline` records with; built on its first run."""

    def __init__(self, name: str, tracer: trace.Tracer, metrics: Metrics) -> None:
        self.name = name
        self.tracer = tracer
        self.metrics = metrics
        self.label = metrics.pipeline_names.admit(name)
        self.span_name = f"{semconv.PIPELINE_SPAN} {name}"
        self._components: dict[tuple[str, type, str], ComponentTelemetry] = {}
        self._in_flight = metrics.pipeline_runs_in_flight.labels(self.label)

    def start_run(self, attributes: Mapping[str, AttributeValue]) -> PipelineRun:
        parent = otel_context.get_current()
        span = self.tracer.start_span(self.span_name, context=parent, attributes=attributes)
        self._in_flight.inc()
        return PipelineRun(self, span, parent)

    def component(self, name: str, component_type: type, mode: str) -> ComponentTelemetry:
        key = (name, component_type, mode)
        telemetry = self._components.get(key)
        if telemetry is None:
            telemetry = self._components[key] = ComponentTelemetry(self, name, component_type, mode)
        return telemetry

    def end_run(self, span: Span, started: float, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        status = status_of(error)
        self._in_flight.dec()
        metrics = self.metrics
        metrics.pipeline_run_duration.labels(self.label, status).observe(elapsed, _exemplar(span))
        metrics.pipeline_runs.labels(self.label, status).inc()
        _end_span(span, status, error)


class ComponentTelemetry:
    """Per component and mode: the span name, static attributes and cached metric children."""

    __slots__ = ("_durations", "_labels", "attributes", "in_flight", "span_name", "tracer")

    def __init__(self, pipeline: PipelineTelemetry, name: str, component_type: type, mode: str) -> None:
        metrics = pipeline.metrics
        component_label = metrics.component_names.admit(name)
        type_label = metrics.component_types.admit(component_type.__name__)
        self.tracer = pipeline.tracer
        self.span_name = f"{semconv.COMPONENT_SPAN} {name}"
        self.attributes: dict[str, AttributeValue] = {
            semconv.COMPONENT_NAME: name,
            semconv.COMPONENT_TYPE: component_type.__name__,
            semconv.COMPONENT_EXECUTION_MODE: mode,
            semconv.PIPELINE_NAME: pipeline.name,
        }
        self.in_flight = metrics.components_in_flight.labels(pipeline.label, component_label, mode)
        self._labels = (pipeline.label, component_label, type_label, mode)
        self._durations = {
            status: metrics.component_duration.labels(*self._labels, status)
            for status in (semconv.STATUS_OK, semconv.STATUS_ERROR, semconv.STATUS_CANCELLED)
        }

    def observe(self, elapsed: float, status: str, span: Span) -> None:
        self._durations[status].observe(elapsed, _exemplar(span))


class PipelineRun:
    """One run of a pipeline: its span, its context, and how it ends."""

    __slots__ = ("_started", "context", "haystack_span_claimed", "span", "telemetry")

    def __init__(self, telemetry: PipelineTelemetry, span: Span, parent: otel_context.Context) -> None:
        self.telemetry = telemetry
        self.span = span
        self.context = otel_context.set_value(RUN_KEY, self, trace.set_span_in_context(span, parent))
        # Set once haystack's own tracer has asked for this run's pipeline span (see haystack_bridge).
        self.haystack_span_claimed = False
        self._started = time.perf_counter()

    def start_component(self, name: str, instance: Any, mode: str) -> ComponentExecution:
        component = self.telemetry.component(name, type(instance), mode)
        span = component.tracer.start_span(component.span_name, context=self.context, attributes=component.attributes)
        component.in_flight.inc()
        return ComponentExecution(component, span, self.context)

    def finish(self, error: BaseException | None = None) -> None:
        self.telemetry.end_run(self.span, self._started, error)


class ComponentExecution:
    """One execution of one component: its span (current while it runs) and its duration."""

    __slots__ = ("_component", "_started", "context", "haystack_span_claimed", "span", "thread")

    def __init__(self, component: ComponentTelemetry, span: Span, run_context: otel_context.Context) -> None:
        self._component = component
        self.span = span
        self.context = otel_context.set_value(EXECUTION_KEY, self, trace.set_span_in_context(span, run_context))
        self.haystack_span_claimed = False
        self.thread: threading.Thread | None = None
        self._started = time.perf_counter()

    def finish(self, visits: int | None, error: BaseException | None = None) -> None:
        elapsed = time.perf_counter() - self._started
        status = status_of(error)
        component = self._component
        component.in_flight.dec()
        component.observe(elapsed, status, self.span)
        span = self.span
        if span.is_recording():
            if visits is not None:
                span.set_attribute(semconv.COMPONENT_VISITS, visits)
            if self.thread is not None:
                span.set_attribute(semconv.THREAD_ID, self.thread.ident or 0)
                span.set_attribute(semconv.THREAD_NAME, self.thread.name)
        _end_span(span, status, error)
