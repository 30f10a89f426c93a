"""The one catalogue of hayscope's metrics, and the instruments built from it per registry.

Every name, help text, unit, label set and bucket layout is defined here once; the instruments,
the README table and (later) the dashboards are all read from `CATALOGUE`.
"""

from __future__ import annotations

import bisect
import collections
import math
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from hayscope.executor import ExecutorState, live_states

__all__ = [
    "CATALOGUE",
    "DEFAULT_DURATION_BUCKETS",
    "MAX_COMPONENT_LABEL_VALUES",
    "MAX_PIPELINE_LABEL_VALUES",
    "GC_COMPONENT",
    "NO_COMPONENT",
    "OVERFLOW_LABEL_VALUE",
    "MetricSpec",
    "Metrics",
    "register_metrics",
]

# About 1 ms to 2 minutes: a cache hit at the bottom, a slow LLM call with retries at the top.
DEFAULT_DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

# Label values come from names users give; past these caps new names fold into OVERFLOW_LABEL_VALUE,
# so a pipeline built per request cannot blow up the series count.
MAX_PIPELINE_LABEL_VALUES: Final = 100
MAX_COMPONENT_LABEL_VALUES: Final = 1000
OVERFLOW_LABEL_VALUE: Final = "__overflow__"
# The pipeline and component label of event-loop stalls that no component's code caused.
NO_COMPONENT: Final = "(none)"
GC_COMPONENT: Final = "(gc)"  # the `component` a garbage-collection pause that blocked the loop is counted under

# Event-loop lag is healthy below a millisecond and pathological past a second.
LAG_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

Kind = Literal["histogram", "counter", "gauge"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what Prometheus will show for it."""

    name: str
    kind: Kind
    help: str
    unit: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None


PIPELINE_RUN_DURATION: Final = MetricSpec(
    "haystack_pipeline_run_duration_seconds",
    "histogram",
    "Wall time of one pipeline run, from its start until its last output or its failure.",
    "seconds",
    ("pipeline", "status"),
    DEFAULT_DURATION_BUCKETS,
)
PIPELINE_RUNS: Final = MetricSpec(
    "haystack_pipeline_runs_total",
    "counter",
    "Pipeline runs finished, by outcome (ok, error, cancelled).",
    "",
    ("pipeline", "status"),
)
PIPELINE_RUNS_IN_FLIGHT: Final = MetricSpec(
    "haystack_pipeline_runs_in_flight",
    "gauge",
    "Pipeline runs started and not yet finished.",
    "",
    ("pipeline",),
)
COMPONENT_DURATION: Final = MetricSpec(
    "haystack_component_duration_seconds",
    "histogram",
    "Wall time of one component execution as the pipeline sees it, waits included.",
    "seconds",
    ("pipeline", "component", "component_type", "mode", "status"),
    DEFAULT_DURATION_BUCKETS,
)
COMPONENTS_IN_FLIGHT: Final = MetricSpec(
    "haystack_components_in_flight",
    "gauge",
    "Component executions started and not yet finished.",
    "",
    ("pipeline", "component", "mode"),
)

_COMPONENT_LABELS: Final = COMPONENT_DURATION.labels
COMPONENT_RUN_TIME: Final = MetricSpec(
    "haystack_component_run_time_seconds",
    "histogram",
    "The component's own execution: in its worker thread for thread mode, waits for a worker or a slot left out.",
    "seconds",
    _COMPONENT_LABELS,
    DEFAULT_DURATION_BUCKETS,
)
COMPONENT_QUEUE_WAIT: Final = MetricSpec(
    "haystack_component_queue_wait_seconds",
    "histogram",
    "Thread mode: from submission to the executor until a worker thread started the component.",
    "seconds",
    _COMPONENT_LABELS,
    DEFAULT_DURATION_BUCKETS,
)
COMPONENT_LOOP_HELD: Final = MetricSpec(
    "haystack_component_loop_held_seconds",
    "histogram",
    "Async mode: how long the component's own code kept the event loop busy (blocking calls, CPU work).",
    "seconds",
    _COMPONENT_LABELS,
    DEFAULT_DURATION_BUCKETS,
)
COMPONENT_SCHEDULE_WAIT: Final = MetricSpec(
    "haystack_component_schedule_wait_seconds",
    "histogram",
    "From the pipeline scheduling the component until it started (concurrency_limit, loop scheduling).",
    "seconds",
    _COMPONENT_LABELS,
    DEFAULT_DURATION_BUCKETS,
)
EXECUTOR_WORKERS_BUSY: Final = MetricSpec(
    "hayscope_executor_workers_busy", "gauge", "Worker threads running a component now.", "", ("executor",)
)
EXECUTOR_WORKERS_MAX: Final = MetricSpec(
    "hayscope_executor_workers_max", "gauge", "Worker threads the executor may run at most.", "", ("executor",)
)
EXECUTOR_QUEUE_DEPTH: Final = MetricSpec(
    "hayscope_executor_queue_depth",
    "gauge",
    "Component executions submitted to the executor and waiting for a free worker.",
    "",
    ("executor",),
)
EVENT_LOOP_LAG: Final = MetricSpec(
    "asyncio_event_loop_lag_seconds",
    "histogram",
    "How late the event loop ran a heartbeat callback: time other code kept the loop from it.",
    "seconds",
    (),
    LAG_BUCKETS,
)
EVENT_LOOP_BLOCKED: Final = MetricSpec(
    "hayscope_event_loop_blocked_seconds_total",
    "counter",
    "Seconds the event loop was blocked past the threshold, by the component whose code held it "
    "((none): no component; (gc): the garbage collector, during that pipeline's run).",
    "seconds",
    ("pipeline", "component"),
)

# The OpenTelemetry GenAI conventions' bucket layouts (powers of 4 tokens; doubling seconds from 10 ms).
TOKEN_BUCKETS: Final[tuple[float, ...]] = tuple(4.0**i for i in range(14))
GENAI_DURATION_BUCKETS: Final[tuple[float, ...]] = tuple(0.01 * 2**i for i in range(14))
GENAI_TOKEN_USAGE: Final = MetricSpec(
    "gen_ai_client_token_usage",
    "histogram",
    "Tokens used by one generator or embedder call, by token type (input, output), from what the component returned.",
    "",
    ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"),
    TOKEN_BUCKETS,
)
GENAI_OPERATION_DURATION: Final = MetricSpec(
    "gen_ai_client_operation_duration_seconds",
    "histogram",
    "Wall time of one generator, embedder or retriever execution (chat, text_completion, embeddings, retrieval).",
    "seconds",
    ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"),
    GENAI_DURATION_BUCKETS,
)

# Why a finished span never reached the collector (hayscope.span_export counts them).
DROP_QUEUE_FULL: Final = "queue_full"
DROP_EXPORT_FAILED: Final = "export_failed"
DROP_SHUTDOWN: Final = "shutdown"
DROP_REASONS: Final = (DROP_QUEUE_FULL, DROP_EXPORT_FAILED, DROP_SHUTDOWN)
SPANS_DROPPED: Final = MetricSpec(
    "hayscope_spans_dropped_total",
    "counter",
    "Finished spans that never reached the collector, by reason (queue_full, export_failed, shutdown).",
    "",
    ("reason",),
)

CATALOGUE: Final[tuple[MetricSpec, ...]] = (
    PIPELINE_RUN_DURATION,
    PIPELINE_RUNS,
    PIPELINE_RUNS_IN_FLIGHT,
    COMPONENT_DURATION,
    COMPONENT_RUN_TIME,
    COMPONENT_QUEUE_WAIT,
    COMPONENT_LOOP_HELD,
    COMPONENT_SCHEDULE_WAIT,
    COMPONENTS_IN_FLIGHT,
    EXECUTOR_WORKERS_BUSY,
    EXECUTOR_WORKERS_MAX,
    EXECUTOR_QUEUE_DEPTH,
    EVENT_LOOP_LAG,
    EVENT_LOOP_BLOCKED,
    GENAI_TOKEN_USAGE,
    GENAI_OPERATION_DURATION,
    SPANS_DROPPED,
)


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    values = tuple(buckets)
    if not values or any(
        not isinstance(b, (int, float)) or isinstance(b, bool) or not math.isfinite(b) or b <= 0 for b in values
    ):
        raise ValueError(
            f"duration_buckets={values!r} is not usable: give a non-empty list of positive finite "
            "upper bounds in seconds, e.g. [0.01, 0.1, 1, 10]."
        )
    if list(values) != sorted(set(values)):
        raise ValueError(
            f"duration_buckets={values!r} must be strictly increasing, e.g. [0.01, 0.1, 1, 10]."
        )
    return values


class _BoundedValues:
    """Admits label values until a cap, then folds every new one into OVERFLOW_LABEL_VALUE."""

    __slots__ = ("_cap", "_lock", "_seen")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._cap:
                self._seen.add(value)
                return value
        return OVERFLOW_LABEL_VALUE


# One buffered record, a flat tuple of numbers so that the cyclic garbage collector stops tracking
# it at its first look and never promotes it while it waits: its kind (see `SampleBuffer.kind`), the
# trace and span ids of a sampled execution (its exemplar; 0 and 0 for none), its wall time (the
# exemplar's timestamp), then the amounts its histograms observe, in their order.
SampleRecord = tuple[Any, ...]
AMOUNTS: Final = 4  # where a record's amounts start
# What a kind of record adds to: histogram children, and (counter or gauge child, amount) pairs.
RecordKind = tuple[tuple[Histogram, ...], tuple[tuple["Counter | Gauge", float], ...]]

# Records applied from the hot path at the latest every this many, so memory stays bounded when
# nothing scrapes.
FLUSH_EVERY: Final = 1024
# One lock for every buffer's flush; a forked child gets a fresh one (a thread may have held it).
_flush_lock = threading.Lock()


def _new_flush_lock() -> None:
    global _flush_lock
    _flush_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_flush_lock)


class SampleBuffer:
    """Metric samples recorded without taking a lock, applied to the instruments in bulk.

    Each `observe()` or `inc()` of prometheus_client takes a lock, and `observe()` validates its
    exemplar every time; a component execution makes 5 to 7 of them. Recording a `SampleRecord`
    here is one deque append (atomic under the GIL). Records are applied before any instrument of
    the same `Metrics` is collected, so every scrape sees all of them, and every `FLUSH_EVERY`
    records. Applying adds them up per child (bucket counts, sum, the last exemplar of each bucket)
    and leaves exactly what the same `observe()` and `inc()` calls would have left.

    In prometheus_client's multiprocess mode values live in files that another process reads, so
    records are applied at once.
    """

    __slots__ = ("_at_once", "_kind_ids", "_kinds", "_records", "append")

    def __init__(self) -> None:
        self._records: collections.deque[SampleRecord] = collections.deque()
        self._kinds: list[RecordKind] = []
        self._kind_ids: dict[RecordKind, int] = {}
        self._at_once = values.ValueClass is not values.MutexValue
        # `add` without the flush check, for a record that an `add` always follows (an execution's
        # start, then its end): the deque's own append, one call less on the hot path.
        self.append = self.add if self._at_once else self._records.append

    def kind(
        self, histograms: tuple[Histogram, ...] = (), increments: tuple[tuple[Counter | Gauge, float], ...] = ()
    ) -> int:
        """The kind of the records that observe with `histograms` and add `increments` (made once)."""
        key = (histograms, increments)
        kind = self._kind_ids.get(key)
        if kind is None:
            with _flush_lock:
                kind = self._kind_ids.get(key)
                if kind is None:
                    self._kinds.append(key)
                    kind = self._kind_ids[key] = len(self._kinds) - 1
        return kind

    def add(self, record: SampleRecord) -> None:
        if self._at_once:
            _apply_or_log((record,), self._kinds)
            return
        records = self._records
        records.append(record)
        if len(records) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Apply every record added so far (called before a collect, and from `add`)."""
        if not self._records:
            return
        with _flush_lock:
            records = self._records
            # popleft is atomic too: records added meanwhile stay for the next flush
            _apply_or_log([records.popleft() for _ in range(len(records))], self._kinds)


_failure_logged = False


def _apply_or_log(records: Sequence[SampleRecord], kinds: Sequence[RecordKind]) -> None:
    """`_apply`, which must never fail a pipeline run or a scrape: a failure is logged once and its records dropped."""
    global _failure_logged
    try:
        _apply(records, kinds)
    except Exception as error:  # e.g. a prometheus_client whose histogram fields differ (see below)
        if not _failure_logged:
            _failure_logged = True
            structlog.get_logger("hayscope.telemetry").warning(
                "metric samples could not be recorded; the pipeline is not affected", error=repr(error)
            )


def _apply(records: Iterable[SampleRecord], kinds: Sequence[RecordKind]) -> None:
    # The amounts of each kind (a component's layout) by record, and the records of that kind with
    # an exemplar, with their position (observe() keeps the last exemplar).
    rows: dict[int, list[Sequence[float]]] = collections.defaultdict(list)
    sampled: dict[int, list[tuple[int, SampleRecord]]] = collections.defaultdict(list)
    totals: dict[Counter | Gauge, float] = collections.defaultdict(float)
    for position, record in enumerate(records):
        kind, trace_id = record[0], record[1]
        histograms, increments = kinds[kind]
        if histograms:
            rows[kind].append(record[AMOUNTS:])
            if trace_id:
                sampled[kind].append((position, record))
        for metric, amount in increments:
            totals[metric] += amount
    exemplars: dict[tuple[Histogram, int], tuple[int, SampleRecord, float]] = {}
    for kind, amount_rows in rows.items():
        for column, (histogram, amounts) in enumerate(zip(kinds[kind][0], zip(*amount_rows))):
            filled = _observe_all(histogram, amounts)
            _last_sampled(exemplars, histogram, column, sampled.get(kind, []), filled)
    for (histogram, bucket), (_position, record, amount) in exemplars.items():
        _kind, trace_id, span_id, at = record[:AMOUNTS]
        histogram._buckets[bucket].set_exemplar(Exemplar(exemplar_labels_for(trace_id, span_id), amount, at))
    for metric, amount in totals.items():
        if amount:
            metric.inc(amount)


# prometheus_client's own fields of a histogram child, the ones observe() updates: _upper_bounds,
# _buckets (a value per bucket, not cumulative) and _sum. Amounts are never NaN (clock differences
# and token counts).


def _bucket(histogram: Histogram, amount: float) -> int:
    """The bucket observe() counts `amount` in: the first upper bound >= amount."""
    return bisect.bisect_left(histogram._upper_bounds, amount)


def _observe_all(histogram: Histogram, amounts: Sequence[float]) -> int:
    """Adds what observe() of each amount adds: their sum, and one per amount to its bucket.

    Counted on the sorted amounts, a bucket at a time. Returns how many buckets got some.
    """
    histogram._sum.inc(sum(amounts))
    bounds, buckets = histogram._upper_bounds, histogram._buckets
    ordered = sorted(amounts)
    start = bucket = filled = 0
    while start < len(ordered):
        bucket = bisect.bisect_left(bounds, ordered[start], bucket)
        end = max(bisect.bisect_right(ordered, bounds[bucket], start), start + 1)  # the amounts in this bucket
        buckets[bucket].inc(end - start)
        start, filled = end, filled + 1
    return filled


def _last_sampled(
    exemplars: dict[tuple[Histogram, int], tuple[int, SampleRecord, float]],
    histogram: Histogram,
    column: int,
    sampled: list[tuple[int, SampleRecord]],
    filled: int,
) -> None:
    """Keeps in `exemplars` the last sampled observation of each bucket of `histogram`."""
    seen: set[int] = set()
    for position, record in reversed(sampled):
        if len(seen) == filled:  # every bucket with observations has its last one
            return
        amount = record[AMOUNTS + column]
        bucket = _bucket(histogram, amount)
        if bucket not in seen:
            seen.add(bucket)
            kept = exemplars.get((histogram, bucket))
            if kept is None or kept[0] < position:  # the histogram may be in another layout too
                exemplars[histogram, bucket] = (position, record, amount)


def exemplar_labels(span_context: Any) -> dict[str, str]:
    """The exemplar of a sampled span: its trace and span ids, as a trace backend links them."""
    return exemplar_labels_for(span_context.trace_id, span_context.span_id)


def exemplar_labels_for(trace_id: int, span_id: int) -> dict[str, str]:
    return {"trace_id": format(trace_id, "032x"), "span_id": format(span_id, "016x")}


class _Buffered:
    """Mixin of the instruments `Metrics` makes: the buffered samples are applied before a collect."""

    buffer: SampleBuffer | None = None  # set on the parent instrument, the one a registry collects

    def collect(self) -> Iterable[Metric]:
        if self.buffer is not None:
            self.buffer.flush()
        return super().collect()  # type: ignore[misc]


class _Histogram(_Buffered, Histogram):
    pass


class _Counter(_Buffered, Counter):
    pass


class _Gauge(_Buffered, Gauge):
    pass


class Metrics:
    """The instruments of the catalogue, registered once in one registry."""

    def __init__(self, registry: CollectorRegistry, duration_buckets: Sequence[float] | None = None) -> None:
        self.registry = registry
        self.duration_buckets = _check_buckets(duration_buckets or DEFAULT_DURATION_BUCKETS)
        self.buffer = SampleBuffer()  # where pipelines record their samples (applied before each collect)
        self.pipeline_names = _BoundedValues(MAX_PIPELINE_LABEL_VALUES)
        self.component_names = _BoundedValues(MAX_COMPONENT_LABEL_VALUES)
        self.component_types = _BoundedValues(MAX_COMPONENT_LABEL_VALUES)
        self.pipeline_run_duration = self._histogram(PIPELINE_RUN_DURATION)
        self.pipeline_runs = self._counter(PIPELINE_RUNS)
        self.pipeline_runs_in_flight = self._gauge(PIPELINE_RUNS_IN_FLIGHT)
        self.component_duration = self._histogram(COMPONENT_DURATION)
        self.component_run_time = self._histogram(COMPONENT_RUN_TIME)
        self.component_queue_wait = self._histogram(COMPONENT_QUEUE_WAIT)
        self.component_loop_held = self._histogram(COMPONENT_LOOP_HELD)
        self.component_schedule_wait = self._histogram(COMPONENT_SCHEDULE_WAIT)
        self.components_in_flight = self._gauge(COMPONENTS_IN_FLIGHT)
        self.event_loop_lag = self._histogram(EVENT_LOOP_LAG, LAG_BUCKETS)
        self.event_loop_blocked = self._counter(EVENT_LOOP_BLOCKED)
        self.genai_models = _BoundedValues(MAX_PIPELINE_LABEL_VALUES)
        self.genai_token_usage = self._histogram(GENAI_TOKEN_USAGE, TOKEN_BUCKETS)
        self.genai_operation_duration = self._histogram(GENAI_OPERATION_DURATION, GENAI_DURATION_BUCKETS)
        self.spans_dropped = self._counter(SPANS_DROPPED)
        for reason in DROP_REASONS:  # every reason exists at zero from the start, for rate queries
            self.spans_dropped.labels(reason)
        self.executors = _ExecutorCollector(_BoundedValues(MAX_PIPELINE_LABEL_VALUES))
        registry.register(self.executors)

    def _histogram(self, spec: MetricSpec, buckets: Sequence[float] | None = None) -> Histogram:
        histogram = _Histogram(
            spec.name,
            spec.help,
            spec.labels,
            unit=spec.unit,
            registry=self.registry,
            buckets=buckets or self.duration_buckets,
        )
        histogram.buffer = self.buffer
        return histogram

    def _counter(self, spec: MetricSpec) -> Counter:
        counter = _Counter(spec.name, spec.help, spec.labels, unit=spec.unit, registry=self.registry)
        counter.buffer = self.buffer
        return counter

    def _gauge(self, spec: MetricSpec) -> Gauge:
        # In prometheus_client's multiprocess mode: the sum over live processes (a dead worker's
        # runs are no longer in flight); outside it the mode is ignored.
        gauge = _Gauge(spec.name, spec.help, spec.labels, registry=self.registry, multiprocess_mode="livesum")
        gauge.buffer = self.buffer
        return gauge


class _ExecutorCollector(Collector):
    """The executor gauges, read from the executors' own counts at scrape time: of the executors that
    pipelines reporting to this registry use. Executors of the same name (pipelines of one name, each
    with a pool of its own) are summed: one series per name, and past `names`' cap one for all the
    names that came later."""

    def __init__(self, names: _BoundedValues) -> None:
        self._names = names
        self._used: weakref.WeakSet[ExecutorState] = weakref.WeakSet()
        self._loop_defaults_used = False
        self._lock = threading.Lock()  # pipelines in other threads report while a scrape reads

    def report(self, state: ExecutorState | None) -> None:
        """A pipeline of this registry runs its sync components in `state` (None: in the running
        loop's default executor, whichever loop that is)."""
        with self._lock:
            if state is None:
                self._loop_defaults_used = True
            else:
                self._used.add(state)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            used, loop_defaults_used = set(self._used), self._loop_defaults_used
        busy: dict[str, float] = {}
        queued: dict[str, float] = {}
        most: dict[str, float | None] = {}
        for state in live_states():
            if state not in used and not (loop_defaults_used and state.is_loop_default):
                continue
            name = self._names.admit(state.name)
            busy[name] = busy.get(name, 0) + state.busy
            queued[name] = queued.get(name, 0) + state.queued
            known = most.get(name, 0)
            # a pool of unknown size makes the sum unknown
            most[name] = None if known is None or state.max_workers is None else known + state.max_workers
        for spec, by_name in (
            (EXECUTOR_WORKERS_BUSY, busy),
            (EXECUTOR_WORKERS_MAX, most),
            (EXECUTOR_QUEUE_DEPTH, queued),
        ):
            family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for name, value in by_name.items():
                if value is not None:
                    family.add_metric([name], value)
            yield family


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
_by_registry_lock = threading.Lock()


def register_metrics(
    registry: CollectorRegistry | None = None, *, duration_buckets: Iterable[float] | None = None
) -> Metrics:
    """The catalogue's instruments in `registry` (default: prometheus_client's global `REGISTRY`).

    Registers them on the first call for a registry and returns the same instruments afterwards, so
    any number of pipelines can share one registry. To change the histogram buckets, call this once
    with `duration_buckets` before the first pipeline runs.
    """
    if registry is None:
        registry = REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            f"registry={registry!r} is not a prometheus_client.CollectorRegistry: pass "
            "prometheus_client.CollectorRegistry() or leave it out to use the global REGISTRY."
        )
    buckets = None if duration_buckets is None else _check_buckets(list(duration_buckets))
    with _by_registry_lock:
        existing = _by_registry.get(registry)
        if existing is None:
            existing = _by_registry[registry] = Metrics(registry, buckets)
        elif buckets is not None and buckets != existing.duration_buckets:
            raise ValueError(
                f"duration_buckets={buckets!r} differ from the buckets already registered in this registry "
                f"({existing.duration_buckets!r}): pass the buckets on the first register_metrics() call, "
                "before any pipeline runs, or use a fresh CollectorRegistry."
            )
        return existing


def catalogue_markdown() -> str:
    """The catalogue as the Markdown table the README shows (a test keeps the two equal)."""
    rows = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for spec in CATALOGUE:
        labels = ", ".join(f"`{label}`" for label in spec.labels)
        rows.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |")
    return "\n".join(rows)
