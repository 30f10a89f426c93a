"""Metric samples, exemplars, bounded labels and the catalogue."""

from __future__ import annotations

import asyncio
import re

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from components import AsyncAdd, Gate, SyncAdd
from hayscope import CATALOGUE, TracedAsyncPipeline, register_metrics
from hayscope.metrics import DEFAULT_DURATION_BUCKETS, MAX_PIPELINE_LABEL_VALUES, OVERFLOW_LABEL_VALUE
from hayscope.testing import TelemetryCapture


def two_components(capture: TelemetryCapture, name: str = "metered"):
    pipeline = capture.pipeline(name=name)
    pipeline.add_component("embed", SyncAdd(1))
    pipeline.add_component("llm", AsyncAdd(1))
    pipeline.connect("embed.value", "llm.value")
    return pipeline


async def test_error_and_cancelled_series_exist_at_zero_from_the_first_run(capture):
    await two_components(capture, "fresh").run_async({"embed": {"value": 0}})

    for status in ("error", "cancelled"):
        assert capture.sample("haystack_pipeline_runs_total", pipeline="fresh", status=status) == 0
        assert capture.sample("haystack_pipeline_run_duration_seconds_count", pipeline="fresh", status=status) == 0


async def test_each_run_and_execution_is_counted_with_its_labels(capture):
    pipeline = two_components(capture)
    for i in range(3):
        await pipeline.run_async({"embed": {"value": i}})
    pipeline.run({"embed": {"value": 0}})

    assert capture.sample("haystack_pipeline_runs_total", pipeline="metered", status="ok") == 4
    assert capture.sample("haystack_pipeline_run_duration_seconds_count", pipeline="metered", status="ok") == 4
    labels = {"pipeline": "metered", "status": "ok"}
    thread = dict(labels, component="embed", component_type="SyncAdd", mode="thread")
    on_loop = dict(labels, component="llm", component_type="AsyncAdd", mode="async")
    sync = dict(labels, component="embed", component_type="SyncAdd", mode="sync")
    assert capture.sample("haystack_component_duration_seconds_count", **thread) == 3
    assert capture.sample("haystack_component_duration_seconds_count", **on_loop) == 3
    assert capture.sample("haystack_component_duration_seconds_count", **sync) == 1
    assert capture.sample("haystack_pipeline_runs_in_flight", pipeline="metered") == 0
    assert capture.sample("haystack_components_in_flight", pipeline="metered", component="llm", mode="async") == 0
    # Durations are real: the sum of a component's run is within its run's wall time.
    run_sum = capture.sample("haystack_pipeline_run_duration_seconds_sum", pipeline="metered", status="ok")
    assert 0 < capture.sample("haystack_component_duration_seconds_sum", **on_loop) < run_sum


async def test_in_flight_gauges_count_what_is_running_now(capture):
    gate = Gate()
    pipeline = capture.pipeline(name="gauged")
    pipeline.add_component("held", gate)

    runs = [asyncio.create_task(pipeline.run_async({"held": {"value": i}})) for i in range(3)]
    await gate.entered.wait()
    while capture.sample("haystack_components_in_flight", pipeline="gauged", component="held", mode="async") < 3:
        await asyncio.sleep(0)  # let the other two runs reach the gate; no timing involved
    during = capture.sample("haystack_pipeline_runs_in_flight", pipeline="gauged")
    gate.release.set()
    await asyncio.gather(*runs)

    assert during == 3
    assert capture.sample("haystack_pipeline_runs_in_flight", pipeline="gauged") == 0
    assert capture.sample("haystack_components_in_flight", pipeline="gauged", component="held", mode="async") == 0


async def test_histogram_samples_carry_the_trace_and_span_id_as_exemplars(capture):
    await two_components(capture).run_async({"embed": {"value": 0}})

    exposition = openmetrics(capture.registry).decode()
    (llm_span,) = capture.spans_named("haystack.component.run llm")
    (run_span,) = capture.spans_named("haystack.pipeline.run metered")
    trace_id = format(llm_span.context.trace_id, "032x")
    llm_exemplar = f'# {{span_id="{llm_span.context.span_id:016x}",trace_id="{trace_id}"}}'
    run_exemplar = f'# {{span_id="{run_span.context.span_id:016x}",trace_id="{trace_id}"}}'
    llm_lines = [line for line in exposition.splitlines() if "haystack_component_duration_seconds_bucket" in line]
    assert any('component="llm"' in line and llm_exemplar in line for line in llm_lines)
    assert any(
        line.startswith("haystack_pipeline_run_duration_seconds_bucket") and run_exemplar in line
        for line in exposition.splitlines()
    )


async def test_unsampled_runs_are_still_measured_but_carry_no_exemplar():
    capture = TelemetryCapture(sampler=ALWAYS_OFF)
    await two_components(capture).run_async({"embed": {"value": 0}})

    assert capture.spans() == ()
    assert capture.sample("haystack_pipeline_runs_total", pipeline="metered", status="ok") == 1
    assert "trace_id" not in openmetrics(capture.registry).decode()


async def test_pipeline_names_beyond_the_cap_fold_into_the_overflow_value(capture):
    for i in range(MAX_PIPELINE_LABEL_VALUES + 5):
        pipeline = capture.pipeline(name=f"tenant-{i}")
        pipeline.add_component("only", AsyncAdd(1))
        await pipeline.run_async({"only": {"value": 0}})

    families = {f.name: f for f in text_string_to_metric_families(openmetrics(capture.registry).decode())}
    names = {s.labels["pipeline"] for s in families["haystack_pipeline_runs"].samples}
    assert len(names) == MAX_PIPELINE_LABEL_VALUES + 1
    assert OVERFLOW_LABEL_VALUE in names
    assert capture.sample("haystack_pipeline_runs_total", pipeline=OVERFLOW_LABEL_VALUE, status="ok") == 5
    # Spans keep the real name: only the metric label folds.
    assert capture.spans_named("haystack.pipeline.run tenant-104")


async def test_executor_names_beyond_the_cap_fold_into_the_overflow_value(capture):
    pipelines = []
    for i in range(MAX_PIPELINE_LABEL_VALUES + 5):
        pipeline = capture.pipeline(name=f"pool-{i}", max_workers=1)  # each with a pool of its own
        pipeline.add_component("embed", SyncAdd(1))
        await pipeline.run_async({"embed": {"value": 0}})
        pipelines.append(pipeline)  # (a pool is in the metrics while its pipeline lives)

    families = {f.name: f for f in text_string_to_metric_families(openmetrics(capture.registry).decode())}
    workers = {s.labels["executor"]: s.value for s in families["hayscope_executor_workers_max"].samples}
    assert len(workers) == MAX_PIPELINE_LABEL_VALUES + 1
    assert workers[OVERFLOW_LABEL_VALUE] == 5  # the later pools' workers, summed


async def test_a_registry_exports_the_executors_of_its_own_pipelines_only(capture):
    # (the capture's registry: pipelines with a pool of their own; another: one in the loop's default executor)
    pooled = capture.pipeline(name="pooled", max_workers=2)
    pooled.add_component("embed", SyncAdd(1))
    other_registry = CollectorRegistry()
    in_default = TracedAsyncPipeline(
        name="in-default", tracer_provider=capture.tracer_provider, registry=other_registry
    )
    in_default.add_component("embed", SyncAdd(1))

    await pooled.run_async({"embed": {"value": 0}})
    await in_default.run_async({"embed": {"value": 0}})

    def executors(registry: CollectorRegistry) -> set[str]:
        families = {f.name: f for f in text_string_to_metric_families(openmetrics(registry).decode())}
        return {s.labels["executor"] for s in families["hayscope_executor_workers_max"].samples}

    assert executors(capture.registry) == {"pooled"}
    assert executors(other_registry) == {"default"}


def test_every_metric_comes_from_the_catalogue_with_its_help_unit_and_labels(capture):
    two_components(capture).run({"embed": {"value": 0}})

    families = {f.name: f for f in text_string_to_metric_families(openmetrics(capture.registry).decode())}
    for spec in CATALOGUE:
        family = families[spec.name.removesuffix("_total")]
        assert family.type == spec.kind
        assert family.documentation == spec.help
        assert family.unit == spec.unit
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(spec.labels), sample
    assert set(families) == {spec.name.removesuffix("_total") for spec in CATALOGUE}


def test_default_buckets_span_a_millisecond_to_two_minutes():
    assert DEFAULT_DURATION_BUCKETS[0] == 0.001
    assert DEFAULT_DURATION_BUCKETS[-1] == 120.0


async def test_buckets_can_be_set_once_per_registry():
    registry = CollectorRegistry()
    register_metrics(registry, duration_buckets=[0.5, 2])
    pipeline = TracedAsyncPipeline(name="coarse", registry=registry)
    pipeline.add_component("only", AsyncAdd(1))
    await pipeline.run_async({"only": {"value": 0}})

    bounds = re.findall(
        r'haystack_pipeline_run_duration_seconds_bucket\{le="([^"]+)",pipeline="coarse",status="ok"\}',
        openmetrics(registry).decode(),
    )
    assert bounds == ["0.5", "2.0", "+Inf"]
    assert register_metrics(registry) is register_metrics(registry, duration_buckets=[0.5, 2.0])
    with pytest.raises(ValueError, match=r"duration_buckets=\(1\.0,\) differ from the buckets already registered"):
        register_metrics(registry, duration_buckets=[1.0])


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([], r"duration_buckets=\(\) is not usable"),
        ([0.1, -1], r"duration_buckets=\(0\.1, -1\) is not usable"),
        ([1, 0.5], r"duration_buckets=\(1, 0\.5\) must be strictly increasing"),
        ([0.1, float("inf")], r"is not usable: give a non-empty list of positive finite"),
    ],
)
def test_bad_buckets_are_refused_with_the_value_and_the_fix(buckets, message):
    with pytest.raises(ValueError, match=message):
        register_metrics(CollectorRegistry(), duration_buckets=buckets)


def test_a_registry_that_is_not_a_registry_is_refused():
    with pytest.raises(TypeError, match=r"registry='prom' is not a prometheus_client.CollectorRegistry"):
        register_metrics("prom")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"registry=\{\} is not a prometheus_client.CollectorRegistry"):
        TracedAsyncPipeline(registry={})  # type: ignore[arg-type]
