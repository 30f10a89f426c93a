"""`setup_telemetry()`: one call that wires traces, metrics and logs for an application; `shutdown()` undoes it."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from prometheus_client import REGISTRY, CollectorRegistry

from hayscope import settings
from hayscope.content import (
    DEFAULT_MAX_LENGTH,
    ContentCapture,
    Redactor,
    content_capture,
    content_policy,
    use_content_capture,
)
from hayscope.loop import DEFAULT_INTERVAL, DEFAULT_THRESHOLD, LoopLagMonitor, check_interval
from hayscope.metrics import register_metrics
from hayscope.multiprocess import multiprocess_dir, multiprocess_registry
from hayscope.serving import MetricsServer
from hayscope.span_export import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    DropReporter,
    ExportLogLimiter,
    FanOutSpanExporter,
    GuardedBatchSpanProcessor,
    GuardedSpanExporter,
    run_within,
)

__all__ = ["Telemetry", "setup_telemetry"]

logger = logging.getLogger(__name__)

LOG_FORMATS = ("console", "json", "keyvalue")

_lock = threading.Lock()
_active: Telemetry | None = None


class Telemetry:
    """What `setup_telemetry()` started. `shutdown()` (or leaving the `with` block) flushes and stops it all.

    In a process forked after setup (gunicorn's `preload_app`, multiprocessing's `fork`) the handle
    keeps working: spans go through an exporter of the child's own, the metrics endpoint stays the
    parent's (the child closed its copy of the port), and `shutdown()` stops what is the child's.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        registry: CollectorRegistry,
        metrics_server: MetricsServer | None,
        structlog_config: dict[str, Any] | None,
        loop_monitor: LoopLagMonitor | None = None,
        span_processor: GuardedBatchSpanProcessor | None = None,
        log_limiter: ExportLogLimiter | None = None,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.registry = registry
        self._metrics_server = metrics_server
        self._structlog_config = structlog_config
        self.loop_monitor = loop_monitor
        self.span_processor = span_processor
        self._log_limiter = log_limiter
        self.multiprocess_dir = multiprocess_dir
        self.previous_content = ContentCapture()  # the content policy to restore at shutdown
        self._stopped = False

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes, e.g. `http://127.0.0.1:9464/metrics`; None when not served."""
        return None if self._metrics_server is None else self._metrics_server.url

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Hand every finished span to the exporter now and wait for it, at most `timeout_millis`.

        False when the time ran out (a collector that does not answer); True is no guarantee the
        collector accepted the spans (failed exports are counted in `hayscope_spans_dropped_total`).
        It blocks the calling thread: from a coroutine, `await asyncio.to_thread(telemetry.force_flush)`.
        """
        return self.tracer_provider.force_flush(timeout_millis)

    def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Flush and stop the span pipeline, stop the metrics server, restore structlog. Idempotent.

        Returns within `timeout` seconds whatever the collector does: spans it could not export by
        then are counted in `hayscope_spans_dropped_total{reason="shutdown"}` and logged once.
        """
        global _active
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout={timeout!r} is not a timeout: give a positive number of seconds, e.g. 5.")
        deadline = time.monotonic() + timeout
        with _lock:
            if self._stopped:
                return
            self._stopped = True
            if _active is self:
                _active = None
        if self.loop_monitor is not None:
            self.loop_monitor.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()  # at most the serving loop's poll interval
        if self.span_processor is not None:
            self.span_processor.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)
        # The provider shuts down its processors again (ours returns at once) and any added since.
        run_within(self.tracer_provider.shutdown, deadline - time.monotonic(), "hayscope-shutdown")
        _release_global_provider(self.tracer_provider)
        if self._log_limiter is not None:
            self._log_limiter.remove()
        use_content_capture(self.previous_content)
        if self._structlog_config is not None:
            import structlog

            structlog.configure(**self._structlog_config)

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def setup_telemetry(
    service_name: str | None = None,
    *,
    traces_exporter: str | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    otlp_timeout: float | None = None,
    sampler: str | Sampler | None = None,
    sampler_ratio: float | None = None,
    span_exporter: SpanExporter | None = None,
    serve_metrics: bool = True,
    metrics_host: str | None = None,
    metrics_port: int | None = None,
    registry: CollectorRegistry | None = None,
    duration_buckets: Iterable[float] | None = None,
    configure_logging: bool = False,
    log_format: str = "console",
    monitor_event_loop: bool = False,
    loop_lag_interval: float = DEFAULT_INTERVAL,
    loop_block_threshold: float = DEFAULT_THRESHOLD,
    capture_content: bool | None = None,
    content_max_length: int = DEFAULT_MAX_LENGTH,
    redact: Redactor | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Set up traces, metrics and (optionally) structlog for an application, and return the handle that stops them.

    Each argument beats its environment variable, which beats the default:

    - `service_name` (`OTEL_SERVICE_NAME`, then `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, default
      `haystack`): the `service.name` resource attribute.
    - `traces_exporter` (`OTEL_TRACES_EXPORTER`, default `otlp`): `otlp`, `console` or `none`, or a
      comma-separated list such as `otlp,console` (each batch goes to each).
      `span_exporter` replaces it with an exporter of your own.
    - `otlp_endpoint` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, then `OTEL_EXPORTER_OTLP_ENDPOINT`;
      for http/protobuf the latter, and an argument without a path, get `/v1/traces`),
      `otlp_protocol` (`..._TRACES_PROTOCOL`, then `OTEL_EXPORTER_OTLP_PROTOCOL`; `grpc` or `http/protobuf`,
      default `grpc`), `otlp_headers` (`..._TRACES_HEADERS`, then `OTEL_EXPORTER_OTLP_HEADERS`),
      `otlp_timeout` in seconds (`..._TRACES_TIMEOUT`, then `OTEL_EXPORTER_OTLP_TIMEOUT`, in seconds as
      the Python exporters read them; default 10): how long one export, retries included, may take.
    - `sampler` (`OTEL_TRACES_SAMPLER`, default `parentbased_always_on`) and `sampler_ratio`
      (`OTEL_TRACES_SAMPLER_ARG`, default 1.0) for the `*traceidratio` samplers; `sampler_ratio` passed
      with no sampler named picks `parentbased_traceidratio`, with one that takes no ratio it is refused.
    - `metrics_host` (`HAYSCOPE_METRICS_HOST`, default 127.0.0.1) and `metrics_port`
      (`HAYSCOPE_METRICS_PORT`, default 9464; 0 picks a free port): the OpenMetrics endpoint serving
      `registry` (default: the global `REGISTRY`; in multiprocess mode, below, every process's
      metrics instead); `serve_metrics=False` serves nothing.
    - `configure_logging=True` configures structlog with `add_trace_context` and a `console`, `json`
      or `keyvalue` renderer; `shutdown()` restores the previous structlog configuration.
    - `monitor_event_loop=True` starts a `LoopLagMonitor` (heartbeat every `loop_lag_interval` s,
      stalls over `loop_block_threshold` s attributed) on the running loop: call setup from inside
      it, e.g. in your application's startup.
    - `capture_content` (`HAYSTACK_CONTENT_TRACING_ENABLED`, default false): record component inputs
      and outputs, pipeline data, prompts and replies on spans, each cut to `content_max_length`
      characters, scrubbed of credentials and passed through `redact(key, value)` first (see
      `hayscope.content`); `shutdown()` restores the previous policy.
    - `set_global=True` makes the provider OpenTelemetry's global one, if none is set yet, so that
      `TracedAsyncPipeline()` and other instrumentations use it without being told; `shutdown()`
      gives the place up again, for the next setup.

    Span export never holds the application up (see `hayscope.span_export`): spans wait in a queue
    of at most `OTEL_BSP_MAX_QUEUE_SIZE` spans (default 2048: the memory it may take; the batch size
    and schedule delay variables apply too, while one export is bounded by `otlp_timeout`: the SDK
    does not use `OTEL_BSP_EXPORT_TIMEOUT`) and are exported on the processor's thread. Spans that never
    reach the collector are counted in `hayscope_spans_dropped_total{reason}` and logged once a
    minute at most; the exporters' own log records are cut to one per message and minute while set
    up. `Telemetry.shutdown(timeout)` returns within its timeout whatever the collector does.

    With `PROMETHEUS_MULTIPROC_DIR` set (before Python starts), metrics use prometheus_client's
    multiprocess mode: the endpoint serves the metrics of every worker process (see
    `hayscope.multiprocess` for the set-up and its limits). A process forked after setup keeps
    exporting spans through an exporter of its own.

    A second call while telemetry is set up returns the same handle and starts nothing more; call
    `shutdown()` first to set it up differently. Bad values raise `ValueError` here, never later.
    """
    global _active
    with _lock:
        if _active is not None:
            logger.warning("hayscope telemetry is already set up; returning the active handle unchanged")
            return _active
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log_format={log_format!r} is not supported: use one of {', '.join(LOG_FORMATS)}.")
        _check_flags(
            serve_metrics=serve_metrics,
            configure_logging=configure_logging,
            monitor_event_loop=monitor_event_loop,
            set_global=set_global,
        )
        check_interval("loop_lag_interval", loop_lag_interval)
        check_interval("loop_block_threshold", loop_block_threshold)
        if span_exporter is not None and not isinstance(span_exporter, SpanExporter):
            raise TypeError(
                f"span_exporter={span_exporter!r} is not an opentelemetry SpanExporter: pass an exporter instance, "
                "or use traces_exporter='otlp' / 'console' / 'none' to choose one by name."
            )
        settings.check_batch_variables()
        mp_dir = multiprocess_dir()  # before any metric exists: a bad value fails here, not in prometheus_client
        content_value, content_source = settings.pick(capture_content, settings.HAYSTACK_CONTENT_TRACING_ENABLED)
        content_on = False if content_value is None else settings.boolean(content_value, content_source, "capture_content")
        content = content_policy(
            content_on, max_length=content_max_length, redact=redact, max_length_name="content_max_length"
        )
        provider = TracerProvider(
            resource=_resource(service_name),
            sampler=_sampler(sampler, sampler_ratio),
        )
        if span_exporter is not None:
            choice: _ExporterChoice | None = _ExporterChoice(
                lambda: span_exporter, f"{type(span_exporter).__name__} (span_exporter)", rebuild_after_fork=False
            )
        else:
            choice = _span_exporter(traces_exporter, otlp_endpoint, otlp_protocol, otlp_headers, otlp_timeout)
        if monitor_event_loop:
            _check_running_loop()
        address = _metrics_address(metrics_host, metrics_port) if serve_metrics else None
        if registry is None:
            registry = REGISTRY
        # Every value is checked: from here on a failure (a port in use, buckets that differ from
        # those registered) undoes what was started.
        served = multiprocess_registry(mp_dir) if mp_dir is not None else registry
        server = _serve_metrics(served, address, mp_dir is not None) if address is not None else None
        processor = limiter = None
        try:
            metrics = register_metrics(registry, duration_buckets=duration_buckets)
            monitor = (
                LoopLagMonitor(interval=loop_lag_interval, threshold=loop_block_threshold, registry=registry)
                if monitor_event_loop
                else None
            )
            if choice is not None:
                reporter = DropReporter(metrics.spans_dropped, choice.endpoint)
                rebuild = choice.build if choice.rebuild_after_fork else None
                processor = GuardedBatchSpanProcessor(GuardedSpanExporter(choice.build(), reporter, rebuild), reporter)
        except BaseException:
            if server is not None:
                server.stop()
            raise
        if processor is not None:
            provider.add_span_processor(processor)
            limiter = ExportLogLimiter().install()
        structlog_config = _configure_structlog(log_format) if configure_logging else None
        if set_global:
            _set_global_provider(provider)
        if monitor is not None:
            monitor.start()
        _active = Telemetry(provider, registry, server, structlog_config, monitor, processor, limiter, mp_dir)
        _active.previous_content = content_capture()
        use_content_capture(content)
        return _active


def _check_flags(**flags: object) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name}={value!r} is not a bool: pass True or False.")


def _check_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ValueError(
            "monitor_event_loop=True needs a running event loop to watch: call setup_telemetry() from inside "
            "it (e.g. in your application's startup), or use `async with LoopLagMonitor():` there."
        ) from None


def _resource(service_name: str | None) -> Resource:
    """The resource with `service.name` from the argument, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`
    (which `Resource.create` reads, with the rest of that variable) or the default, in that order."""
    value, source = settings.pick(service_name, settings.OTEL_SERVICE_NAME)
    if value is not None:
        return Resource.create({SERVICE_NAME: settings.text(value, source, "service_name", "rag-api")})
    detected = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    if isinstance(detected, str) and detected.strip():
        return Resource.create({SERVICE_NAME: detected.strip()})
    return Resource.create({SERVICE_NAME: settings.DEFAULT_SERVICE_NAME})


def _sampler(argument: str | Sampler | None, ratio_argument: float | None) -> Sampler:
    if isinstance(argument, Sampler):
        if ratio_argument is not None:
            raise ValueError(
                f"sampler_ratio={ratio_argument!r} would be ignored: sampler={argument!r} is a Sampler of "
                "your own. Give it its ratio, or pass sampler='parentbased_traceidratio' with sampler_ratio."
            )
        return argument
    value, source = settings.pick(argument, settings.OTEL_TRACES_SAMPLER)
    ratio_value, ratio_source = settings.pick(ratio_argument, settings.OTEL_TRACES_SAMPLER_ARG)
    if value is None:
        # A ratio passed with no sampler named anywhere asks for the ratio sampler (the variable
        # alone does not: OpenTelemetry ignores it for samplers that take no argument).
        name = "parentbased_traceidratio" if ratio_source == "argument" else "parentbased_always_on"
    else:
        name = settings.choice(value, source, "sampler", settings.SAMPLERS)
    takes_ratio = name.endswith("traceidratio")
    ratio = 1.0
    if ratio_value is not None and (takes_ratio or ratio_source == "argument"):
        ratio = settings.ratio(ratio_value, ratio_source, "sampler_ratio")
    if ratio_source == "argument" and not takes_ratio:
        where = "sampler=" if source == "argument" else f"{source}="
        raise ValueError(
            f"sampler_ratio={ratio_argument!r} would be ignored: {where}{value!r} takes no ratio. Use "
            "sampler='parentbased_traceidratio' (or 'traceidratio') with it, or leave sampler_ratio out."
        )
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }[name.removeprefix("parentbased_")]
    return ParentBased(root) if name.startswith("parentbased_") else root


class _ExporterChoice:
    """How to build the span exporter the settings asked for (again, in a forked child), and where it sends."""

    def __init__(self, build: Callable[[], SpanExporter], endpoint: str, rebuild_after_fork: bool = True) -> None:
        self.build = build
        self.endpoint = endpoint
        self.rebuild_after_fork = rebuild_after_fork


def _span_exporter(
    exporter_argument: str | None,
    endpoint_argument: str | None,
    protocol_argument: str | None,
    headers_argument: Mapping[str, str] | None,
    timeout_argument: float | None,
) -> _ExporterChoice | None:
    """The exporters the settings ask for (`otlp,console`: both, each batch to each), or None for `none`."""
    value, source = settings.pick(exporter_argument, settings.OTEL_TRACES_EXPORTER)
    kinds = (
        ["otlp"]
        if value is None
        else settings.choices(value, source, "traces_exporter", settings.EXPORTERS, alone="none")
    )
    if kinds == ["none"]:
        return None
    chosen = [
        _ExporterChoice(ConsoleSpanExporter, "console")
        if kind == "console"
        else _otlp_exporter(endpoint_argument, protocol_argument, headers_argument, timeout_argument)
        for kind in kinds
    ]
    if len(chosen) == 1:
        return chosen[0]
    return _ExporterChoice(
        lambda: FanOutSpanExporter([choice.build() for choice in chosen]), " + ".join(c.endpoint for c in chosen)
    )


def _otlp_exporter(
    endpoint_argument: str | None,
    protocol_argument: str | None,
    headers_argument: Mapping[str, str] | None,
    timeout_argument: float | None,
) -> _ExporterChoice:
    value, source = settings.pick(
        protocol_argument, settings.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, settings.OTEL_EXPORTER_OTLP_PROTOCOL
    )
    protocol = "grpc" if value is None else settings.choice(value, source, "otlp_protocol", settings.PROTOCOLS)
    endpoint = _endpoint(endpoint_argument, protocol)
    value, source = settings.pick(
        headers_argument, settings.OTEL_EXPORTER_OTLP_TRACES_HEADERS, settings.OTEL_EXPORTER_OTLP_HEADERS
    )
    headers = None if value is None else settings.headers(value, source, "otlp_headers")
    value, source = settings.pick(
        timeout_argument, settings.OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, settings.OTEL_EXPORTER_OTLP_TIMEOUT
    )
    timeout = None if value is None else settings.seconds(value, source, "otlp_timeout")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        def grpc_exporter() -> SpanExporter:
            return GrpcExporter(
                endpoint=endpoint, headers=headers, timeout=timeout, insecure=endpoint.startswith("http://")
            )

        return _ExporterChoice(grpc_exporter, f"{endpoint} (grpc)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    def http_exporter() -> SpanExporter:
        return HttpExporter(endpoint=endpoint, headers=headers, timeout=timeout)

    return _ExporterChoice(http_exporter, f"{endpoint} (http/protobuf)")


def _endpoint(argument: str | None, protocol: str) -> str:
    value, source = settings.pick(argument, settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    base = False
    if value is None:
        value, source = settings.pick(None, settings.OTEL_EXPORTER_OTLP_ENDPOINT)
        base = value is not None
    if value is None:
        return settings.DEFAULT_ENDPOINTS[protocol]
    url = settings.endpoint(value, source, "otlp_endpoint")
    if protocol == "http/protobuf" and (
        base or (source == "argument" and urllib.parse.urlsplit(url).path.strip("/") == "")
    ):
        # A base endpoint (the generic variable, or an argument without a path) gets the signal's
        # path; the traces variable is used as it is, as the specification says.
        parts = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/v1/traces"))
    return url


def _metrics_address(host_argument: str | None, port_argument: int | None) -> tuple[str, int]:
    value, source = settings.pick(host_argument, settings.HAYSCOPE_METRICS_HOST)
    host = settings.DEFAULT_METRICS_HOST if value is None else settings.text(value, source, "metrics_host", "127.0.0.1")
    value, source = settings.pick(port_argument, settings.HAYSCOPE_METRICS_PORT)
    port = settings.DEFAULT_METRICS_PORT if value is None else settings.port(value, source, "metrics_port")
    return host, port


def _serve_metrics(registry: CollectorRegistry, address: tuple[str, int], reuse_port: bool) -> MetricsServer:
    host, port = address
    try:
        return MetricsServer(registry, host, port, reuse_port=reuse_port)
    except OSError as error:
        if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
            fix = (
                f"pass a metrics_host this machine has (or set {settings.HAYSCOPE_METRICS_HOST}): 127.0.0.1 "
                "for this machine only, 0.0.0.0 for every interface"
            )
        else:
            fix = (
                f"pass another metrics_port (or set {settings.HAYSCOPE_METRICS_PORT}), 0 for a free port, "
                "or serve_metrics=False"
            )
        raise ValueError(f"cannot serve metrics on {host}:{port} ({error.strerror or error}): {fix}.") from error


def _configure_structlog(log_format: str) -> dict[str, Any]:
    import structlog

    from hayscope.logs import add_trace_context

    previous = structlog.get_config()
    renderer: Any = {
        "console": structlog.dev.ConsoleRenderer,
        "json": structlog.processors.JSONRenderer,
        "keyvalue": structlog.processors.KeyValueRenderer,
    }[log_format]()
    if structlog.is_configured():
        logger.warning(
            "configure_logging=True replaces the structlog configuration already made (its processors "
            "included); to keep yours, leave configure_logging out and add hayscope.add_trace_context "
            "to your processors"
        )
    # The console renderer formats exceptions and stacks itself; the others get them as text fields.
    as_text = [] if log_format == "console" else [structlog.processors.format_exc_info]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            *as_text,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_context,
            renderer,
        ]
    )
    return previous


def _set_global_provider(provider: TracerProvider) -> None:
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
        return
    logger.warning(
        "an OpenTelemetry TracerProvider is already global; hayscope's is not made global: pass "
        "tracer_provider=telemetry.tracer_provider to TracedAsyncPipeline"
    )


def _release_global_provider(provider: TracerProvider) -> None:
    """After `provider` shut down: it stops being OpenTelemetry's global provider, so that the next
    `setup_telemetry()` can make its own global (the API sets one only once per process, and the
    pipelines on the global provider would record into the dead one). With an API whose globals
    differ from these, the provider stays global, as before (the next setup then warns)."""
    once = getattr(trace, "_TRACER_PROVIDER_SET_ONCE", None)
    lock = getattr(once, "_lock", None)
    if lock is None or not hasattr(once, "_done") or not hasattr(trace, "_TRACER_PROVIDER"):
        return
    with lock:
        if trace._TRACER_PROVIDER is provider:
            trace._TRACER_PROVIDER = None
            once._done = False
