"""setup_telemetry(): what it starts, what shutdown() stops, and how it refuses bad values."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry

from components import AsyncAdd
from hayscope import TracedAsyncPipeline, setup_telemetry
from hayscope.testing import span_tree

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(url: str) -> str:
    request = urllib.request.Request(url, headers={"Accept": OPENMETRICS})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        return response.read().decode()


async def test_setup_serves_openmetrics_exports_spans_and_shutdown_stops_both():
    registry, exporter = CollectorRegistry(), InMemorySpanExporter()
    with setup_telemetry(
        "svc", span_exporter=exporter, registry=registry, metrics_port=0, set_global=False
    ) as telemetry:
        assert telemetry.metrics_url.startswith("http://127.0.0.1:")
        pipeline = TracedAsyncPipeline(name="served", tracer_provider=telemetry.tracer_provider, registry=registry)
        pipeline.add_component("only", AsyncAdd(1))
        await pipeline.run_async({"only": {"value": 0}})
        telemetry.force_flush()
        exposition = scrape(telemetry.metrics_url)
        url = telemetry.metrics_url

    assert 'haystack_pipeline_runs_total{pipeline="served",status="ok"} 1.0' in exposition
    assert "# {span_id=" in exposition  # exemplars travel in OpenMetrics
    assert exposition.rstrip().endswith("# EOF")
    assert span_tree(exporter.get_finished_spans(), waits=False) == ["haystack.pipeline.run served", "  haystack.component.run only"]
    assert exporter.get_finished_spans()[0].resource.attributes["service.name"] == "svc"
    with pytest.raises(urllib.error.URLError):
        scrape(url)


def test_a_second_setup_returns_the_active_handle_and_starts_nothing_more():
    first = setup_telemetry(traces_exporter="none", metrics_port=0, registry=CollectorRegistry(), set_global=False)
    try:
        second = setup_telemetry(traces_exporter="none", metrics_port=0, set_global=False)
        assert second is first
    finally:
        first.shutdown()
    first.shutdown()  # idempotent
    third = setup_telemetry(traces_exporter="none", serve_metrics=False, set_global=False)
    assert third is not first
    third.shutdown()


def test_the_metrics_endpoint_binds_loopback_by_default():
    with setup_telemetry(traces_exporter="none", metrics_port=0, registry=CollectorRegistry(), set_global=False) as t:
        assert t.metrics_url.startswith("http://127.0.0.1:")


def test_a_port_in_use_is_refused_with_the_port_and_the_fix():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=rf"cannot serve metrics on 127.0.0.1:{port} .*pass another metrics_port"):
            setup_telemetry(traces_exporter="none", metrics_port=port, set_global=False)


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"otlp_protocol": "udp"}, {}, r"otlp_protocol='udp' is not supported: use one of grpc, http/protobuf"),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, r"OTEL_EXPORTER_OTLP_PROTOCOL='thrift' is not supported"),
        ({"otlp_endpoint": "localhost:4317"}, {}, r"otlp_endpoint='localhost:4317' is not an OTLP endpoint"),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:4317"}, r"OTEL_EXPORTER_OTLP_ENDPOINT='http://:4317' is not an"),
        ({"otlp_endpoint": "http://collector:99999"}, {}, r"'http://collector:99999' has a malformed port"),
        ({"otlp_endpoint": "http://exa mple.com:4317"}, {}, r"'http://exa mple.com:4317' is not an OTLP endpoint"),
        ({"otlp_endpoint": "http://127.0.0 .1:4317"}, {}, r"'http://127.0.0 .1:4317' is not an OTLP endpoint"),
        ({"sampler": "always_on", "sampler_ratio": 0.5}, {}, r"sampler_ratio=0.5 would be ignored: sampler='always_on'"),
        ({"sampler": ALWAYS_OFF, "sampler_ratio": 0.5}, {}, r"sampler_ratio=0.5 would be ignored: sampler=.* is a Sampler"),
        ({"sampler_ratio": 0.5}, {"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, r"OTEL_TRACES_SAMPLER='parent"),
        ({"traces_exporter": "zipkin"}, {}, r"traces_exporter='zipkin' is not supported: use one of otlp, console"),
        ({"sampler": "sometimes"}, {}, r"sampler='sometimes' is not supported: use one of always_on"),
        ({"sampler": "traceidratio", "sampler_ratio": 1.5}, {}, r"sampler_ratio=1.5 is not a sampling ratio"),
        (
            {},
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            r"OTEL_TRACES_SAMPLER_ARG='half' is not a sampling ratio",
        ),
        ({"otlp_headers": "novalue"}, {}, r"otlp_headers='novalue' are not OTLP headers"),
        ({}, {"OTEL_EXPORTER_OTLP_HEADERS": "a=1,broken"}, r"OTEL_EXPORTER_OTLP_HEADERS='a=1,broken' are not OTLP"),
        ({"otlp_timeout": 0}, {}, r"otlp_timeout=0 is not a timeout: give a positive number of seconds"),
        ({}, {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, r"OTEL_EXPORTER_OTLP_TIMEOUT='soon' is not a timeout"),
        ({"metrics_port": 70000}, {}, r"metrics_port=70000 is not a TCP port"),
        ({}, {"HAYSCOPE_METRICS_PORT": "http"}, r"HAYSCOPE_METRICS_PORT='http' is not a TCP port"),
        ({"service_name": ""}, {}, r"service_name='' must be a non-empty string"),
        ({"log_format": "xml"}, {}, r"log_format='xml' is not supported: use one of console, json, keyvalue"),
        ({"content_max_length": 0}, {}, r"content_max_length=0 is not a positive number .* e.g. content_max_length=4096"),
        ({"duration_buckets": [2, 1]}, {}, r"duration_buckets=\(2, 1\) must be strictly increasing"),
    ],
)
def test_bad_configuration_fails_at_setup_naming_the_value_and_the_fix(monkeypatch, kwargs, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    arguments = {"registry": CollectorRegistry(), "set_global": False}
    if "metrics_port" not in kwargs and "HAYSCOPE_METRICS_PORT" not in env:
        arguments["metrics_port"] = 0
    with pytest.raises(ValueError, match=message):
        setup_telemetry(**arguments, **kwargs).shutdown()


def test_an_argument_beats_the_environment_variable(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    with setup_telemetry("from-arg", traces_exporter="none", serve_metrics=False, set_global=False) as telemetry:
        assert telemetry.tracer_provider.resource.attributes["service.name"] == "from-arg"
        assert telemetry.tracer_provider.sampler.get_description() == "AlwaysOffSampler"
    with setup_telemetry(traces_exporter="none", serve_metrics=False, sampler="always_on", set_global=False) as t:
        assert t.tracer_provider.resource.attributes["service.name"] == "from-env"
        assert t.tracer_provider.sampler.get_description() == "AlwaysOnSampler"


@pytest.mark.parametrize(
    ("sampler", "ratio", "description"),
    [
        (None, None, "ParentBased{root:AlwaysOnSampler,"),
        (None, 0.05, "ParentBased{root:TraceIdRatioBased{0.05},"),  # a ratio alone asks for the ratio sampler
        ("traceidratio", 0.25, "TraceIdRatioBased{0.25}"),
        ("parentbased_traceidratio", 0.01, "ParentBased{root:TraceIdRatioBased{0.01},"),
    ],
)
def test_samplers_follow_the_otel_names(sampler, ratio, description):
    with setup_telemetry(
        traces_exporter="none", serve_metrics=False, sampler=sampler, sampler_ratio=ratio, set_global=False
    ) as telemetry:
        assert telemetry.tracer_provider.sampler.get_description().startswith(description)


@pytest.mark.parametrize("value", ["0.5", "pollingIntervalMs=5000"])
@pytest.mark.parametrize(("sampler", "description"), [(None, "ParentBased{root:AlwaysOnSampler,"), ("always_off", "AlwaysOff")])
def test_the_ratio_variable_is_ignored_by_samplers_that_take_no_ratio(monkeypatch, value, sampler, description):
    # As OpenTelemetry does: the argument of another sampler (a remote one's settings) is no error here.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", value)
    with setup_telemetry(traces_exporter="none", serve_metrics=False, sampler=sampler, set_global=False) as telemetry:
        assert telemetry.tracer_provider.sampler.get_description().startswith(description)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"otlp_endpoint": "http://exa mple.com:4317", "metrics_port": 0},
        {"metrics_port": "taken"},
    ],
)
def test_a_failed_setup_registers_nothing_and_a_corrected_one_works(kwargs):
    registry = CollectorRegistry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if kwargs["metrics_port"] == "taken":
            kwargs = {**kwargs, "metrics_port": taken.getsockname()[1]}
        with pytest.raises(ValueError):
            setup_telemetry(registry=registry, set_global=False, duration_buckets=[0.1, 1], **kwargs)
    assert not list(registry.collect())
    with setup_telemetry(
        registry=registry, set_global=False, traces_exporter="none", metrics_port=0, duration_buckets=[0.5, 5]
    ):
        assert registry.get_sample_value("haystack_pipeline_runs_in_flight", {"pipeline": "x"}) is None
        assert "haystack_pipeline_run_duration_seconds" in {metric.name for metric in registry.collect()}


def test_a_metrics_host_this_machine_lacks_is_named_as_the_host():
    # 192.0.2.1 is reserved for documentation: no machine has it.
    with pytest.raises(ValueError, match=r"cannot serve metrics on 192.0.2.1:0 .*pass a metrics_host this machine has"):
        setup_telemetry(traces_exporter="none", metrics_host="192.0.2.1", metrics_port=0, set_global=False)


def run_python(code: str, preamble: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HAYSTACK_TELEMETRY_ENABLED": "False", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_hayscope_sets_no_global_state_and_starts_nothing():
    output = run_python(
        """
        import threading
        before = threading.active_count()
        import hayscope, structlog
        from opentelemetry import trace
        from prometheus_client import REGISTRY
        from haystack import tracing
        print(
            isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider),
            [n for n in REGISTRY._names_to_collectors if n.startswith(("haystack_", "hayscope_"))],
            threading.active_count() - before,
            structlog.is_configured(),
            type(tracing.tracer.actual_tracer).__name__,
        )
        """
    )
    assert output == "True [] 0 False NullTracer"


# A fresh process's script starts with this: an Echo component and what a global-provider test needs.
ECHO_PIPELINE = """
import asyncio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from haystack import component
from hayscope import TracedAsyncPipeline, setup_telemetry

@component
class Echo:
    @component.output_types(value=int)
    def run(self, value: int):
        return {"value": value}
"""


def test_setup_makes_its_provider_global_so_a_bare_pipeline_uses_it():
    output = run_python(
        preamble=ECHO_PIPELINE,
        code="""
        exporter = InMemorySpanExporter()
        with setup_telemetry(span_exporter=exporter, metrics_port=0) as telemetry:
            pipeline = TracedAsyncPipeline(name="global")
            pipeline.add_component("echo", Echo())
            asyncio.run(pipeline.run_async({"echo": {"value": 1}}))
            telemetry.force_flush()
        print(sorted(span.name for span in exporter.get_finished_spans()))
        """
    )
    assert output == "['haystack.component.run echo', 'haystack.pipeline.run global']"


def test_a_setup_after_a_shutdown_becomes_global_and_a_pipeline_built_before_follows_it():
    output = run_python(
        preamble=ECHO_PIPELINE,
        code="""
        pipeline = TracedAsyncPipeline(name="global")
        pipeline.add_component("echo", Echo())
        for exporter in (InMemorySpanExporter(), InMemorySpanExporter()):
            with setup_telemetry(span_exporter=exporter, metrics_port=0):
                asyncio.run(pipeline.run_async({"echo": {"value": 1}}))
            print(len(exporter.get_finished_spans()))
        """
    )
    assert output == "2\n2"


async def test_setup_starts_the_loop_monitor_when_asked_and_shutdown_stops_it():
    registry = CollectorRegistry()
    telemetry = setup_telemetry(
        traces_exporter="none",
        serve_metrics=False,
        registry=registry,
        monitor_event_loop=True,
        loop_lag_interval=0.01,
        set_global=False,
    )
    monitor = telemetry.loop_monitor
    assert monitor.running
    beats = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, beats.set_result, None)
    await beats
    telemetry.shutdown()

    assert not monitor.running
    assert registry.get_sample_value("asyncio_event_loop_lag_seconds_count") >= 1


def test_the_loop_monitor_needs_a_running_loop():
    with pytest.raises(ValueError, match=r"monitor_event_loop=True needs a running event loop to watch"):
        setup_telemetry(traces_exporter="none", serve_metrics=False, monitor_event_loop=True, set_global=False)
