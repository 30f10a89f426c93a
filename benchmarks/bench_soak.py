"""Soak: many pipeline runs at high concurrency, every run sampled and exported; nothing may grow.

    python benchmarks/bench_soak.py [--runs 100000] [--concurrency 200]

A four-component pipeline (two sync components in worker threads, two async ones) runs `--runs`
times, `--concurrency` at a time, with every span exported over OTLP/HTTP (BatchSpanProcessor) to a
receiver in a separate process. Checked at the end, against the state after the warm-up (the first
tenth of the runs):
- RSS growth under 10 MB;
- no new metric series (the label sets are bounded);
- no span started and not ended;
- in-flight gauges, executor busy and queue depth back to 0.
Exits 1 when a check fails. Spans the exporter could not keep up with are reported as dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from haystack import component
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

from hayscope import TracedAsyncPipeline

RSS_GROWTH_LIMIT_MB = 10.0


@component
class ThreadStep:
    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value + 1}


@component
class LoopStep:
    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value + 1}

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"value": value + 1}


class OpenSpans(SpanProcessor):
    """Counts spans started and not yet ended."""

    def __init__(self) -> None:
        self.open = 0
        self.started = 0
        self.lock = threading.Lock()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        with self.lock:
            self.open += 1
            self.started += 1

    def on_end(self, span: Any) -> None:
        with self.lock:
            self.open -= 1


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def series(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in registry.collect()
        for sample in family.samples
    }


def receiver_main() -> None:
    """The receiver process: counts spans, keeps none (its memory must not matter)."""
    from hayscope.testing import OtlpReceiver

    with OtlpReceiver() as receiver:
        print(receiver.http_endpoint, flush=True)
        total = 0
        for line in sys.stdin:
            total += len(receiver.spans())
            receiver.clear()
            if line.strip() == "count":
                print(total, flush=True)


def build(provider: TracerProvider, registry: CollectorRegistry) -> TracedAsyncPipeline:
    pipeline = TracedAsyncPipeline(name="soak", tracer_provider=provider, registry=registry, max_workers=8)
    for name, step in (("embed", ThreadStep()), ("retrieve", LoopStep()), ("prompt", ThreadStep()), ("llm", LoopStep())):
        pipeline.add_component(name, step)
    pipeline.connect("embed.value", "retrieve.value")
    pipeline.connect("retrieve.value", "prompt.value")
    pipeline.connect("prompt.value", "llm.value")
    return pipeline


async def soak(runs: int, concurrency: int, endpoint: str) -> dict[str, Any]:
    provider = TracerProvider()
    open_spans = OpenSpans()
    provider.add_span_processor(open_spans)
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192, max_export_batch_size=512))
    registry = CollectorRegistry()
    pipeline = build(provider, registry)
    warm_up = max(runs // 10, 1)
    slots = asyncio.Semaphore(concurrency)
    done = 0
    checkpoints: list[tuple[int, float]] = []
    baseline: dict[str, Any] = {}

    async def one() -> None:
        nonlocal done
        async with slots:
            result = await pipeline.run_async({"embed": {"value": 0}})
        assert result == {"llm": {"value": 4}}, result
        done += 1
        if done == warm_up:
            baseline["rss"] = rss_mb()
            baseline["series"] = series(registry)
        if done % (runs // 10 or 1) == 0:
            checkpoints.append((done, round(rss_mb(), 1)))

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    elapsed = time.perf_counter() - started
    provider.force_flush()
    end_series = series(registry)
    gauges = {
        name: registry.get_sample_value(name, labels)
        for name, labels in (
            ("haystack_pipeline_runs_in_flight", {"pipeline": "soak"}),
            ("hayscope_executor_workers_busy", {"executor": "soak"}),
            ("hayscope_executor_queue_depth", {"executor": "soak"}),
        )
    }
    result = {
        "runs": runs,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "runs_per_second": round(runs / elapsed),
        "rss_after_warm_up_mb": round(baseline["rss"], 1),
        "rss_end_mb": round(rss_mb(), 1),
        "rss_checkpoints_mb": checkpoints,
        "new_series_after_warm_up": sorted(str(s) for s in end_series - baseline["series"]),
        "series": len(end_series),
        "open_spans": open_spans.open,
        "gauges": gauges,
        "spans_started": open_spans.started,
    }
    provider.shutdown()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receiver_main()
        return 0
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdout is not None and receiver.stdin is not None
    endpoint = receiver.stdout.readline().strip()
    try:
        result = asyncio.run(soak(args.runs, args.concurrency, endpoint))
        receiver.stdin.write("count\n")
        receiver.stdin.flush()
        result["spans_received"] = int(receiver.stdout.readline())
        result["spans_not_exported"] = result["spans_started"] - result["spans_received"]
    finally:
        receiver.stdin.close()
        receiver.wait(timeout=30)
    growth = result["rss_end_mb"] - result["rss_after_warm_up_mb"]
    result["rss_growth_mb"] = round(growth, 1)
    checks = {
        f"RSS growth after warm-up {growth:.1f} MB < {RSS_GROWTH_LIMIT_MB} MB": growth < RSS_GROWTH_LIMIT_MB,
        "no new metric series after warm-up": not result["new_series_after_warm_up"],
        "no span left open": result["open_spans"] == 0,
        "gauges back to 0": all(value == 0 for value in result["gauges"].values()),
    }
    checkpoints = result.pop("rss_checkpoints_mb")
    print(json.dumps(result, indent=2))
    print("RSS (MB) after n runs:", ", ".join(f"{n}: {mb}" for n, mb in checkpoints))
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
