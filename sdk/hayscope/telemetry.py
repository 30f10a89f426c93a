"""`setup_telemetry()`: one call that wires traces, metrics and logs for an application; `shutdown()` undoes it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from hayscope import settings
from hayscope.loop import DEFAULT_INTERVAL, DEFAULT_THRESHOLD, LoopLagMonitor
from hayscope.metrics import register_metrics

__all__ = ["Telemetry", "setup_telemetry"]

logger = logging.getLogger(__name__)

LOG_FORMATS = ("console", "json", "keyvalue")

_lock = threading.Lock()
_active: Telemetry | None = None


class Telemetry:
    """What `setup_telemetry()` started. `shutdown()` (or leaving the `with` block) flushes and stops it all."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        registry: CollectorRegistry,
        metrics_server: Any | None,
        structlog_config: dict[str, Any] | None,
        loop_monitor: LoopLagMonitor | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.registry = registry
        self._metrics_server = metrics_server
        self._structlog_config = structlog_config
        self.loop_monitor = loop_monitor
        self._stopped = False

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes, e.g. `http://127.0.0.1:9464/metrics`; None when not served."""
        if self._metrics_server is None:
            return None
        host, port = self._metrics_server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/metrics"

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Hand every finished span to the exporter now and wait for it (not a guarantee it was accepted)."""
        return self.tracer_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop the span pipeline, stop the metrics server, restore structlog. Idempotent."""
        global _active
        with _lock:
            if self._stopped:
                return
            self._stopped = True
            if _active is self:
                _active = None
        if self.loop_monitor is not None:
            self.loop_monitor.stop()
        self.tracer_provider.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
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
    set_global: bool = True,
) -> Telemetry:
    """Set up traces, metrics and (optionally) structlog for an application, and return the handle that stops them.

    Each argument beats its environment variable, which beats the default:

    - `service_name` (`OTEL_SERVICE_NAME`, default `haystack`): the `service.name` resource attribute.
    - `traces_exporter` (`OTEL_TRACES_EXPORTER`, default `otlp`): `otlp`, `console` or `none`.
      `span_exporter` replaces it with an exporter of your own.
    - `otlp_endpoint` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT`),
      `otlp_protocol` (`..._TRACES_PROTOCOL`, then `OTEL_EXPORTER_OTLP_PROTOCOL`; `grpc` or `http/protobuf`,
      default `grpc`), `otlp_headers` (`..._TRACES_HEADERS`, then `OTEL_EXPORTER_OTLP_HEADERS`),
      `otlp_timeout` in seconds (`..._TRACES_TIMEOUT`, then `OTEL_EXPORTER_OTLP_TIMEOUT`, in seconds as
      the Python exporters read them; default 10): how long one export, retries included, may take.
    - `sampler` (`OTEL_TRACES_SAMPLER`, default `parentbased_always_on`) and `sampler_ratio`
      (`OTEL_TRACES_SAMPLER_ARG`, default 1.0) for the `*traceidratio` samplers.
    - `metrics_host` (`HAYSCOPE_METRICS_HOST`, default 127.0.0.1) and `metrics_port`
      (`HAYSCOPE_METRICS_PORT`, default 9464; 0 picks a free port): the OpenMetrics endpoint serving
      `registry` (default: the global `REGISTRY`); `serve_metrics=False` serves nothing.
    - `configure_logging=True` configures structlog with `add_trace_context` and a `console`, `json`
      or `keyvalue` renderer; `shutdown()` restores the previous structlog configuration.
    - `monitor_event_loop=True` starts a `LoopLagMonitor` (heartbeat every `loop_lag_interval` s,
      stalls over `loop_block_threshold` s attributed) on the running loop: call setup from inside
      it, e.g. in your application's startup.
    - `set_global=True` makes the provider OpenTelemetry's global one, if none is set yet, so that
      `TracedAsyncPipeline()` and other instrumentations use it without being told.

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
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: _service_name(service_name)}),
            sampler=_sampler(sampler, sampler_ratio),
        )
        if registry is None:
            registry = REGISTRY
        register_metrics(registry, duration_buckets=duration_buckets)
        monitor = _loop_monitor(registry, loop_lag_interval, loop_block_threshold) if monitor_event_loop else None
        exporter = span_exporter if span_exporter is not None else _span_exporter(
            traces_exporter, otlp_endpoint, otlp_protocol, otlp_headers, otlp_timeout
        )
        try:
            server = _serve_metrics(registry, metrics_host, metrics_port) if serve_metrics else None
        except ValueError:
            if exporter is not None:
                exporter.shutdown()
            raise
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        structlog_config = _configure_structlog(log_format) if configure_logging else None
        if set_global:
            _set_global_provider(provider)
        if monitor is not None:
            monitor.start()
        _active = Telemetry(provider, registry, server, structlog_config, monitor)
        return _active


def _loop_monitor(registry: CollectorRegistry | None, interval: float, threshold: float) -> LoopLagMonitor:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ValueError(
            "monitor_event_loop=True needs a running event loop to watch: call setup_telemetry() from inside "
            "it (e.g. in your application's startup), or use `async with LoopLagMonitor():` there."
        ) from None
    return LoopLagMonitor(interval=interval, threshold=threshold, registry=registry)


def _service_name(argument: str | None) -> str:
    value, source = settings.pick(argument, settings.OTEL_SERVICE_NAME)
    if value is None:
        return settings.DEFAULT_SERVICE_NAME
    return settings.text(value, source, "service_name", "rag-api")


def _sampler(argument: str | Sampler | None, ratio_argument: float | None) -> Sampler:
    if isinstance(argument, Sampler):
        return argument
    value, source = settings.pick(argument, settings.OTEL_TRACES_SAMPLER)
    name = "parentbased_always_on" if value is None else settings.choice(value, source, "sampler", settings.SAMPLERS)
    ratio_value, ratio_source = settings.pick(ratio_argument, settings.OTEL_TRACES_SAMPLER_ARG)
    ratio = 1.0 if ratio_value is None else settings.ratio(ratio_value, ratio_source, "sampler_ratio")
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }[name.removeprefix("parentbased_")]
    return ParentBased(root) if name.startswith("parentbased_") else root


def _span_exporter(
    exporter_argument: str | None,
    endpoint_argument: str | None,
    protocol_argument: str | None,
    headers_argument: Mapping[str, str] | None,
    timeout_argument: float | None,
) -> SpanExporter | None:
    value, source = settings.pick(exporter_argument, settings.OTEL_TRACES_EXPORTER)
    kind = "otlp" if value is None else settings.choice(value, source, "traces_exporter", settings.EXPORTERS)
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
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

        return GrpcExporter(
            endpoint=endpoint, headers=headers, timeout=timeout, insecure=endpoint.startswith("http://")
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=endpoint, headers=headers, timeout=timeout)


def _endpoint(argument: str | None, protocol: str) -> str:
    value, source = settings.pick(argument, settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    base = False
    if value is None:
        value, source = settings.pick(None, settings.OTEL_EXPORTER_OTLP_ENDPOINT)
        base = value is not None
    if value is None:
        return settings.DEFAULT_ENDPOINTS[protocol]
    url = settings.endpoint(value, source, "otlp_endpoint")
    if protocol == "http/protobuf" and (base or url.partition("://")[2].rstrip("/").count("/") == 0):
        # A base endpoint (the generic variable, or a URL without a path) gets the signal's path.
        return url.rstrip("/") + "/v1/traces"
    return url


def _serve_metrics(registry: CollectorRegistry, host_argument: str | None, port_argument: int | None) -> Any:
    value, source = settings.pick(host_argument, settings.HAYSCOPE_METRICS_HOST)
    host = settings.DEFAULT_METRICS_HOST if value is None else settings.text(value, source, "metrics_host", "127.0.0.1")
    value, source = settings.pick(port_argument, settings.HAYSCOPE_METRICS_PORT)
    port = settings.DEFAULT_METRICS_PORT if value is None else settings.port(value, source, "metrics_port")
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ValueError(
            f"cannot serve metrics on {host}:{port} ({error.strerror or error}): pass another metrics_port "
            f"(or set {settings.HAYSCOPE_METRICS_PORT}), 0 for a free port, or serve_metrics=False."
        ) from error
    return server


def _configure_structlog(log_format: str) -> dict[str, Any]:
    import structlog

    from hayscope.logs import add_trace_context

    previous = structlog.get_config()
    renderer: Any = {
        "console": structlog.dev.ConsoleRenderer,
        "json": structlog.processors.JSONRenderer,
        "keyvalue": structlog.processors.KeyValueRenderer,
    }[log_format]()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
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
