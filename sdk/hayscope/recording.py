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
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from prometheus_client import Histogram

from hayscope import genai, semconv
from hayscope.content import content_capture, remember_secrets, scrub, secrets_of
from hayscope.executor import ExecutorState
from hayscope.metrics import Metrics

RUN_KEY = otel_context.create_key("hayscope.pipeline_run")
# A wait longer than this gets a child span of its own, to be seen in a waterfall.
WAIT_SPAN_THRESHOLD = 0.05

STATUSES = (semconv.STATUS_OK, semconv.STATUS_ERROR, semconv.STATUS_CANCELLED)

_loop_logger = structlog.get_logger("hayscope.loop")
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


_failure_logger = structlog.get_logger("hayscope.telemetry")
_FAILURE_LOG_INTERVAL = 60.0
_last_failure_log: dict[str, float] = {}


def telemetry_failed(action: str, error: Exception) -> None:
    """A span processor, sampler or exporter plug-in raised: the run goes on; logged once a minute per action."""
    now = time.monotonic()
    if now - _last_failure_log.get(action, -_FAILURE_LOG_INTERVAL) >= _FAILURE_LOG_INTERVAL:
        _last_failure_log[action] = now
        _failure_logger.warning("telemetry failed; the pipeline is not affected", action=action, error=repr(error))


def _start_span(
    tracer: trace.Tracer,
    name: str,
    context: otel_context.Context,
    attributes: Mapping[str, AttributeValue] | None = None,
    start_time: int | None = None,
) -> Span:
    try:
        return tracer.start_span(name, context=context, attributes=attributes, start_time=start_time)
    except Exception as error:  # a plug-in failed: the execution goes on without a span
        telemetry_failed("start span", error)
        return trace.INVALID_SPAN


def _end_span(
    span: Span, status: str, error: BaseException | None, attributes: dict[str, AttributeValue] | None = None
) -> None:
    try:
        _finish_span(span, status, error, attributes)
    except Exception as failure:  # a span processor's on_end, or a sampler's attribute hook, failed
        telemetry_failed("end span", failure)


def _finish_span(
    span: Span, status: str, error: BaseException | None, attributes: dict[str, AttributeValue] | None
) -> None:
    if span.is_recording():
        attributes = attributes if attributes is not None else {}
        attributes[semconv.STATUS] = status
        failed = status == semconv.STATUS_ERROR and error is not None
        if failed:
            attributes[semconv.ERROR_TYPE] = semconv.error_type(error)  # type: ignore[arg-type]
        span.set_attributes(attributes)
        if failed:
            # Messages and tracebacks can quote a credential (a URL with a token, a header): scrubbed.
            message = scrub(str(error))
            span.record_exception(
                error,  # type: ignore[arg-type]
                {"exception.message": message, "exception.stacktrace": scrub(_traceback(error))},
            )
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"))
    span.end()


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _content_attributes(key: str, value: Any) -> dict[str, AttributeValue]:
    """`{key: text}` when content capture is on and lets the value out, else nothing."""
    text = content_capture().text(key, value)
    return {} if text is None else {key: text}


class PipelineTelemetry:
    """Everything one `TracedAsyncPipeline` records with; built on its first run."""

    def __init__(
        self, name: str, tracer: trace.Tracer, metrics: Metrics, executor: Callable[[], ExecutorState]
    ) -> None:
        self.name = name
        self._executor_factory = executor
        self._executor: ExecutorState | None = None
        self.tracer = tracer
        self.metrics = metrics
        self.label = metrics.pipeline_names.admit(name)
        self.span_name = f"{semconv.PIPELINE_SPAN} {name}"
        self._components: dict[tuple[str, type, str], ComponentTelemetry] = {}
        self._in_flight = metrics.pipeline_runs_in_flight.labels(self.label)
        for status in STATUSES:  # error and cancelled exist at zero from the start, for ratio queries
            metrics.pipeline_runs.labels(self.label, status)
            metrics.pipeline_run_duration.labels(self.label, status)

    @property
    def executor(self) -> ExecutorState:
        """Where this pipeline's sync components run on the async paths; made on first use."""
        if self._executor is None:
            self._executor = self._executor_factory()
        return self._executor

    def start_run(self, attributes: Mapping[str, AttributeValue], data: Any = None) -> PipelineRun:
        parent = otel_context.get_current()
        span = _start_span(self.tracer, self.span_name, parent, attributes)
        if data is not None and content_capture().enabled and span.is_recording():
            span.set_attributes(_content_attributes(semconv.PIPELINE_INPUT_DATA, data))
        self._in_flight.inc()
        return PipelineRun(self, span, parent)

    def component(self, name: str, instance: Any, mode: str) -> ComponentTelemetry:
        key = (name, type(instance), mode)
        telemetry = self._components.get(key)
        if telemetry is None:
            telemetry = self._components[key] = ComponentTelemetry(self, name, instance, mode)
        return telemetry

    def end_run(self, span: Span, started: float, error: BaseException | None, outputs: Any = None) -> None:
        elapsed = time.perf_counter() - started
        status = status_of(error)
        self._in_flight.dec()
        metrics = self.metrics
        metrics.pipeline_run_duration.labels(self.label, status).observe(elapsed, _exemplar(span))
        metrics.pipeline_runs.labels(self.label, status).inc()
        attributes: dict[str, AttributeValue] = {}
        if outputs is not None and content_capture().enabled and span.is_recording():
            attributes = _content_attributes(semconv.PIPELINE_OUTPUT_DATA, outputs)
        _end_span(span, status, error, attributes)


class ComponentTelemetry:
    """Per component and mode: the span name, static attributes and cached metric children."""

    __slots__ = (
        "_children",
        "_labels",
        "attributes",
        "blocked",
        "genai",
        "genai_duration",
        "in_flight",
        "metrics",
        "span_name",
        "tracer",
    )

    def __init__(self, pipeline: PipelineTelemetry, name: str, instance: Any, mode: str) -> None:
        component_type = type(instance)
        metrics = self.metrics = pipeline.metrics
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
        remember_secrets(secrets_of(instance))  # so that content capture can never export them
        # Generators, embedders and retrievers also get the GenAI attributes and metrics.
        self.genai = genai.operation_of(instance)
        self.genai_duration: Histogram | None = None
        if self.genai is not None:
            self.attributes.update(self.genai.attributes)
            self.genai_duration = metrics.genai_operation_duration.labels(
                self.genai.operation, self.genai.provider, metrics.genai_models.admit(self.genai.request_model)
            )
        self.in_flight = metrics.components_in_flight.labels(pipeline.label, component_label, mode)
        self.blocked = metrics.event_loop_blocked.labels(pipeline.label, component_label)
        self._labels = (pipeline.label, component_label, type_label, mode)
        self._children: dict[tuple[Histogram, str], Histogram] = {}
        for status in STATUSES:
            self.histogram(metrics.component_duration, status)  # error and cancelled exist at zero from the start

    def histogram(self, metric: Histogram, status: str) -> Histogram:
        child = self._children.get((metric, status))
        if child is None:
            child = self._children[(metric, status)] = metric.labels(*self._labels, status)
        return child


class PipelineRun:
    """One run of a pipeline: its span, its context, and how it ends."""

    __slots__ = ("_started", "context", "haystack_span_claimed", "scheduled", "span", "telemetry")

    def __init__(self, telemetry: PipelineTelemetry, span: Span, parent: otel_context.Context) -> None:
        self.telemetry = telemetry
        self.span = span
        self.context = otel_context.set_value(RUN_KEY, self, trace.set_span_in_context(span, parent))
        # Set once haystack's own tracer has asked for this run's pipeline span (see haystack_bridge).
        self.haystack_span_claimed = False
        # component name -> (perf_counter, time_ns) when haystack scheduled it; popped when it starts
        self.scheduled: dict[str, tuple[float, int]] = {}
        self._started = time.perf_counter()

    def start_component(
        self, name: str, instance: Any, mode: str, inputs: Mapping[str, Any] | None = None
    ) -> ComponentExecution:
        """Open the execution's span; it starts when the pipeline scheduled the component, if it did."""
        component = self.telemetry.component(name, instance, mode)
        now = time.perf_counter()
        scheduled = self.scheduled.pop(name, None)
        start_ns = schedule_wait = None
        if scheduled is not None:
            scheduled_at, start_ns = scheduled
            schedule_wait = now - scheduled_at
        if self.span.is_recording():
            span = _start_span(component.tracer, component.span_name, self.context, component.attributes, start_ns)
            capture = content_capture()
            if capture.enabled and inputs is not None:
                span.set_attributes(_content_attributes(semconv.COMPONENT_INPUT, inputs))
                if component.genai is not None:
                    span.set_attributes(genai.input_attributes(component.genai, inputs, capture))
        else:
            # An unsampled run's executions are not sampled either: they share its non-recording
            # span instead of asking the sampler again (most of what an unsampled run would cost).
            span = self.span
        component.in_flight.inc()
        execution = ComponentExecution(component, span, self.context, scheduled[0] if scheduled else now, schedule_wait)
        if start_ns is not None and schedule_wait is not None and schedule_wait > WAIT_SPAN_THRESHOLD:
            execution.wait_span(semconv.SCHEDULE_WAIT_SPAN, start_ns, start_ns + int(schedule_wait * 1e9))
        return execution

    def scheduled_now(self, name: str) -> None:
        """The pipeline has just decided to run `name` (haystack's _schedule_component)."""
        self.scheduled[name] = (time.perf_counter(), time.time_ns())

    def finish(self, error: BaseException | None = None, outputs: Any = None) -> None:
        self.telemetry.end_run(self.span, self._started, error, outputs)


class ComponentExecution:
    """One execution of one component: its span (current while it runs) and where its time went.

    The pipeline fills in what its mode lets it measure (all in seconds): `schedule_wait` (async
    paths), `queue_wait` and `run_time` (thread mode), `loop_held` (async mode).
    """

    __slots__ = (
        "_component",
        "_started",
        "context",
        "haystack_span_claimed",
        "loop_held",
        "queue_wait",
        "run_time",
        "schedule_wait",
        "span",
        "stall_frames",
        "thread",
    )

    def __init__(
        self,
        component: ComponentTelemetry,
        span: Span,
        run_context: otel_context.Context,
        started: float,
        schedule_wait: float | None,
    ) -> None:
        self._component = component
        self.span = span
        self.context = otel_context.set_value(EXECUTION_KEY, self, trace.set_span_in_context(span, run_context))
        self.haystack_span_claimed = False
        self.thread: threading.Thread | None = None
        self._started = started
        self.schedule_wait = schedule_wait
        self.queue_wait: float | None = None
        self.run_time: float | None = None
        self.loop_held = 0.0
        self.stall_frames: list[str] | None = None  # set by the loop watchdog when it caught this execution

    def exemplar(self) -> dict[str, str] | None:
        return _exemplar(self.span)

    def wait_span(self, name: str, start_ns: int, end_ns: int) -> None:
        """A child span covering a wait, so that it shows as a named bar in a waterfall."""
        if self.span.is_recording():
            span = _start_span(self._component.tracer, name, self.context, start_time=start_ns)
            try:
                span.end(end_time=end_ns)
            except Exception as error:
                telemetry_failed("end span", error)

    def blocked_loop(self, seconds: float) -> None:
        """This execution's code held the event loop for `seconds` in one step (called on the loop)."""
        self._component.blocked.inc(seconds)
        frames = self.stall_frames or []
        self.stall_frames = None
        if self.span.is_recording():
            self.span.add_event(
                semconv.EVENT_LOOP_BLOCKED_EVENT,
                {semconv.EVENT_LOOP_BLOCKED_SECONDS: seconds, semconv.EVENT_LOOP_BLOCKED_FRAMES: frames},
            )
        attributes = self._component.attributes
        _loop_logger.warning(
            "event loop blocked",
            pipeline=attributes[semconv.PIPELINE_NAME],
            component=attributes[semconv.COMPONENT_NAME],
            blocked_seconds=round(seconds, 6),
            frames=frames,
        )

    def finish(
        self, visits: int | None, error: BaseException | None = None, outputs: Mapping[str, Any] | None = None
    ) -> None:
        elapsed = time.perf_counter() - self._started
        status = status_of(error)
        component = self._component
        metrics = component.metrics
        component.in_flight.dec()
        run_time = self.run_time if self.run_time is not None else elapsed - (self.schedule_wait or 0.0)
        # (histogram, span attribute, seconds) for each part of the time this mode lets us see
        parts: list[tuple[Histogram, str, float]] = [(metrics.component_run_time, semconv.RUN_TIME, run_time)]
        if self.schedule_wait is not None:
            parts.append((metrics.component_schedule_wait, semconv.SCHEDULE_WAIT, self.schedule_wait))
        if self.queue_wait is not None:
            parts.append((metrics.component_queue_wait, semconv.QUEUE_WAIT, self.queue_wait))
        if component.attributes[semconv.COMPONENT_EXECUTION_MODE] == semconv.MODE_ASYNC:
            parts.append((metrics.component_loop_held, semconv.LOOP_HELD, self.loop_held))
        exemplar = _exemplar(self.span)
        component.histogram(metrics.component_duration, status).observe(elapsed, exemplar)
        for histogram, _key, seconds in parts:
            component.histogram(histogram, status).observe(seconds, exemplar)
        attributes: dict[str, AttributeValue] = {}
        if self.span.is_recording():
            attributes = {key: seconds for _histogram, key, seconds in parts}
            if visits is not None:
                attributes[semconv.COMPONENT_VISITS] = visits
            if self.thread is not None:
                attributes[semconv.THREAD_ID] = self.thread.ident or 0
                attributes[semconv.THREAD_NAME] = self.thread.name
        if component.genai is not None:
            attributes.update(self._record_genai(component, elapsed, exemplar, outputs))
        if outputs is not None and content_capture().enabled and self.span.is_recording():
            attributes.update(_content_attributes(semconv.COMPONENT_OUTPUT, outputs))
        _end_span(self.span, status, error, attributes)

    def _record_genai(
        self,
        component: ComponentTelemetry,
        elapsed: float,
        exemplar: dict[str, str] | None,
        outputs: Mapping[str, Any] | None,
    ) -> dict[str, AttributeValue]:
        operation = component.genai
        assert operation is not None and component.genai_duration is not None
        component.genai_duration.observe(elapsed, exemplar)
        if not isinstance(outputs, Mapping):
            return {}
        try:
            result = genai.result_of(operation, outputs, content_capture())
        except Exception:  # odd outputs of a third-party component must never fail the run
            return {}
        metrics = component.metrics
        model = metrics.genai_models.admit(operation.request_model)
        for token_type, count in ((genai.TOKEN_INPUT, result.input_tokens), (genai.TOKEN_OUTPUT, result.output_tokens)):
            if count is not None:
                metrics.genai_token_usage.labels(operation.operation, model, token_type).observe(count, exemplar)
        return result.attributes
