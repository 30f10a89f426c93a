"""`OtlpReceiver`: an in-process OTLP trace receiver (gRPC and HTTP/protobuf), for tests that export for real.

It stands in for Jaeger or an OpenTelemetry Collector: real exporters send real requests over real
sockets, and the test reads back what arrived.

>>> with OtlpReceiver() as receiver:
...     telemetry = setup_telemetry(otlp_endpoint=receiver.grpc_endpoint, otlp_protocol="grpc", ...)
...     ...                                      # run something traced, then telemetry.force_flush()
...     spans = receiver.wait_for_spans(3)       # blocks until 3 spans arrived (TimeoutError otherwise)
...     receiver.headers()                       # request metadata, one dict per received request

It can also play a collector in trouble: `delay` seconds before each answer (a slow one), `fail`
answering every export with an error (gRPC UNAVAILABLE, HTTP 503: an overloaded one). Both are
attributes, read per request, so a test may change them while the receiver runs.
"""

from __future__ import annotations

import gzip
import socket
import threading
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

__all__ = ["OtlpReceiver", "ReceivedSpan"]

Transport = Literal["grpc", "http"]

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived at the receiver, with ids as lower-case hex and attributes as plain Python values."""

    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None  # 16 hex digits; None for a root span
    attributes: dict[str, Any]
    resource: dict[str, Any]  # the attributes of the span's resource, e.g. {"service.name": "rag-api", ...}
    status_code: int  # 0 unset, 1 ok, 2 error
    events: list[str]  # event names, in order
    transport: Transport


class OtlpReceiver:
    """Receives OTLP traces over gRPC and HTTP/protobuf on 127.0.0.1, keeping every span in memory.

    Both servers listen on free ports (port 0) unless `grpc_port` / `http_port` say otherwise.
    `start()` and `stop()` are symmetric, and the receiver is a context manager doing both.

    :param host: the address both servers bind.
    :param grpc_port: the gRPC port; 0 picks a free one.
    :param http_port: the HTTP port; 0 picks a free one.
    :param delay: seconds to wait before answering each export request.
    :param fail: answer every export request with an error (gRPC UNAVAILABLE, HTTP 503) and keep nothing.
    """

    def __init__(
        self, host: str = "127.0.0.1", grpc_port: int = 0, http_port: int = 0, *, delay: float = 0.0, fail: bool = False
    ) -> None:
        self.host = host
        self.delay = delay
        self.fail = fail
        self._requested_ports = (grpc_port, http_port)
        self._condition = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._headers: list[dict[str, str]] = []
        self._failed_requests = 0
        self._stopping = threading.Event()
        self._grpc_server: Any | None = None
        self._grpc_executor: ThreadPoolExecutor | None = None
        self._grpc_port: int | None = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Start both servers; returns the receiver. Raises `RuntimeError` when already started."""
        if self._grpc_server is not None:
            raise RuntimeError("OtlpReceiver is already started")
        self._stopping.clear()
        grpc_port, http_port = self._requested_ports
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver-grpc")
        server = grpc.server(executor)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        bound = server.add_insecure_port(_host_port(self.host, grpc_port))
        if not bound:
            executor.shutdown(wait=False)
            raise OSError(f"OtlpReceiver cannot bind gRPC on {_host_port(self.host, grpc_port)}")
        server.start()
        try:
            http_server = _HttpServer(self, (self.host, http_port))
        except BaseException:
            server.stop(grace=None).wait()
            executor.shutdown(wait=True)
            raise
        # A short poll interval: `stop()` waits up to one interval for the serving loop to notice.
        thread = threading.Thread(
            target=http_server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-receiver-http", daemon=True
        )
        thread.start()
        self._grpc_server, self._grpc_executor, self._grpc_port = server, executor, bound
        self._http_server, self._http_thread = http_server, thread
        return self

    def stop(self) -> None:
        """Stop both servers and free their ports; received spans stay readable. Idempotent."""
        server, executor, http_server, thread = (
            self._grpc_server,
            self._grpc_executor,
            self._http_server,
            self._http_thread,
        )
        self._grpc_server = self._grpc_executor = self._grpc_port = None
        self._http_server = self._http_thread = None
        self._stopping.set()  # cuts short the delay of requests being answered
        if server is not None:
            server.stop(grace=None).wait()
        if executor is not None:
            executor.shutdown(wait=True)
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- endpoints -----------------------------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        """The gRPC endpoint, e.g. `http://127.0.0.1:4317` (pass it as `otlp_endpoint` with protocol grpc)."""
        if self._grpc_port is None:
            raise RuntimeError("OtlpReceiver is not started: call start() or use it as a context manager")
        return f"http://{_host_port(self.host, self._grpc_port)}"

    @property
    def http_base_endpoint(self) -> str:
        """The HTTP base endpoint, e.g. `http://127.0.0.1:4318`, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it."""
        if self._http_server is None:
            raise RuntimeError("OtlpReceiver is not started: call start() or use it as a context manager")
        return f"http://{_host_port(self.host, self._http_server.server_address[1])}"

    @property
    def http_endpoint(self) -> str:
        """The HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`."""
        return self.http_base_endpoint + TRACES_PATH

    # -- what arrived --------------------------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._condition:
            return list(self._spans)

    def headers(self) -> list[dict[str, str]]:
        """The metadata (gRPC) or headers (HTTP) of every accepted request, keys lower-cased, in arrival order."""
        with self._condition:
            return [dict(headers) for headers in self._headers]

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least `count` spans were received and return them all; `TimeoutError` otherwise."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._spans) >= count, timeout):
                raise TimeoutError(
                    f"OtlpReceiver got {len(self._spans)} span(s) within {timeout}s, expected at least {count}"
                )
            return list(self._spans)

    def failed_requests(self) -> int:
        """How many export requests were answered with an error because `fail` was set."""
        with self._condition:
            return self._failed_requests

    def clear(self) -> None:
        """Forget every received span and request header, and the count of failed requests."""
        with self._condition:
            self._spans.clear()
            self._headers.clear()
            self._failed_requests = 0

    def _answer(self) -> bool:
        """Wait out `delay`; then True to accept the request, False (counted) to fail it."""
        if self.delay > 0:
            self._stopping.wait(self.delay)
        if not self.fail:
            return True
        with self._condition:
            self._failed_requests += 1
        return False

    def _record(
        self, request: trace_service_pb2.ExportTraceServiceRequest, headers: dict[str, str], transport: Transport
    ) -> None:
        spans = list(_flatten(request, transport))
        with self._condition:
            self._headers.append(headers)
            self._spans.extend(spans)
            self._condition.notify_all()


# -- gRPC ---------------------------------------------------------------------------------------


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 (the generated servicer's name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        metadata = {key.lower(): _text(value) for key, value in context.invocation_metadata()}
        if not self._receiver._answer():
            context.abort(grpc.StatusCode.UNAVAILABLE, "OtlpReceiver fails every export (fail=True)")
        self._receiver._record(request, metadata, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


# -- HTTP ---------------------------------------------------------------------------------------


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OtlpReceiver, address: tuple[str, int]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.receiver = receiver
        super().__init__(address, _TracesHandler)


class _TracesHandler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        # Read the whole body first, whatever the answer, so the connection stays in step.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path != TRACES_PATH:
            return self._reply(404, b"not found: POST OTLP traces to /v1/traces", "text/plain")
        if self.headers.get_content_type() != PROTOBUF:
            return self._reply(415, b"unsupported content type: send application/x-protobuf", "text/plain")
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("identity", "none"):
                return self._reply(415, f"unsupported content encoding {encoding!r}".encode(), "text/plain")
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except Exception as error:  # a corrupt body: a client error, never a crashed handler
            return self._reply(400, f"bad request: {error}".encode(), "text/plain")
        if not self.server.receiver._answer():
            return self._reply(503, b"OtlpReceiver fails every export (fail=True)", "text/plain")
        self.server.receiver._record(request, {key.lower(): value for key, value in self.headers.items()}, "http")
        self._reply(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """Silent: a test's output is no place for access logs."""


# -- decoding -----------------------------------------------------------------------------------


def _flatten(request: trace_service_pb2.ExportTraceServiceRequest, transport: Transport) -> Iterable[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    attributes=_attributes(span.attributes),
                    resource=dict(resource),
                    status_code=int(span.status.code),
                    events=[event.name for event in span.events],
                    transport=transport,
                )


def _attributes(key_values: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _value(value: common_pb2.AnyValue) -> Any:
    """An `AnyValue` as a Python value: str, bool, int, float, bytes, list or dict (None when empty)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _text(value: str | bytes) -> str:
    # gRPC hands `-bin` metadata over as bytes.
    return value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
