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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue
from prometheus_client import Histogram

from hayscope import active_context, genai, semconv
from hayscope.active_context import SPAN_KEY
from hayscope.content import content_capture, remember_secrets, scrub, secrets_of
from hayscope.executor import ExecutorState, loop_default_state
from hayscope.gc_pauses import GcPauses
from hayscope.metrics import GC_COMPONENT, Metrics, SampleRecord, exemplar_labels_for
from hayscope.spans import SpanStarter, plain_values, set_trusted_attributes, span_context_fields
from hayscope.timing import NO_INNER_BLOCKING

RUN_KEY = otel_context.create_key("hayscope.pipeline_run")
# A wait longer than this gets a child span of its own, to be seen in a waterfall.
WAIT_SPAN_THRESHOLD = 0.05

# What a pipeline without an executor of its own runs its sync components in
_LOOP_DEFAULT = object()

STATUSES = (semconv.STATUS_OK, semconv.STATUS_ERROR, semconv.STATUS_CANCELLED)

_loop_logger = structlog.get_logger("hayscope.loop")
EXECUTION_KEY = otel_context.create_key("hayscope.component_execution")
# The context of a run or execution that has ended: nothing is attached in it any more.
_ENDED = otel_context.Context()


def current_run() -> PipelineRun | None:
    """The run whose context is current (only hayscope sets a value under RUN_KEY)."""
    return active_context.get_current().get(RUN_KEY)  # type: ignore[return-value]


def current_execution() -> ComponentExecution | None:
    """The component execution whose context is current (only hayscope sets EXECUTION_KEY)."""
    return active_context.get_current().get(EXECUTION_KEY)  # type: ignore[return-value]


def status_of(error: BaseException | None) -> str:
    if error is None:
        return semconv.STATUS_OK
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return semconv.STATUS_CANCELLED
    return semconv.STATUS_ERROR


# The trace and span ids of a sampled span: the exemplar of the samples its execution or run records.
ExemplarIds = tuple[int, int]


def _sampled(span: Span) -> ExemplarIds | None:
    """The span's trace and span ids if it is sampled."""
    trace_id, span_id, _remote, flags, _state, _valid = span_context_fields(span.get_span_context())
    return (trace_id, span_id) if flags & TraceFlags.SAMPLED else None


def _record(kind: int, amounts: Sequence[float], sampled: ExemplarIds | None) -> SampleRecord:
    """A buffered sample record; the exemplar's timestamp is taken now, as observe() takes it."""
    if sampled is None:
        return (kind, 0, 0, 0.0, *amounts)
    return (kind, *sampled, time.time(), *amounts)


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
    spans: SpanStarter,
    name: str,
    context: otel_context.Context,
    parent: SpanContext | None,
    attributes: Mapping[str, AttributeValue],
    start_time: int | None = None,
    plain: bool | None = None,
) -> Span:
    try:
        return spans.start(name, context, parent, attributes, start_time, plain)
    except Exception as error:  # a plug-in failed: the execution goes on without a span
        telemetry_failed("start span", error)
        return trace.INVALID_SPAN


def _end_span(
    span: Span,
    status: str,
    error: BaseException | None,
    attributes: dict[str, AttributeValue] | None = None,
    other_attributes: Mapping[str, AttributeValue] | None = None,
) -> None:
    """Ends `span` with its status; `attributes` are hayscope's own (plain values by construction),
    `other_attributes` anything else (content, GenAI results), cleaned by the SDK."""
    try:
        if span.is_recording():
            attributes = attributes if attributes is not None else {}
            attributes[semconv.STATUS] = status
            failed = status == semconv.STATUS_ERROR and error is not None
            if failed:
                attributes[semconv.ERROR_TYPE] = semconv.error_type(error)  # type: ignore[arg-type]
            set_trusted_attributes(span, attributes)
            if other_attributes:
                span.set_attributes(other_attributes)
            if failed:
                # Messages and tracebacks can quote a credential (a URL with a token, a header): scrubbed.
                message = scrub(str(error))
                span.record_exception(
                    error,  # type: ignore[arg-type]
                    {"exception.message": message, "exception.stacktrace": scrub(_traceback(error))},
                )
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"))
        span.end()
    except Exception as failure:  # a span processor's on_end, or a sampler's attribute hook, failed
        telemetry_failed("end span", failure)


def _capture_inputs(span: Span, component: ComponentTelemetry, inputs: Mapping[str, Any], capture: Any) -> None:
    """The execution's inputs on its span (content capture on); odd inputs never fail the run."""
    try:
        span.set_attributes(_content_attributes(semconv.COMPONENT_INPUT, inputs))
        if component.genai is not None:
            span.set_attributes(genai.input_attributes(component.genai, inputs, capture))
    except Exception as error:  # e.g. a message whose str() raises
        telemetry_failed("capture inputs", error)


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _content_attributes(key: str, value: Any) -> dict[str, AttributeValue]:
    """`{key: text}` when content capture is on and lets the value out, else nothing."""
    text = content_capture().text(key, value)
    return {} if text is None else {key: text}


class PipelineTelemetry:
    """Everything one `TracedAsyncPipeline` records with; built on its first run."""

    def __init__(
        self,
        name: str,
        tracer: trace.Tracer,
        metrics: Metrics,
        executor: Callable[[], ExecutorState | None],
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.name = name
        self.tracer_provider = tracer_provider  # where `tracer` came from
        self._executor_factory = executor
        self._executor: Any = None  # an ExecutorState, or _LOOP_DEFAULT
        self.spans = SpanStarter(tracer)
        self.metrics = metrics
        self.label = metrics.pipeline_names.admit(name)
        self.span_name = f"{semconv.PIPELINE_SPAN} {name}"
        # (name, mode) -> the telemetry of the instance last run under that name
        self.components: dict[tuple[str, str], ComponentTelemetry] = {}
        self.buffer = metrics.buffer
        in_flight = metrics.pipeline_runs_in_flight.labels(self.label)
        self._started_record: SampleRecord = _record(self.buffer.kind((), ((in_flight, 1),)), (), None)
        # status -> the kind of record a finished run makes: its duration, one run, one less in flight
        self._ended: dict[str, int] = {}
        # at zero from the start, as each component's: rate() and increase() miss a series' first sample
        metrics.event_loop_blocked.labels(self.label, GC_COMPONENT)
        for status in STATUSES:  # error and cancelled exist at zero from the start, for ratio queries
            runs = metrics.pipeline_runs.labels(self.label, status)
            duration = metrics.pipeline_run_duration.labels(self.label, status)
            self._ended[status] = self.buffer.kind((duration,), ((runs, 1), (in_flight, -1)))

    @property
    def executor(self) -> ExecutorState:
        """Where this pipeline's sync components run on the async paths: its own pool or yours (made
        on first use), or else the running loop's default executor, as haystack would use."""
        if self._executor is None:
            state = self._executor_factory()
            self.metrics.executors.report(state)  # so that this registry exports its gauges
            self._executor = state or _LOOP_DEFAULT
        return loop_default_state() if self._executor is _LOOP_DEFAULT else self._executor

    def start_run(
        self, attributes: Mapping[str, AttributeValue], data: Any = None, *, schedule_waits: bool = True
    ) -> PipelineRun:
        parent = active_context.get_current()
        span = _start_span(self.spans, self.span_name, parent, None, attributes)
        if data is not None and content_capture().enabled and span.is_recording():
            span.set_attributes(_content_attributes(semconv.PIPELINE_INPUT_DATA, data))
        self.buffer.add(self._started_record)
        return PipelineRun(self, span, parent, schedule_waits)

    def component(self, name: str, instance: Any, mode: str) -> ComponentTelemetry:
        """The telemetry of `instance` under `name`: made anew when another instance took the name
        (a component removed and added again), whose model, server and secrets may differ."""
        key = (name, mode)
        telemetry = self.components.get(key)
        if telemetry is None or telemetry.instance is not instance:
            telemetry = self.components[key] = ComponentTelemetry(self, name, instance, mode)
        return telemetry

    def end_run(self, span: Span, started: float, error: BaseException | None, outputs: Any = None) -> None:
        elapsed = time.perf_counter() - started
        status = status_of(error)
        self.buffer.add(_record(self._ended[status], (elapsed,), _sampled(span)))
        content: dict[str, AttributeValue] = {}
        if outputs is not None and content_capture().enabled and span.is_recording():
            content = _content_attributes(semconv.PIPELINE_OUTPUT_DATA, outputs)
        _end_span(span, status, error, None, content)


class ComponentTelemetry:
    """Per component and mode: the span name, static attributes and cached metric children."""

    __slots__ = (
        "_children",
        "_labels",
        "append",
        "attributes",
        "blocked",
        "buffer",
        "ended",
        "genai",
        "genai_duration",
        "instance",
        "layouts",
        "metrics",
        "on_loop",
        "plain_attributes",
        "span_name",
        "spans",
        "started_record",
    )

    def __init__(self, pipeline: PipelineTelemetry, name: str, instance: Any, mode: str) -> None:
        component_type = type(instance)
        self.instance = instance
        metrics = self.metrics = pipeline.metrics
        component_label = metrics.component_names.admit(name)
        type_label = metrics.component_types.admit(component_type.__name__)
        self.spans = pipeline.spans
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
        self.plain_attributes = plain_values(self.attributes)
        in_flight = metrics.components_in_flight.labels(pipeline.label, component_label, mode)
        self.buffer = metrics.buffer
        self.append = metrics.buffer.append
        self.started_record: SampleRecord = _record(self.buffer.kind((), ((in_flight, 1),)), (), None)
        self.ended: tuple[tuple[Any, float], ...] = ((in_flight, -1),)
        self.on_loop = mode == semconv.MODE_ASYNC
        self.blocked = metrics.event_loop_blocked.labels(pipeline.label, component_label)
        self._labels = (pipeline.label, component_label, type_label, mode)
        self._children: dict[tuple[Histogram, str], Histogram] = {}
        self.layouts: dict[tuple[str, bool, bool], tuple[int, tuple[str, ...]]] = {}
        for status in STATUSES:
            self.histogram(metrics.component_duration, status)  # error and cancelled exist at zero from the start

    def histogram(self, metric: Histogram, status: str) -> Histogram:
        child = self._children.get((metric, status))
        if child is None:
            child = self._children[(metric, status)] = metric.labels(*self._labels, status)
        return child

    @property
    def pipeline_label(self) -> str:
        return self._labels[0]

    def layout(self, status: str, schedule_wait: bool, queue_wait: bool) -> tuple[int, tuple[str, ...]]:
        """The kind of sample record one execution makes: the histograms it observes, in the order
        `ComponentExecution.finish` lists its seconds (run time, the waits it has, loop held, duration,
        GenAI duration), and one less in flight; and the span attributes of the parts (run time to
        loop held). Made on first use, as observe() made the children."""
        key = (status, schedule_wait, queue_wait)
        layout = self.layouts.get(key)
        if layout is None:
            metrics = self.metrics
            parts = [(metrics.component_run_time, semconv.RUN_TIME)]
            if schedule_wait:
                parts.append((metrics.component_schedule_wait, semconv.SCHEDULE_WAIT))
            if queue_wait:
                parts.append((metrics.component_queue_wait, semconv.QUEUE_WAIT))
            if self.on_loop:
                parts.append((metrics.component_loop_held, semconv.LOOP_HELD))
            histograms = [self.histogram(metric, status) for metric, _key in parts]
            histograms.append(self.histogram(metrics.component_duration, status))
            if self.genai_duration is not None:
                histograms.append(self.genai_duration)
            kind = self.buffer.kind(tuple(histograms), self.ended)
            layout = self.layouts[key] = (kind, tuple(key for _metric, key in parts))
        return layout


class PipelineRun:
    """One run of a pipeline: its span, its context, and how it ends."""

    __slots__ = (
        "_started",
        "context",
        "haystack_span_claimed",
        "recording",
        "sampled",
        "scheduled",
        "span",
        "span_context",
        "telemetry",
    )

    def __init__(
        self, telemetry: PipelineTelemetry, span: Span, parent: otel_context.Context, schedule_waits: bool = True
    ) -> None:
        self.telemetry = telemetry
        self.span = span
        self.recording = span.is_recording()  # sampled or not, decided once for the whole run
        self.span_context = span.get_span_context()  # the parent of its executions' spans
        self.sampled = _sampled(span)
        # (A run started inside a component, a nested pipeline's, is not that component's execution.)
        self.context = Context({**parent, SPAN_KEY: span, RUN_KEY: self, EXECUTION_KEY: None})
        # Set once haystack's own tracer has asked for this run's pipeline span (see haystack_bridge).
        self.haystack_span_claimed = False
        # component name -> perf_counter when haystack chose to run it, popped when it starts; None:
        # this run measures no schedule waits
        self.scheduled: dict[str, float] | None = {} if schedule_waits else None
        self._started = time.perf_counter()

    def start_component(
        self, name: str, instance: Any, mode: str, inputs: Mapping[str, Any] | None = None
    ) -> ComponentExecution:
        """Open the execution's span; it starts when the pipeline scheduled the component, if it did."""
        # (This and ComponentExecution.finish run for every execution: they inline their lookups.)
        component = self.telemetry.components.get((name, mode))
        if component is None or component.instance is not instance:
            component = self.telemetry.component(name, instance, mode)
        now = time.perf_counter()
        scheduled = self.scheduled
        scheduled_at = None if scheduled is None else scheduled.pop(name, None)
        schedule_wait = None if scheduled_at is None else now - scheduled_at
        start_ns = None
        if self.recording:
            if schedule_wait is not None:  # the span starts when the component was scheduled
                start_ns = time.time_ns() - int(schedule_wait * 1e9)
            span = _start_span(
                component.spans,
                component.span_name,
                self.context,
                self.span_context,
                component.attributes,
                start_ns,
                component.plain_attributes,
            )
            capture = content_capture()
            if capture.enabled and inputs is not None:
                _capture_inputs(span, component, inputs, capture)
            recording, sampled = span.is_recording(), _sampled(span)
        else:
            # An unsampled run's executions are not sampled either: they share its non-recording
            # span instead of asking the sampler again.
            span, recording, sampled = self.span, False, self.sampled
        component.append(component.started_record)
        started = now if scheduled_at is None else scheduled_at
        execution = ComponentExecution(component, span, recording, self.context, sampled, started, schedule_wait)
        if start_ns is not None and schedule_wait is not None and schedule_wait > WAIT_SPAN_THRESHOLD:
            execution.wait_span(semconv.SCHEDULE_WAIT_SPAN, start_ns, start_ns + int(schedule_wait * 1e9))
        return execution

    def scheduled_now(self, name: str) -> None:
        """The pipeline has just decided to run `name`: its schedule wait starts, unless it has already."""
        scheduled = self.scheduled
        if scheduled is not None and name not in scheduled:
            scheduled[name] = time.perf_counter()

    def finish(self, error: BaseException | None = None, outputs: Any = None) -> None:
        self.telemetry.end_run(self.span, self._started, error, outputs)
        self.context = _ENDED  # see ComponentExecution.finish


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
        "inner_blocking",
        "loop_held",
        "queue_wait",
        "recording",
        "run_time",
        "sampled",
        "schedule_wait",
        "span",
        "stall_frames",
        "step_started",
        "thread",
        "worker_started",
    )

    def __init__(
        self,
        component: ComponentTelemetry,
        span: Span,
        recording: bool,
        run_context: otel_context.Context,
        sampled: ExemplarIds | None,
        started: float,
        schedule_wait: float | None,
    ) -> None:
        """`recording`: `span.is_recording()`; `run_context`: the run's context; `sampled`: see `_sampled`."""
        self._component = component
        self.span = span
        self.recording = recording
        self.sampled = sampled
        self.context = Context({**run_context, SPAN_KEY: span, EXECUTION_KEY: self})
        self.haystack_span_claimed = False
        self.thread: threading.Thread | None = None
        self.worker_started: float | None = None  # perf_counter when a worker thread took it (thread mode)
        self._started = started
        self.schedule_wait = schedule_wait
        self.queue_wait: float | None = None
        self.run_time: float | None = None
        self.loop_held = 0.0
        self.stall_frames: list[str] | None = None  # set by the loop watchdog when it caught this execution
        self.step_started = 0.0  # perf_counter when its current step on the loop began (see timing.py)
        self.inner_blocking = NO_INNER_BLOCKING

    def exemplar(self) -> dict[str, str] | None:
        return None if self.sampled is None else exemplar_labels_for(*self.sampled)

    def wait_span(self, name: str, start_ns: int, end_ns: int) -> None:
        """A child span covering a wait, so that it shows as a named bar in a waterfall."""
        if self.span.is_recording():
            span = _start_span(self._component.spans, name, self.context, self.span.get_span_context(), {}, start_ns)
            try:
                span.end(end_time=end_ns)
            except Exception as error:
                telemetry_failed("end span", error)

    def blocked_loop(self, seconds: float) -> None:
        """This execution's code held the event loop for `seconds` in one step (called on the loop)."""
        frames = self.stall_frames or []
        self.stall_frames = None
        self._report_block(
            self._component.blocked,
            semconv.EVENT_LOOP_BLOCKED_EVENT,
            seconds,
            {semconv.EVENT_LOOP_BLOCKED_FRAMES: frames},
            "event loop blocked",
            frames=frames,
        )

    def blocked_by_gc(self, seconds: float) -> None:
        """Garbage collection stopped the loop for `seconds` during one of this execution's steps."""
        component = self._component
        generation = GcPauses.last_generation
        self._report_block(
            component.metrics.event_loop_blocked.labels(component.pipeline_label, GC_COMPONENT),
            semconv.EVENT_LOOP_BLOCKED_BY_GC_EVENT,
            seconds,
            {semconv.GC_GENERATION: generation},
            "event loop blocked by garbage collection",
            generation=generation,
        )

    def _report_block(
        self,
        counter: Any,
        event: str,
        seconds: float,
        event_facts: dict[str, AttributeValue],
        message: str,
        **log_facts: Any,
    ) -> None:
        """Counts a stall seen in one of this execution's steps; a span event and a warning say so."""
        counter.inc(seconds)
        if self.span.is_recording():
            self.span.add_event(event, {semconv.EVENT_LOOP_BLOCKED_SECONDS: seconds, **event_facts})
        attributes = self._component.attributes
        _loop_logger.warning(
            message,
            pipeline=attributes[semconv.PIPELINE_NAME],
            component=attributes[semconv.COMPONENT_NAME],
            blocked_seconds=round(seconds, 6),
            **log_facts,
        )

    def finish(
        self, visits: int | None, error: BaseException | None = None, outputs: Mapping[str, Any] | None = None
    ) -> None:
        elapsed = time.perf_counter() - self._started
        status = semconv.STATUS_OK if error is None else status_of(error)
        component = self._component
        schedule_wait, queue_wait = self.schedule_wait, self.queue_wait
        # (No run time measured: the execution ended, cancelled or failed, before its own code did.)
        run_time = self.run_time if self.run_time is not None else elapsed - (schedule_wait or 0.0) - (queue_wait or 0.0)
        # The seconds of each histogram of the layout, in its order (see ComponentTelemetry.layout):
        # the parts first, whose span attributes are the layout's keys.
        seconds = [run_time]
        if schedule_wait is not None:
            seconds.append(schedule_wait)
        if queue_wait is not None:
            seconds.append(queue_wait)
        if component.on_loop:
            seconds.append(self.loop_held)
        layout_key = (status, schedule_wait is not None, queue_wait is not None)
        kind, keys = component.layouts.get(layout_key) or component.layout(*layout_key)
        recording = self.recording
        if recording:  # (nothing is built for the span of an unsampled execution)
            attributes: dict[str, AttributeValue] = dict(zip(keys, seconds))
            if visits is not None:
                attributes[semconv.COMPONENT_VISITS] = visits
            if self.thread is not None:
                attributes[semconv.THREAD_ID] = self.thread.ident or 0
                attributes[semconv.THREAD_NAME] = self.thread.name
        seconds.append(elapsed)
        if component.genai is not None:
            seconds.append(elapsed)
        component.buffer.add(_record(kind, seconds, self.sampled))
        other = self._record_genai(component, outputs) if component.genai is not None else None
        if recording:  # (ending a non-recording span does nothing)
            if outputs is not None and content_capture().enabled:
                other = {**(other or {}), **_content_attributes(semconv.COMPONENT_OUTPUT, outputs)}
            _end_span(self.span, status, error, attributes, other)
        # The context holds this execution (for current_execution()), a reference cycle: dropping it
        # frees the execution and its span now, not in a later run of the cyclic GC.
        self.context = _ENDED

    def _record_genai(
        self, component: ComponentTelemetry, outputs: Mapping[str, Any] | None
    ) -> dict[str, AttributeValue]:
        """Token usage samples and the GenAI result attributes (the operation's duration is in the layout)."""
        operation = component.genai
        assert operation is not None
        if not isinstance(outputs, Mapping):
            return {}
        try:
            result = genai.result_of(operation, outputs, content_capture())
        except Exception:  # odd outputs of a third-party component must never fail the run
            return {}
        metrics = component.metrics
        model = metrics.genai_models.admit(operation.request_model)
        histograms: list[Histogram] = []
        counts: list[float] = []
        for token_type, count in ((genai.TOKEN_INPUT, result.input_tokens), (genai.TOKEN_OUTPUT, result.output_tokens)):
            if count is not None:
                histograms.append(metrics.genai_token_usage.labels(operation.operation, model, token_type))
                counts.append(count)
        if histograms:
            component.buffer.add(_record(component.buffer.kind(tuple(histograms)), counts, self.sampled))
        return result.attributes
