"""Buffered metric samples: what a scrape shows is what direct observe() and inc() calls would show."""

from __future__ import annotations

import gc
import random
import re
from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from components import AsyncAdd, SyncAdd
from hayscope.metrics import FLUSH_EVERY, exemplar_labels, register_metrics
from hayscope.recording import ComponentExecution, PipelineRun


def _exposition(registry: CollectorRegistry) -> str:
    text = openmetrics(registry).decode()
    text = re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text)  # when a child was made
    return re.sub(r"(_sum\{[^}]*\}) (\S{10})\S*", r"\1 \2", text)  # sums added in another order


def _observations(seed: int, buffered: bool) -> str:
    registry = CollectorRegistry()
    metrics = register_metrics(registry)
    labels = ("p", "c", "AsyncAdd", "async", "ok")
    duration, run_time = metrics.component_duration.labels(*labels), metrics.component_run_time.labels(*labels)
    wait = metrics.component_schedule_wait.labels(*labels)
    tokens = metrics.genai_token_usage.labels("chat", "m", "input")
    in_flight, runs = metrics.components_in_flight.labels("p", "c", "async"), metrics.pipeline_runs.labels("p", "ok")
    # The same histogram in several layouts, so that the last exemplar must be found across them.
    layouts = [(duration, run_time), (duration, run_time, wait), (wait,), (tokens,)]
    values = [0.0, 0.001, 0.0011, 0.004, 0.3, 119.0, 121.0, float("inf")]
    choices = random.Random(seed)
    scrapes = random.Random(seed + 1)
    for i in range(2000):
        histograms = layouts[choices.randrange(len(layouts))]
        amounts = [
            choices.randrange(10**6) if h is tokens else choices.choice([*values, choices.random()]) for h in histograms
        ]
        span_context = None
        if choices.random() < 0.3:
            span_context = SimpleNamespace(trace_id=choices.getrandbits(128) | 1, span_id=choices.getrandbits(64) | 1)
        at = 1000.0 + i
        if buffered:
            buffer = metrics.buffer
            buffer.add((buffer.kind((), ((in_flight, 1),)), 0, 0, 0.0))
            ids = (0, 0) if span_context is None else (span_context.trace_id, span_context.span_id)
            buffer.add((buffer.kind(histograms, ((in_flight, -1), (runs, 1))), *ids, at, *amounts))
            if scrapes.random() < 0.005:
                openmetrics(registry)
            continue
        in_flight.inc()
        for histogram, amount in zip(histograms, amounts):
            exemplar = None if span_context is None else exemplar_labels(span_context)
            histogram.observe(amount, exemplar)
            if exemplar is not None:  # the timestamp a buffered record carries
                for value in histogram._buckets:
                    kept = value.get_exemplar()
                    if kept is not None and kept.labels == exemplar and kept.value == amount:
                        value.set_exemplar(kept._replace(timestamp=at))
        in_flight.dec()
        runs.inc()
    return _exposition(registry)


def test_a_scrape_shows_what_direct_observe_calls_would_show():
    for seed in range(3):
        direct = _observations(seed, buffered=False)
        assert "trace_id" in direct
        assert _observations(seed, buffered=True) == direct


def test_records_are_applied_without_a_scrape_too():
    metrics = register_metrics(CollectorRegistry())
    child = metrics.pipeline_runs.labels("p", "ok")
    for _ in range(FLUSH_EVERY * 3):
        metrics.buffer.add((metrics.buffer.kind((), ((child, 1),)), 0, 0, 0.0))
    assert len(metrics.buffer._records) < FLUSH_EVERY  # bounded memory
    assert child._value.get() > FLUSH_EVERY * 2


async def test_waiting_records_are_left_alone_by_the_cyclic_gc(capture):
    # Records wait for a scrape; the collector stops tracking them at its first look, so they are
    # never promoted towards a full collection.
    pipeline = capture.pipeline(name="untracked")
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("second", SyncAdd(1))
    pipeline.connect("first.value", "second.value")
    for i in range(3):
        await pipeline.run_async({"first": {"value": i}})
    records = list(pipeline._get_telemetry().buffer._records)
    assert len(records) == 3 * (2 + 2 * 2)  # per run: started and ended, per execution: the same
    assert any(record[1] for record in records)  # sampled ones carry their ids
    gc.collect(0)
    assert [record for record in records if gc.is_tracked(record)] == []


async def test_executions_and_runs_are_freed_without_the_cyclic_gc(capture):
    pipeline = capture.pipeline(name="freed")
    pipeline.add_component("first", AsyncAdd(1))
    pipeline.add_component("second", SyncAdd(1))
    pipeline.connect("first.value", "second.value")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(5):
            await pipeline.run_async({"first": {"value": i}})
        pipeline.run({"first": {"value": 0}})
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, (ComponentExecution, PipelineRun))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
    assert capture.sample("haystack_pipeline_runs_total", pipeline="freed", status="ok") == 6
