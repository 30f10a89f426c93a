"""A collector in trouble never hurts the application: real exporters, real sockets, four kinds of trouble.

For gRPC and HTTP/protobuf, against a collector that refuses connections, one that accepts and never
answers, one that answers every export with an error, and a slow one: pipelines return what plain
haystack returns, the event loop is never held by an export, every span is either received or
counted in `hayscope_spans_dropped_total`, one warning is logged per reason, and `shutdown()`
returns within its timeout. Then the same for the metrics endpoint: a scraper that never sends and
one that stops reading hold up neither other scrapes nor the pipeline.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
from haystack import Pipeline
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, Gauge
from structlog.testing import LogCapture

import hayscope
from components import AsyncAdd, SyncAdd
from hayscope import LoopLagMonitor
from hayscope import telemetry as telemetry_module
from hayscope.metrics import DROP_REASONS
from hayscope.serving import MetricsServer
from hayscope.span_export import DropReporter, ExportLogLimiter
from hayscope.testing import HangingCollector, OtlpReceiver, refusing_endpoint

PROTOCOLS = ("grpc", "http/protobuf")
FAULTS = ("refusing", "hanging", "failing", "slow")
RUNS = 100
EXPORT_TIMEOUT = 0.5  # otlp_timeout: one export, retries included
SLOW_DELAY = 0.1  # the slow collector's answer time, well within EXPORT_TIMEOUT
SHUTDOWN_TIMEOUT = 3.0
MARGIN = 0.5  # what shutdown() may take beyond its timeout: thread hand-offs on a loaded machine
# Where an export's code lives: a stall of the event loop in any of these would be the export's doing.
EXPORT_CODE = (
    "opentelemetry/exporter", "opentelemetry/sdk/_shared_internal", "hayscope/span_export", "grpc", "requests/", "urllib3"
)


# -- the collectors in trouble ------------------------------------------------------------------


@contextmanager
def collector(fault: str, protocol: str) -> Iterator[tuple[str, OtlpReceiver | None]]:
    """The endpoint of a collector with `fault`, and the receiver when there is one to read from."""
    if fault == "refusing":
        with refusing_endpoint() as endpoint:
            yield endpoint, None
    elif fault == "hanging":
        with HangingCollector() as hanging:
            yield hanging.endpoint, None
            assert hanging.accepted, "the exporter never connected: the test tested nothing"
    else:
        with OtlpReceiver(fail=fault == "failing", delay=SLOW_DELAY if fault == "slow" else 0.0) as receiver:
            yield (receiver.grpc_endpoint if protocol == "grpc" else receiver.http_base_endpoint), receiver


# -- the application ----------------------------------------------------------------------------


def build(pipeline: Pipeline) -> Pipeline:
    pipeline.add_component("first", AsyncAdd(1, delay=0.005))
    pipeline.add_component("second", SyncAdd(10))
    pipeline.add_component("third", AsyncAdd(100))
    pipeline.connect("first.value", "second.value")
    pipeline.connect("second.value", "third.value")
    return pipeline


async def run_plain(runs: int) -> list[dict[str, Any]]:
    pipeline = build(Pipeline())
    return [await pipeline.run_async({"first": {"value": i}}) for i in range(runs)]


async def run_traced(telemetry: hayscope.Telemetry, runs: int) -> list[dict[str, Any]]:
    pipeline = build(
        hayscope.TracedAsyncPipeline(name="faults", tracer_provider=telemetry.tracer_provider, registry=telemetry.registry)
    )
    return [await pipeline.run_async({"first": {"value": i}}) for i in range(runs)]


class EndedSpans(SpanProcessor):
    """Counts the sampled spans that ended: what the exporter was offered."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            with self._lock:
                self.count += 1


def setup(**kwargs: Any) -> hayscope.Telemetry:
    """`setup_telemetry` isolated from the process: no metrics server, no global provider, a fresh registry."""
    return hayscope.setup_telemetry(serve_metrics=False, set_global=False, registry=CollectorRegistry(), **kwargs)


def dropped(registry: CollectorRegistry) -> dict[str, float]:
    return {
        reason: registry.get_sample_value("hayscope_spans_dropped_total", {"reason": reason}) or 0.0
        for reason in DROP_REASONS
    }


def timed_shutdown(telemetry: hayscope.Telemetry, timeout: float) -> float:
    started = time.monotonic()
    telemetry.shutdown(timeout=timeout)
    return time.monotonic() - started


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variable from the outside world; and no telemetry handle left active afterwards."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield
    leaked = telemetry_module._active
    if leaked is not None:
        leaked.shutdown()


@pytest.fixture
def log_entries() -> Iterator[list[dict[str, Any]]]:
    previous = structlog.get_config()
    capture = LogCapture()
    structlog.configure(processors=[capture])
    yield capture.entries
    structlog.configure(**previous)


@pytest.fixture
def small_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue of 16 spans, exported 8 at a time: a workload of hundreds of spans overflows it."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")


# -- span export --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_collector_in_trouble_changes_nothing_for_the_application(
    fault: str,
    protocol: str,
    small_queue: None,
    log_entries: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    expected = await run_plain(RUNS)
    with collector(fault, protocol) as (endpoint, receiver):
        telemetry = setup(otlp_protocol=protocol, otlp_endpoint=endpoint, otlp_timeout=EXPORT_TIMEOUT)
        ended = EndedSpans()
        telemetry.tracer_provider.add_span_processor(ended)
        async with LoopLagMonitor(interval=0.01, threshold=0.1, registry=telemetry.registry):
            outputs = await run_traced(telemetry, RUNS)
        elapsed = timed_shutdown(telemetry, SHUTDOWN_TIMEOUT)
        received = len(receiver.spans()) if receiver is not None else 0
    registry = telemetry.registry

    # The application got what plain haystack gives, and shutdown kept to its time.
    assert outputs == expected
    assert elapsed < SHUTDOWN_TIMEOUT + MARGIN, f"shutdown took {elapsed:.2f}s"

    # Every span the exporter was offered either arrived or was counted, by reason.
    counts = dropped(registry)
    assert ended.count >= RUNS * 4
    assert received + sum(counts.values()) == ended.count, (received, counts, ended.count)
    if fault == "slow":
        assert received > 0 and counts["export_failed"] == 0
    else:
        assert received == 0 and counts["export_failed"] > 0
    if fault in ("hanging", "slow"):  # exports take time, so the small queue overflows
        assert counts["queue_full"] > 0

    # One warning per reason that dropped anything (the window is a minute), none for the others.
    warnings = [entry for entry in log_entries if entry["event"] == "spans dropped"]
    assert Counter(entry["reason"] for entry in warnings) == {reason: 1 for reason, n in counts.items() if n}
    for entry in warnings:
        assert entry["log_level"] == "warning"
        assert entry["endpoint"].startswith(endpoint)
        assert entry["count"] >= 1
        if entry["reason"] == "export_failed":
            assert entry["error"]

    # The SDK's own records: each message at most once (it logs one or more per failed batch).
    sdk_records = Counter((r.name, r.msg) for r in caplog.records if r.name.startswith("opentelemetry"))
    assert all(n == 1 for n in sdk_records.values()), sdk_records

    # The loop never waited for an export: no stall in export code, and no lag as long as an export.
    stalls = [entry for entry in log_entries if entry["event"] == "event loop blocked"]
    assert not [s for s in stalls if any(code in frame for frame in s["frames"] for code in EXPORT_CODE)], stalls
    beats = registry.get_sample_value("asyncio_event_loop_lag_seconds_count")
    assert beats and registry.get_sample_value("asyncio_event_loop_lag_seconds_bucket", {"le": "0.5"}) == beats


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_shutdown_returns_in_time_while_an_export_hangs_and_counts_what_it_leaves(
    protocol: str, monkeypatch: pytest.MonkeyPatch, log_entries: list[dict[str, Any]]
) -> None:
    # The export itself may hang for 10 s; shutdown is given 1 s.
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    with HangingCollector() as hole:
        telemetry = setup(otlp_protocol=protocol, otlp_endpoint=hole.endpoint, otlp_timeout=10)
        ended = EndedSpans()
        telemetry.tracer_provider.add_span_processor(ended)
        await run_traced(telemetry, 5)
        elapsed = timed_shutdown(telemetry, 1.0)
    assert elapsed < 1.0 + MARGIN, f"shutdown took {elapsed:.2f}s"
    # The first batch of 4 went to the hanging export; the rest never left the queue.
    assert dropped(telemetry.registry)["shutdown"] == ended.count - 4
    [warning] = [entry for entry in log_entries if entry["event"] == "spans dropped" and entry["reason"] == "shutdown"]
    assert warning["count"] == ended.count - 4


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_force_flush_returns_in_time_while_an_export_hangs(protocol: str) -> None:
    with HangingCollector() as hole:
        telemetry = setup(otlp_protocol=protocol, otlp_endpoint=hole.endpoint, otlp_timeout=10)
        await run_traced(telemetry, 2)
        started = time.monotonic()
        results = [telemetry.force_flush(timeout_millis=200) for _ in range(3)]
        elapsed = time.monotonic() - started
        flushers = [t for t in threading.enumerate() if t.name == "hayscope-span-flush"]
        assert timed_shutdown(telemetry, 0.5) < 0.5 + MARGIN
    assert results == [False, False, False]
    assert elapsed < 3 * 0.2 + MARGIN
    assert len(flushers) == 1  # calls that time out do not pile up threads


async def test_spans_ending_after_shutdown_are_counted() -> None:
    with OtlpReceiver() as receiver:
        telemetry = setup(otlp_protocol="grpc", otlp_endpoint=receiver.grpc_endpoint)
        tracer = telemetry.tracer_provider.get_tracer("tests")
        span = tracer.start_span("outlives the telemetry")
        telemetry.shutdown()
        span.end()
    assert dropped(telemetry.registry) == {"queue_full": 0, "export_failed": 0, "shutdown": 1}


class BrokenExporter(SpanExporter):
    """An exporter of the user's own that raises on every batch."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector went away")


def test_an_exporter_that_raises_loses_only_its_batch_counted_and_named(log_entries: list[dict[str, Any]]) -> None:
    with setup(span_exporter=BrokenExporter()) as telemetry:
        tracer = telemetry.tracer_provider.get_tracer("tests")
        for _ in range(3):
            tracer.start_span("lost").end()
        assert telemetry.force_flush()
        tracer.start_span("lost too").end()
    assert dropped(telemetry.registry) == {"queue_full": 0, "export_failed": 4, "shutdown": 0}
    [warning] = [entry for entry in log_entries if entry["event"] == "spans dropped"]
    assert warning["count"] == 3  # the next warning would come a minute later, with the fourth
    assert warning["error"] == "ConnectionError: collector went away"
    assert warning["endpoint"] == "BrokenExporter (span_exporter)"


def test_queue_drops_are_counted_through_the_installed_sdk() -> None:
    # Pins the SDK internals the queue-drop count hooks into (see span_export._DropHook).
    with setup(traces_exporter="console") as telemetry:
        assert telemetry.span_processor is not None
        assert telemetry.span_processor.counts_queue_drops


def test_unusable_batch_settings_fail_at_setup_naming_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100")
    with pytest.raises(ValueError, match=r"OTEL_BSP_MAX_QUEUE_SIZE='10', OTEL_BSP_MAX_EXPORT_BATCH_SIZE='100'"):
        setup(traces_exporter="console")
    assert telemetry_module._active is None


def test_shutdown_refuses_a_timeout_that_is_not_one() -> None:
    with setup(traces_exporter="none") as telemetry:
        with pytest.raises(ValueError, match=r"timeout=-1 is not a timeout: give a positive number of seconds"):
            telemetry.shutdown(timeout=-1)


# -- the warning and the log limit, on their own clock --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_warning_per_reason_per_interval_and_the_counter_stays_exact(log_entries: list[dict[str, Any]]) -> None:
    registry, clock = CollectorRegistry(), Clock()
    counter = hayscope.register_metrics(registry).spans_dropped
    reporter = DropReporter(counter, "http://collector:4317 (grpc)", interval=60, clock=clock)

    reporter.dropped("export_failed", 8, "UNAVAILABLE")
    reporter.dropped("export_failed", 8, "DEADLINE_EXCEEDED")
    reporter.dropped("queue_full", 1)
    clock.now += 59
    reporter.dropped("export_failed", 8)
    reporter.dropped("queue_full", 0)  # nothing lost: nothing said
    clock.now += 1
    reporter.dropped("export_failed", 2)

    assert [(e["reason"], e["count"], e["error"]) for e in log_entries] == [
        ("export_failed", 8, "UNAVAILABLE"),
        ("queue_full", 1, None),
        ("export_failed", 18, "DEADLINE_EXCEEDED"),  # everything since the last warning
    ]
    assert all(e["endpoint"] == "http://collector:4317 (grpc)" for e in log_entries)
    assert dropped(registry) == {"queue_full": 1, "export_failed": 26, "shutdown": 0}


def test_the_exporters_log_records_are_cut_to_one_per_message_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    name = "tests.exporter"  # a logger of its own: the SDK's loggers carry a DuplicateFilter of the SDK's
    limiter = ExportLogLimiter(interval=60, clock=clock).install([name])
    exporter_logger = logging.getLogger(name)
    caplog.set_level(logging.DEBUG, logger=name)
    try:
        for attempt in range(3):
            exporter_logger.warning("Transient error %s, retrying", attempt)
            exporter_logger.error("Failed to export traces to %s", "collector:4317")
            exporter_logger.debug("Reinitializing gRPC channel")
        clock.now += 60
        exporter_logger.error("Failed to export traces to %s", "collector:4317")
    finally:
        limiter.remove()
    exporter_logger.error("Failed to export traces to %s", "collector:4317")  # removed: no limit
    assert [r.getMessage() for r in caplog.records] == [
        "Transient error 0, retrying",
        "Failed to export traces to collector:4317",
        "Reinitializing gRPC channel",
        "Reinitializing gRPC channel",
        "Reinitializing gRPC channel",
        "Failed to export traces to collector:4317",
        "Failed to export traces to collector:4317",
    ]


# -- the metrics endpoint -----------------------------------------------------------------------

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(url: str) -> str:
    request = urllib.request.Request(url, headers={"Accept": OPENMETRICS})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").removesuffix("/metrics").rsplit(":", 1)
    sock = socket.socket()
    if receive_buffer is not None:  # set before connecting, so the window stays that small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    return sock


async def test_stuck_scrapers_hold_up_neither_other_scrapes_nor_the_pipeline() -> None:
    registry = CollectorRegistry()
    # A response of a few MB: a client that stops reading blocks the server's write to it.
    bulk = Gauge("bulk", "Enough series to fill every socket buffer on the way.", ["series"], registry=registry)
    for i in range(40_000):
        bulk.labels(f"series-{i:05d}-{'x' * 40}").set(i)
    with hayscope.setup_telemetry(
        traces_exporter="none", metrics_port=0, registry=registry, set_global=False
    ) as telemetry:
        url = telemetry.metrics_url
        silent = connect(url)  # connects, never sends a request
        stalled = connect(url, receive_buffer=4096)  # asks, then reads nothing for now
        stalled.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {OPENMETRICS}\r\n\r\n".encode())
        stalled.recv(1024)  # the answer has started: the server's handler is now writing into a full window

        outputs = await run_traced(telemetry, 3)
        exposition = scrape(url)

        stalled.settimeout(10)
        rest = b""
        while chunk := stalled.recv(1 << 16):
            rest += chunk
            if rest.endswith(b"# EOF\n"):
                break
        silent.close()
        stalled.close()
    assert outputs == await run_plain(3)
    assert 'haystack_pipeline_runs_total{pipeline="faults",status="ok"} 3.0' in exposition
    assert exposition.endswith("# EOF\n")
    assert rest.endswith(b"# EOF\n")  # the slow scrape completed too


def test_a_connection_that_never_sends_is_closed_after_the_connection_timeout() -> None:
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, connection_timeout=0.3)
    try:
        silent = connect(server.url)
        silent.settimeout(5)
        started = time.monotonic()
        assert silent.recv(1024) == b""  # the server hung up: its thread is free again
        assert 0.2 < time.monotonic() - started < 3
        silent.close()
        assert "# EOF" in scrape(server.url)
    finally:
        server.stop()
