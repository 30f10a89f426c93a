"""The span export path, guarded so that a collector that is down, hung, failing or slow never hurts the application.

What opentelemetry-sdk's `BatchSpanProcessor` already gives, and hayscope keeps: spans are exported on
the processor's own thread, never the caller's; its queue is bounded by `max_queue_size`
(`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048; `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and `OTEL_BSP_SCHEDULE_DELAY`
apply as well, while `OTEL_BSP_EXPORT_TIMEOUT` is read but not used by opentelemetry-sdk 1.45); one export,
retries included, is bounded by the exporter's timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s:
the gRPC and HTTP/protobuf exporters retry transient errors — UNAVAILABLE, 429, 502, 503, 504,
connection errors — with backoff of 1 s, 2 s, 4 s... (±20 % jitter) only while the next try fits in
that timeout).

What it lacks, and this module adds:

- Every span that never reaches the collector is counted in `hayscope_spans_dropped_total{reason}`:
  `export_failed` (the exporter returned FAILURE or raised: `GuardedSpanExporter`), `queue_full`
  (the queue was full, so the SDK discarded its oldest span: see `_DropHook`), `shutdown` (still
  queued when shutdown's time ran out, or ended after shutdown).
- `DropReporter` logs one structlog warning per reason and minute, never one per span or batch. The
  exporters log through stdlib `logging` on every failed batch (a warning per retry, then an error),
  which floods an application's logs while a collector is down; `ExportLogLimiter` lets through one
  record per message and minute from those loggers while hayscope's telemetry is set up.
- `force_flush(timeout)` and `shutdown(timeout)` return within their timeout. The SDK's flush ignores
  its timeout, its shutdown waits up to 30 s, and neither can interrupt an HTTP export blocked on a
  socket (closing the gRPC channel does cancel a gRPC export); here both run on a helper thread that
  the caller waits for at most that long.
- A forked child (gunicorn with `preload_app`, multiprocessing's `fork`) exports through an exporter
  of its own: the parent's gRPC channel or pooled HTTP connection is not safe to share across a
  fork. The SDK itself restarts the processor's thread in the child and empties the child's copy of
  the queue (those spans are the parent's to export).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Final

import structlog
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import Counter

from hayscope.metrics import DROP_EXPORT_FAILED, DROP_QUEUE_FULL, DROP_SHUTDOWN

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DropReporter",
    "ExportLogLimiter",
    "GuardedBatchSpanProcessor",
    "GuardedSpanExporter",
]

# Enough for a healthy collector to take the last batches; all a dead one can cost an exiting process.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
DEFAULT_FLUSH_TIMEOUT: Final = 30.0
WARNING_INTERVAL: Final = 60.0
MAX_ERROR_LENGTH: Final = 500
# Where the SDK logs about exporting spans: the batch processor ("Queue full, dropping Span.") and
# the OTLP exporters (a warning per retry, an error per failed batch).
EXPORT_LOGGERS: Final = (
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)
# The SDK's names for why its processor dropped a span, as hayscope's reasons.
_SDK_DROP_REASONS: Final = {"queue_full": DROP_QUEUE_FULL, "already_shutdown": DROP_SHUTDOWN}

logger = structlog.get_logger("hayscope.export")

# What the exporter logged while exporting on this thread: ExportLogLimiter appends, GuardedSpanExporter reads.
_logged_during_export = threading.local()


class _ProcessLock:
    """A lock that a forked child replaces: one held by another thread at fork time would stay held there forever."""

    __slots__ = ("_lock", "_pid")

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), threading.Lock()
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


class _ReasonState:
    __slots__ = ("count", "error", "since", "warned_at")

    def __init__(self) -> None:
        self.count = 0  # dropped since the last warning
        self.since = 0.0  # wall clock of the first of them
        self.error: str | None = None
        self.warned_at: float | None = None  # monotonic clock of the last warning


class DropReporter:
    """Counts dropped spans in `hayscope_spans_dropped_total{reason}` and logs at most one warning per reason per `interval`.

    The first drop of a reason is logged at once; later ones are counted and summed into the next
    warning, logged at the first drop after `interval` seconds (the counter is always exact).
    """

    def __init__(
        self,
        counter: Counter,
        endpoint: str,
        interval: float = WARNING_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counter = counter
        self.endpoint = endpoint
        self.interval = interval
        self._clock = clock
        self._lock = _ProcessLock()
        self._states: dict[str, _ReasonState] = {}

    def dropped(self, reason: str, count: int, error: str | None = None) -> None:
        """`count` spans were lost for `reason`; `error` says why, when known. Safe from any thread."""
        if count <= 0:
            return
        self._counter.labels(reason).inc(count)
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(reason, _ReasonState())
            if state.count == 0:
                state.since = time.time()
            state.count += count
            state.error = error or state.error
            if state.warned_at is not None and now - state.warned_at < self.interval:
                return
            report = (state.count, state.since, state.error)
            state.count, state.error, state.warned_at = 0, None, now
        count, since, error = report
        # Logged outside any span's context: the warning is about the export, not about the trace
        # whose span happened to end when the queue was full.
        token = otel_context.attach(otel_context.Context())
        try:
            logger.warning(
                "spans dropped",
                reason=reason,
                count=count,
                since=datetime.fromtimestamp(since, timezone.utc).isoformat(timespec="seconds"),
                endpoint=self.endpoint,
                error=error,
                counted_in="hayscope_spans_dropped_total",
                next_warning_after_seconds=self.interval,
            )
        finally:
            otel_context.detach(token)


class ExportLogLimiter(logging.Filter):
    """A filter for the SDK's export loggers: one record per message and `interval` at WARNING and above.

    It also hands what an export logged to the `GuardedSpanExporter` running it (the exporters say
    why they failed only in their log records). Records below WARNING pass untouched: whoever turns
    on DEBUG for these loggers wants all of it.
    """

    def __init__(self, interval: float = WARNING_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = _ProcessLock()
        self._last: dict[tuple[str, int, str], float] = {}
        self._loggers: list[logging.Logger] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        captured = getattr(_logged_during_export, "messages", None)
        if captured is not None:
            captured.append(record.getMessage())
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            self._last[key] = now
        return True

    def install(self, names: Sequence[str] = EXPORT_LOGGERS) -> ExportLogLimiter:
        """Put this filter first on each logger (before the SDK's own DuplicateFilter, which would hide records)."""
        for name in names:
            target = logging.getLogger(name)
            if self not in target.filters:
                target.filters.insert(0, self)
                self._loggers.append(target)
        return self

    def remove(self) -> None:
        """Take this filter off every logger it was put on. Idempotent."""
        for target in self._loggers:
            target.removeFilter(self)
        self._loggers.clear()


def _error_summary(messages: list[str]) -> str | None:
    """The first and the last thing an export logged: usually the cause, then the outcome."""
    distinct = list(dict.fromkeys(messages))
    if not distinct:
        return None
    text = distinct[0] if len(distinct) == 1 else f"{distinct[0]} / {distinct[-1]}"
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


def _accepts_timeout(method: Callable[..., Any]) -> bool:
    try:
        return "timeout_millis" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class GuardedSpanExporter(SpanExporter):
    """Wraps an exporter: counts the spans of every failed batch, and rebuilds the exporter in a forked child.

    :param exporter: the exporter doing the work.
    :param reporter: where failed batches are counted.
    :param rebuild: makes a new exporter like `exporter`; called in a forked child before its first
        export. None keeps `exporter` across forks (one you passed in yourself: it must be fork-safe).
    """

    def __init__(
        self,
        exporter: SpanExporter,
        reporter: DropReporter,
        rebuild: Callable[[], SpanExporter] | None = None,
    ) -> None:
        self._exporter = exporter
        self._reporter = reporter
        self._rebuild = rebuild
        self._pid = os.getpid()

    @property
    def exporter(self) -> SpanExporter:
        """The exporter this process exports through."""
        if self._rebuild is not None and self._pid != os.getpid():
            self._exporter, self._pid = self._rebuild(), os.getpid()
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        messages: list[str] = []
        _logged_during_export.messages = messages
        try:
            result = self.exporter.export(spans)
        except Exception as error:  # a broken exporter loses its batch, never the processor's thread
            result = SpanExportResult.FAILURE
            messages.append(f"{type(error).__name__}: {error}")
        finally:
            _logged_during_export.messages = None
        if result is not SpanExportResult.SUCCESS:
            error_text = _error_summary(messages) or f"{type(self._exporter).__name__} returned {result}"
            self._reporter.dropped(DROP_EXPORT_FAILED, len(spans), error_text)
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._rebuild is not None and self._pid != os.getpid():
            return  # a forked child that never exported: the exporter is the parent's to shut down
        shutdown = self._exporter.shutdown
        if _accepts_timeout(shutdown):
            shutdown(timeout_millis=timeout_millis)
        else:
            shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class _DropHook:
    """Stands in for the SDK processor's metrics object: passes every call on, and reports each drop.

    opentelemetry-sdk's `BatchSpanProcessor` keeps its queue in a `BatchProcessor`
    (`opentelemetry.sdk._shared_internal`) that tells a processor-metrics object (`_metrics`: a no-op
    unless OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED is set) of each span it drops, at the moment it
    does: `drop_items(1)` when the queue is full (the queue then discards its oldest span) and
    `drop_items(1, "already_shutdown")` for a span ending after shutdown. Hooking that report counts
    exactly the SDK's own decisions and keeps the SDK's internal metrics working. The alternatives
    are worse: comparing a count of our own with `max_queue_size` races with the worker taking a
    batch off the queue; the "Queue full" log record is held back by the SDK's DuplicateFilter; a
    processor of our own would duplicate the SDK's.
    """

    __slots__ = ("_reporter", "_sdk_metrics")

    def __init__(self, sdk_metrics: Any, reporter: DropReporter) -> None:
        self._sdk_metrics = sdk_metrics
        self._reporter = reporter

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        self._sdk_metrics.register_queue_size(get_queue_size)

    def finish_items(self, count: int) -> None:
        self._sdk_metrics.finish_items(count)

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self._sdk_metrics.drop_items(count, error_type)
        self._reporter.dropped(_SDK_DROP_REASONS.get(error_type, error_type), count)


def run_within(work: Callable[[], object], seconds: float, name: str) -> bool:
    """Run `work` on a daemon thread and wait for it at most `seconds`; True when it finished in time.

    Whatever `work` waits for, the caller gets its thread back in time. Where no thread may start
    any more (at interpreter exit on some Python versions), `work` runs here instead.
    """
    thread = threading.Thread(target=work, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:
        work()
        return True
    thread.join(max(0.0, seconds))
    return not thread.is_alive()


class _Flush(threading.Thread):
    def __init__(self, flush: Callable[[], bool]) -> None:
        super().__init__(name="hayscope-span-flush", daemon=True)
        self._flush = flush
        self.flushed = False

    def run(self) -> None:
        self.flushed = self._flush()


class GuardedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's `BatchSpanProcessor` (its queue, thread and `OTEL_BSP_*` settings) with drops counted and bounded waits.

    :param exporter: the guarded exporter; it counts failed batches.
    :param reporter: where queue drops and spans lost at shutdown are counted.
    :param shutdown_timeout: seconds `shutdown()` may take when not told (the SDK's own default is
        30 s; the tracer provider's exit hook calls it without a timeout).
    """

    def __init__(
        self, exporter: GuardedSpanExporter, reporter: DropReporter, shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    ) -> None:
        try:
            super().__init__(exporter)
        except ValueError as error:
            settings = ", ".join(
                f"{name}={os.environ.get(name)!r}"
                for name in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_SCHEDULE_DELAY")
            )
            raise ValueError(
                f"the span batching settings are not usable ({error}): {settings}. Give positive integers "
                "(defaults 2048, 512 and 5000 ms), the export batch size at most the queue size."
            ) from error
        self._reporter = reporter
        self._shutdown_timeout = shutdown_timeout
        self._guard_lock = _ProcessLock()
        self._flusher: _Flush | None = None
        self._stopped = False
        self.counts_queue_drops = self._hook_queue_drops()

    def _hook_queue_drops(self) -> bool:
        """Install `_DropHook`; False when this SDK version keeps its queue elsewhere (queue drops go uncounted)."""
        batch = getattr(self, "_batch_processor", None)
        sdk_metrics = getattr(batch, "_metrics", None)
        if batch is None or not callable(getattr(sdk_metrics, "drop_items", None)):
            logger.warning(
                "spans dropped from a full queue are not counted with this opentelemetry-sdk version; "
                "failed exports still are",
                metric="hayscope_spans_dropped_total",
            )
            return False
        batch._metrics = _DropHook(sdk_metrics, self._reporter)
        return True

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        """Export every queued span, waiting at most `timeout_millis` (default 30 s); False when time ran out."""
        timeout = DEFAULT_FLUSH_TIMEOUT if timeout_millis is None else timeout_millis / 1000
        deadline = time.monotonic() + timeout
        while True:
            # One flush thread at a time: under a hung collector, repeated calls must not pile up threads.
            with self._guard_lock:
                flusher = self._flusher
                started_here = flusher is None or not flusher.is_alive()
                if started_here:
                    flusher = self._flusher = _Flush(lambda: BatchSpanProcessor.force_flush(self))
                    try:
                        flusher.start()
                    except RuntimeError:  # no new thread at interpreter exit: flush here
                        self._flusher = None
                        return BatchSpanProcessor.force_flush(self)
            assert flusher is not None
            flusher.join(max(0.0, deadline - time.monotonic()))
            if flusher.is_alive():
                return False
            if started_here:
                return flusher.flushed
            # A flush started before this call ended: start one that covers this caller's spans.

    def shutdown(self, timeout_millis: float | None = None) -> None:
        """Export what is queued and stop, within `timeout_millis` (default: `shutdown_timeout`). Idempotent.

        Spans still queued when the time runs out are counted as `shutdown`; a batch in flight is
        counted as `export_failed` when its export gives up, if the process still runs then.
        """
        with self._guard_lock:
            if self._stopped:
                return
            self._stopped = True
        timeout = self._shutdown_timeout if timeout_millis is None else max(0.0, timeout_millis / 1000)
        run_within(lambda: self._shutdown_within(timeout), timeout, "hayscope-span-shutdown")

    def _shutdown_within(self, timeout: float) -> None:
        batch = getattr(self, "_batch_processor", None)
        queue = getattr(batch, "_queue", None)
        if batch is None or queue is None:
            BatchSpanProcessor.shutdown(self)
            return
        # The SDK waits this long for its thread to export what is queued, then shuts the exporter
        # down (which cancels a gRPC export in flight): leave that step a moment of the budget.
        batch.shutdown(timeout_millis=(timeout - min(0.5, timeout / 4)) * 1000)
        # The SDK's thread takes nothing more off the queue now: what is left will never be exported.
        self._reporter.dropped(DROP_SHUTDOWN, len(queue), f"still queued when shutdown's {timeout:g}s ran out")


class FanOutSpanExporter(SpanExporter):
    """Exports every batch to each of several exporters (`OTEL_TRACES_EXPORTER=otlp,console`); a batch
    counts as exported only when every exporter took it."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = list(exporters)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        results = [exporter.export(spans) for exporter in self.exporters]
        return SpanExportResult.SUCCESS if all(r is SpanExportResult.SUCCESS for r in results) else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([exporter.force_flush(timeout_millis) for exporter in self.exporters])

    def shutdown(self) -> None:
        failure: Exception | None = None
        for exporter in self.exporters:  # every one, even after one fails
            try:
                exporter.shutdown()
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure
