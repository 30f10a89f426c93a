"""Bad use gets a clear error at set-up time; the hot path never raises because of telemetry."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from haystack.components.builders import PromptBuilder
from haystack.core.errors import PipelineValidationError
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry

from components import AsyncAdd, AsyncFail, SyncAdd
from hayscope import LoopLagMonitor, TracedAsyncPipeline, register_metrics
from hayscope.content import configure_content_capture
from hayscope.testing import TelemetryCapture


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: TracedAsyncPipeline(name=7), TypeError, r"name=7 is not a usable pipeline name: pass a short"),
        (lambda: TracedAsyncPipeline(name="  "), TypeError, r"name='  ' is not a usable pipeline name"),
        (lambda: TracedAsyncPipeline(registry="default"), TypeError, r"registry='default' is not a prometheus_client"),
        (lambda: TracedAsyncPipeline(tracer_provider=object()), TypeError, r"is not an opentelemetry TracerProvider"),
        (lambda: TracedAsyncPipeline(executor=4), TypeError, r"executor=4 is not a concurrent.futures.Executor"),
        (
            lambda: TracedAsyncPipeline(executor=ProcessPoolExecutor(1)),
            TypeError,
            r"executor=<concurrent.futures.process.ProcessPoolExecutor object at .*> runs work in other processes, "
            r"where a pipeline's component instances cannot go: pass a ThreadPoolExecutor, or max_workers=N",
        ),
        (
            lambda: TracedAsyncPipeline("rag"),
            TypeError,
            r"metadata='rag' is not a dict: to name the pipeline pass name='rag' \(haystack.Pipeline's first",
        ),
        (lambda: TracedAsyncPipeline(max_workers=0), ValueError, r"max_workers=0 must be a whole number of threads"),
        (lambda: TracedAsyncPipeline(max_workers=True), ValueError, r"max_workers=True must be a whole number"),
        (lambda: TracedAsyncPipeline(max_workers="8"), ValueError, r"max_workers='8' must be a whole number"),
        (
            lambda: TracedAsyncPipeline(executor=ThreadPoolExecutor(1), max_workers=2),
            ValueError,
            r"pass executor= or max_workers=, not both",
        ),
        (
            lambda: TracedAsyncPipeline().add_component("builder", PromptBuilder),
            PipelineValidationError,
            r"component 'builder': PromptBuilder is a class, not an instance: pass PromptBuilder\(...\) instead",
        ),
        (
            lambda: TracedAsyncPipeline().add_component("fn", len),
            PipelineValidationError,
            r"component 'fn': <built-in function len> \(a builtin_function_or_method\) is not a haystack component",
        ),
        (
            lambda: TracedAsyncPipeline().add_component(3, SyncAdd()),
            TypeError,
            r"component name 3 is not a non-empty string: pass a name such as 'retriever'",
        ),
        (
            lambda: TracedAsyncPipeline().add_components({"a": SyncAdd(), "b": "not one"}),
            PipelineValidationError,
            r"component 'b': 'not one' \(a str\) is not a haystack component",
        ),
        (lambda: TracedAsyncPipeline().configure_telemetry(name=""), TypeError, r"name='' is not a usable"),
        (lambda: register_metrics("registry"), TypeError, r"registry='registry' is not a prometheus_client"),
        (
            lambda: register_metrics(CollectorRegistry(), duration_buckets=[0.1, -1]),
            ValueError,
            r"duration_buckets=\(0.1, -1\) is not usable: give a non-empty list of positive finite",
        ),
        (lambda: LoopLagMonitor(interval="fast"), ValueError, r"interval='fast' is not a number of seconds: give seconds"),
        (lambda: LoopLagMonitor(threshold=0), ValueError, r"threshold=0 is out of range"),
        (lambda: LoopLagMonitor(registry=[]), TypeError, r"registry=\[\] is not a prometheus_client"),
        (lambda: configure_content_capture(1), TypeError, r"enabled=1 is not a bool"),
    ],
)
def test_bad_use_is_refused_at_setup_naming_the_value_and_the_fix(build, error, message):
    with pytest.raises(error, match=message):
        build()


class BrokenProcessor(SpanProcessor):
    """A span processor (an exporter plug-in, say) that fails on every call."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("processor bug on start")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("processor bug on end")


def pipeline_on(provider: TracerProvider, registry: CollectorRegistry) -> TracedAsyncPipeline:
    pipeline = TracedAsyncPipeline(name="hardened", tracer_provider=provider, registry=registry)
    pipeline.add_component("first", SyncAdd(1))
    pipeline.add_component("second", AsyncAdd(2))
    pipeline.connect("first.value", "second.value")
    return pipeline


@pytest.mark.parametrize("path", ["run", "run_async", "run_async_generator"])
async def test_a_failing_span_processor_never_reaches_the_pipeline(path):
    provider = TracerProvider()
    provider.add_span_processor(BrokenProcessor())
    registry = CollectorRegistry()
    pipeline = pipeline_on(provider, registry)

    if path == "run":
        result = pipeline.run({"first": {"value": 0}})
    elif path == "run_async":
        result = await pipeline.run_async({"first": {"value": 0}})
    else:
        result = [partial async for partial in pipeline.run_async_generator({"first": {"value": 0}})][-1]

    assert result == {"second": {"value": 3}}
    assert registry.get_sample_value("haystack_pipeline_runs_total", {"pipeline": "hardened", "status": "ok"}) == 1
    in_flight = registry.get_sample_value("haystack_pipeline_runs_in_flight", {"pipeline": "hardened"})
    assert in_flight == 0


async def test_a_failing_span_processor_leaves_the_components_own_error_as_it_was():
    provider = TracerProvider()
    provider.add_span_processor(BrokenProcessor())
    pipeline = TracedAsyncPipeline(name="failing", tracer_provider=provider, registry=CollectorRegistry())
    pipeline.add_component("broken", AsyncFail("upstream down"))

    with pytest.raises(Exception, match="upstream down"):
        await pipeline.run_async({"broken": {"value": 1}})


async def test_a_failing_redaction_hook_or_odd_inputs_never_reach_the_pipeline():
    def hook(key: str, value: str) -> str:
        raise KeyError(key)

    configure_content_capture(True, redact=hook)
    try:
        capture = TelemetryCapture()
        result = await pipeline_on(capture.tracer_provider, capture.registry).run_async({"first": {"value": 0}})
    finally:
        configure_content_capture(False)
    assert result == {"second": {"value": 3}}


SETUP_CASES = [
    # (arguments, environment, error, message): each setup_telemetry argument and variable, wrong
    # in type, range or format (tests/test_setup.py has more of the format cases).
    ({"service_name": 5}, {}, ValueError, r"service_name=5 must be a non-empty string"),
    ({"traces_exporter": 3}, {}, ValueError, r"traces_exporter=3 is not supported: use one of otlp, console, none"),
    ({"otlp_endpoint": 4317}, {}, ValueError, r"otlp_endpoint=4317 is not an OTLP endpoint: give a URL"),
    ({"otlp_endpoint": "ftp://x:1"}, {}, ValueError, r"otlp_endpoint='ftp://x:1' is not an OTLP endpoint"),
    ({"otlp_headers": {"a": 1}}, {}, ValueError, r"otlp_headers=\{'a': 1\} are not OTLP headers"),
    ({"otlp_timeout": "10"}, {}, ValueError, r"otlp_timeout='10' is not a number: pass one, e.g. otlp_timeout=10"),
    ({"otlp_timeout": float("inf")}, {}, ValueError, r"otlp_timeout=inf is not a timeout"),
    ({"sampler": 3}, {}, ValueError, r"sampler=3 is not supported: use one of always_on"),
    ({"sampler_ratio": "half"}, {}, ValueError, r"sampler_ratio='half' is not a number"),
    ({"sampler_ratio": -0.1}, {}, ValueError, r"sampler_ratio=-0.1 is not a sampling ratio: give a number from 0 to 1"),
    ({"span_exporter": "otlp"}, {}, TypeError, r"span_exporter='otlp' is not an opentelemetry SpanExporter"),
    ({"serve_metrics": "no"}, {}, TypeError, r"serve_metrics='no' is not a bool: pass True or False"),
    ({"metrics_host": ""}, {}, ValueError, r"metrics_host='' must be a non-empty string, e.g. '127.0.0.1'"),
    ({"metrics_port": "9464"}, {}, ValueError, r"metrics_port='9464' is not a number"),
    ({"metrics_port": -1}, {}, ValueError, r"metrics_port=-1 is not a TCP port: give a number from 1 to 65535"),
    ({"registry": "r"}, {}, TypeError, r"registry='r' is not a prometheus_client.CollectorRegistry"),
    ({"duration_buckets": []}, {}, ValueError, r"duration_buckets=\(\) is not usable: give a non-empty list"),
    ({"configure_logging": "yes"}, {}, TypeError, r"configure_logging='yes' is not a bool"),
    ({"log_format": 3}, {}, ValueError, r"log_format=3 is not supported: use one of console, json, keyvalue"),
    ({"monitor_event_loop": "yes"}, {}, TypeError, r"monitor_event_loop='yes' is not a bool"),
    ({"monitor_event_loop": True}, {}, ValueError, r"monitor_event_loop=True needs a running event loop"),
    ({"loop_lag_interval": 0}, {}, ValueError, r"loop_lag_interval=0 is out of range: give seconds from 0.001"),
    ({"loop_block_threshold": "x"}, {}, ValueError, r"loop_block_threshold='x' is not a number of seconds"),
    ({"set_global": "x"}, {}, TypeError, r"set_global='x' is not a bool"),
    ({"capture_content": "sometimes"}, {}, ValueError, r"capture_content='sometimes' is not a switch"),
    ({}, {"OTEL_TRACES_EXPORTER": "jaeger"}, ValueError, r"OTEL_TRACES_EXPORTER='jaeger' is not supported"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4317"}, ValueError, r"is not an OTLP endpoint"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, ValueError, r"'http/json' is not supported"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-5"}, ValueError, r"TIMEOUT='-5' is not a timeout"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "=x"}, ValueError, r"HEADERS='=x' are not OTLP headers"),
    ({}, {"OTEL_TRACES_SAMPLER": "sometimes"}, ValueError, r"OTEL_TRACES_SAMPLER='sometimes' is not supported"),
    ({}, {"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, ValueError, r"OTEL_BSP_MAX_QUEUE_SIZE='lots' is not a positive whole"),
    ({}, {"OTEL_BSP_SCHEDULE_DELAY": "-1"}, ValueError, r"OTEL_BSP_SCHEDULE_DELAY='-1' is not a positive whole"),
    ({}, {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"}, ValueError, r"OTEL_BSP_MAX_EXPORT_BATCH_SIZE='0' is not"),
    ({}, {"HAYSCOPE_METRICS_PORT": "http"}, ValueError, r"HAYSCOPE_METRICS_PORT='http' is not a TCP port"),
    ({}, {"HAYSTACK_CONTENT_TRACING_ENABLED": "maybe"}, ValueError, r"'maybe' is not a switch"),
    ({}, {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/hayscope"}, ValueError, r"'/nonexistent/hayscope' is not a directory"),
]


@pytest.mark.parametrize(("arguments", "env", "error", "message"), SETUP_CASES)
def test_bad_configuration_is_refused_at_setup(monkeypatch, arguments, env, error, message):
    from hayscope import setup_telemetry
    from hayscope.content import content_capture

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = {} if "HAYSCOPE_METRICS_PORT" in env else {"metrics_port": 0}  # an argument would beat the variable
    settings = {"registry": CollectorRegistry(), "set_global": False, **port, **arguments}
    with pytest.raises(error, match=message):
        setup_telemetry(**settings).shutdown()
    assert content_capture().enabled is False  # nothing was left switched on
