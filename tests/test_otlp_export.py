"""Real OTLP exporters, over real sockets, into the in-process `OtlpReceiver`.

Every test builds its telemetry with `setup_telemetry(...)` and shuts it down (its `with` block):
while a handle is active, `setup_telemetry` hands that one back instead of building a new one.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from haystack import Pipeline, component
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client import CollectorRegistry

import hayscope
from hayscope import telemetry as telemetry_module
from hayscope.testing import OtlpReceiver, ReceivedSpan

PIPELINE_SPAN = "haystack.pipeline.run export"
UPPER_SPAN = "haystack.component.run upper"
EXCLAIM_SPAN = "haystack.component.run exclaim"
EXECUTION_MODE = "haystack.component.execution_mode"
EXPECTED_RESULT = {"exclaim": {"text": "HI!"}}
PROTOCOLS = ("grpc", "http/protobuf")


@component
class Upper:
    """Has `run_async`: the pipeline awaits it on the loop."""

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        return {"text": text.upper()}

    @component.output_types(text=str)
    async def run_async(self, text: str) -> dict[str, Any]:
        return {"text": text.upper()}


@component
class Exclaim:
    """Sync only: the pipeline offloads it to a worker thread."""

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        return {"text": text + "!"}


def build(pipeline: Pipeline) -> Pipeline:
    pipeline.add_component("upper", Upper())
    pipeline.add_component("exclaim", Exclaim())
    pipeline.connect("upper.text", "exclaim.text")
    return pipeline


async def run_traced(telemetry: hayscope.Telemetry) -> dict[str, Any]:
    pipeline = hayscope.TracedAsyncPipeline(
        name="export", tracer_provider=telemetry.tracer_provider, registry=telemetry.registry
    )
    return await build(pipeline).run_async({"upper": {"text": "hi"}})


def setup(**kwargs: Any) -> hayscope.Telemetry:
    """`setup_telemetry` isolated from the process: no metrics server, no global provider, a fresh registry."""
    return hayscope.setup_telemetry(serve_metrics=False, set_global=False, registry=CollectorRegistry(), **kwargs)


def endpoint_for(receiver: OtlpReceiver, protocol: str) -> str:
    # For http/protobuf, setup_telemetry appends /v1/traces to a URL without a path.
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_base_endpoint


def transport_of(protocol: str) -> str:
    return "grpc" if protocol == "grpc" else "http"


def assert_export_tree(spans: list[ReceivedSpan], service_name: str, transport: str) -> None:
    """Exactly one run span (a root) with the two component spans under it, in one trace."""
    assert sorted(span.name for span in spans) == sorted([PIPELINE_SPAN, UPPER_SPAN, EXCLAIM_SPAN])
    by_name = {span.name: span for span in spans}
    root = by_name[PIPELINE_SPAN]
    assert root.parent_span_id is None
    assert len(root.trace_id) == 32 and int(root.trace_id, 16) != 0
    assert len(root.span_id) == 16 and int(root.span_id, 16) != 0
    for name in (UPPER_SPAN, EXCLAIM_SPAN):
        assert by_name[name].parent_span_id == root.span_id
    assert {span.trace_id for span in spans} == {root.trace_id}
    assert len({span.span_id for span in spans}) == 3
    assert by_name[UPPER_SPAN].attributes[EXECUTION_MODE] == "async"
    assert by_name[EXCLAIM_SPAN].attributes[EXECUTION_MODE] == "thread"
    assert root.attributes["haystack.pipeline.name"] == "export"
    assert all(span.resource["service.name"] == service_name for span in spans)
    assert all(span.status_code == 0 for span in spans)  # unset: success leaves the status alone
    assert {span.transport for span in spans} == {transport}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variable from the outside world; and no telemetry handle left active afterwards."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield
    leaked = telemetry_module._active
    if leaked is not None:  # a failed test's handle must not become the next test's
        leaked.shutdown()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """An endpoint that refuses connections: a port bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- the span tree, over each protocol ------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_pipeline_run_arrives_as_one_trace(receiver: OtlpReceiver, protocol: str) -> None:
    with setup(
        service_name="svc-under-test", otlp_protocol=protocol, otlp_endpoint=endpoint_for(receiver, protocol)
    ) as telemetry:
        assert await run_traced(telemetry) == EXPECTED_RESULT
        assert telemetry.force_flush()
        spans = receiver.wait_for_spans(3)
    assert_export_tree(spans, "svc-under-test", transport_of(protocol))
    assert len(receiver.spans()) == 3  # shutdown exported nothing more


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_gzip_compressed_exports_are_received(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    with setup(
        service_name="svc-under-test", otlp_protocol=protocol, otlp_endpoint=endpoint_for(receiver, protocol)
    ) as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
        spans = receiver.wait_for_spans(3)
    assert_export_tree(spans, "svc-under-test", transport_of(protocol))
    if protocol == "http/protobuf":
        assert receiver.headers()
        assert all(headers["content-encoding"] == "gzip" for headers in receiver.headers())


# -- environment variables ----------------------------------------------------------------------


async def test_environment_variables_alone_configure_the_export(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_base_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-from-env")
    with setup() as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
        spans = receiver.wait_for_spans(3)
    assert_export_tree(spans, "svc-from-env", "http")
    assert all(headers["content-type"] == "application/x-protobuf" for headers in receiver.headers())


async def test_arguments_beat_environment_variables(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, dead_endpoint: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", dead_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-from-env")
    with setup(
        service_name="svc-under-test", otlp_protocol="grpc", otlp_endpoint=receiver.grpc_endpoint
    ) as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
        spans = receiver.wait_for_spans(3)
    assert_export_tree(spans, "svc-under-test", "grpc")


async def test_service_name_from_otel_resource_attributes_is_kept(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=checkout-rag,deployment.environment=staging")
    with setup(otlp_protocol="grpc", otlp_endpoint=receiver.grpc_endpoint) as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
        spans = receiver.wait_for_spans(3)
    assert_export_tree(spans, "checkout-rag", "grpc")
    assert all(span.resource["deployment.environment"] == "staging" for span in spans)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")  # the more specific variable wins
    with setup(traces_exporter="none") as telemetry:
        assert telemetry.tracer_provider.resource.attributes["service.name"] == "from-service-name"


@pytest.mark.parametrize(
    ("where", "protocol"),
    [
        ("argument", "grpc"),
        ("argument", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http/protobuf"),
    ],
)
async def test_endpoint_forms_reach_the_collector(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, where: str, protocol: str
) -> None:
    # Schemes are case-insensitive; the traces variable is the full URL, the generic one a base
    # that gets /v1/traces, and an argument without a path gets it too.
    if where == "argument":
        endpoint = endpoint_for(receiver, protocol).replace("http://", "HTTP://")
    elif where == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
        endpoint = receiver.http_endpoint
    else:
        endpoint = receiver.http_base_endpoint
    arguments: dict[str, Any] = {"otlp_protocol": protocol}
    if where == "argument":
        arguments["otlp_endpoint"] = endpoint
    else:
        monkeypatch.setenv(where, endpoint)
    with setup(**arguments) as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
        spans = receiver.wait_for_spans(3)
    assert_export_tree(spans, "haystack", transport_of(protocol))


def test_a_list_of_exporters_exports_to_each(receiver: OtlpReceiver) -> None:
    # In a process of its own, so that the console exporter prints to a stdout of our own to read.
    code = textwrap.dedent(
        """
        import asyncio, sys
        sys.path.insert(0, sys.argv[1])
        import test_otlp_export as here
        with here.setup(otlp_protocol="grpc", otlp_endpoint=sys.argv[2]) as telemetry:
            asyncio.run(here.run_traced(telemetry))
            assert telemetry.force_flush()
        """
    )
    environment = {**os.environ, "OTEL_TRACES_EXPORTER": "otlp, console", "HAYSTACK_TELEMETRY_ENABLED": "False"}
    printed = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(__file__), receiver.grpc_endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=True,
    ).stdout
    assert_export_tree(receiver.wait_for_spans(3), "haystack", "grpc")
    assert all(printed.count(f'"name": "{name}"') == 1 for name in (PIPELINE_SPAN, UPPER_SPAN, EXCLAIM_SPAN))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("otlp,none", r"OTEL_TRACES_EXPORTER='otlp,none' names 'none' beside others: give 'none' alone"),
        ("otlp,zipkin", r"OTEL_TRACES_EXPORTER='otlp,zipkin' is not supported: use one of otlp, console, none"),
    ],
)
def test_a_bad_list_of_exporters_is_refused(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    with pytest.raises(ValueError, match=message):
        setup()


def test_the_traces_endpoint_variable_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector.example:8080")
    assert telemetry_module._endpoint(None, "http/protobuf") == "http://collector.example:8080"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:8080/otlp")
    assert telemetry_module._endpoint(None, "http/protobuf") == "http://collector.example:8080/otlp/v1/traces"
    assert telemetry_module._endpoint("HTTPS://Collector.example", "http/protobuf") == "https://Collector.example/v1/traces"
    assert (
        telemetry_module._endpoint("http://collector.example:4318?tenant=a", "http/protobuf")
        == "http://collector.example:4318/v1/traces?tenant=a"
    )


# -- headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_headers_variable_reaches_the_collector(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    with setup(otlp_protocol=protocol, otlp_endpoint=endpoint_for(receiver, protocol)) as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
        receiver.wait_for_spans(3)
    assert receiver.headers()  # one entry per export request
    assert all(headers["x-tenant"] == "acme" for headers in receiver.headers())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_headers_argument_beats_the_variable(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=from-env")
    with setup(
        otlp_protocol=protocol, otlp_endpoint=endpoint_for(receiver, protocol), otlp_headers={"x-tenant": "acme"}
    ) as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
        receiver.wait_for_spans(3)
    assert all(headers["x-tenant"] == "acme" for headers in receiver.headers())


async def test_mixed_case_headers_argument_over_grpc(receiver: OtlpReceiver) -> None:
    with setup(
        otlp_protocol="grpc", otlp_endpoint=receiver.grpc_endpoint, otlp_headers={"X-Tenant": "acme"}
    ) as telemetry:
        await run_traced(telemetry)
        telemetry.force_flush()
    # force_flush has returned, so whatever was exported has arrived: no need to wait.
    assert len(receiver.spans()) == 3
    assert all(headers["x-tenant"] == "acme" for headers in receiver.headers())


# -- a collector that is not there ----------------------------------------------------------------


async def test_dead_collector_changes_nothing_and_shutdown_is_prompt(
    monkeypatch: pytest.MonkeyPatch, dead_endpoint: str
) -> None:
    # With the default timeout of 10 s, the gRPC exporter retries (1 s, 2 s, 4 s backoff) and
    # shutdown takes ~7 s; otlp_timeout bounds one export, retries included.
    expected = await build(Pipeline()).run_async({"upper": {"text": "hi"}})
    assert expected == EXPECTED_RESULT
    telemetry = setup(
        service_name="svc-under-test", otlp_protocol="grpc", otlp_endpoint=dead_endpoint, otlp_timeout=0.5
    )
    try:
        assert await run_traced(telemetry) == expected
    finally:
        started = time.monotonic()
        telemetry.shutdown()
        elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"shutdown took {elapsed:.1f}s with a dead collector"
    assert telemetry_module._active is None


# -- the receiver itself ------------------------------------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_receiver_http_contract(receiver: OtlpReceiver) -> None:
    body = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
    protobuf = {"Content-Type": "application/x-protobuf"}
    assert post(receiver.http_endpoint, body, protobuf) == 200
    assert post(receiver.http_endpoint, gzip.compress(body), {**protobuf, "Content-Encoding": "gzip"}) == 200
    assert post(receiver.http_base_endpoint + "/v1/metrics", body, protobuf) == 404
    assert post(receiver.http_endpoint, b"{}", {"Content-Type": "application/json"}) == 415
    assert post(receiver.http_endpoint, b"\xff\xff", protobuf) == 400
    assert len(receiver.headers()) == 2  # only the accepted requests
    receiver.clear()
    assert receiver.headers() == [] and receiver.spans() == []


def test_receiver_wait_times_out_with_the_count(receiver: OtlpReceiver) -> None:
    with pytest.raises(TimeoutError, match=r"got 0 span\(s\) within 0.05s, expected at least 1"):
        receiver.wait_for_spans(1, timeout=0.05)


def test_receiver_stop_is_idempotent_and_frees_the_endpoints() -> None:
    receiver = OtlpReceiver().start()
    with pytest.raises(RuntimeError, match="already started"):
        receiver.start()
    receiver.stop()
    receiver.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = receiver.grpc_endpoint
