"""Where hayscope's per-component time goes: micro timings of each step, and in-pipeline ablations.

    python benchmarks/profile_hayscope.py [--rounds N] [--runs K] [--cprofile]

1. Micro: each step `TracedAsyncPipeline._run_component_async` takes for one async component
   (recording.py / pipeline.py), timed alone in a loop: best and median of 5 repeats, in µs.
2. Ablation: the 8-async chain run by `bare` haystack and by hayscope with parts of its recording
   switched off *on the pipeline's own telemetry objects* (nothing in sdk/ is edited), interleaved in
   rounds; overhead per component vs bare (median and min over rounds). The difference between two
   rows is what the switched-off part costs inside a real run.
3. --cprofile: cProfile of hayscope on the same chain, hayscope/opentelemetry/prometheus functions.
"""

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

sys.path.insert(0, str(Path(__file__).parent))

import bench_overhead as bench  # noqa: E402
from hayscope import semconv  # noqa: E402
from hayscope.pipeline import TracedAsyncPipeline, _context_with, _runs_async  # noqa: E402
from hayscope.recording import (  # noqa: E402
    ComponentExecution,
    ComponentTelemetry,
    PipelineRun,
    PipelineTelemetry,
    _exemplar,
    current_run,
)

# --------------------------------------------------------------------------------------------------
# 1. Micro timings


def micro(label: str, fn: Callable[[], Any], n: int = 20_000) -> tuple[str, float, float]:
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        timings.append((time.perf_counter() - start) / n * 1e6)
    return label, min(timings), statistics.median(timings)


def micro_steps(variant: bench.Variant) -> list[tuple[str, float, float]]:
    pipeline = variant.build(bench.CHAIN_ASYNC)
    assert isinstance(pipeline, TracedAsyncPipeline)
    telemetry = pipeline._get_telemetry()
    instance = bench.AsyncPass()
    run = telemetry.start_run(pipeline._run_attributes("async"))
    token = otel_context.attach(run.context)
    comp = telemetry.component("c0", type(instance), semconv.MODE_ASYNC)
    span = comp.tracer.start_span(comp.span_name, context=run.context, attributes=comp.attributes)
    execution = ComponentExecution(comp, span, run.context)
    histogram = comp._durations[semconv.STATUS_OK]

    def start_and_end_span() -> None:
        comp.tracer.start_span(comp.span_name, context=run.context, attributes=comp.attributes).end()

    def start_and_end_bare_span() -> None:
        comp.tracer.start_span(comp.span_name, context=run.context).end()

    def whole_component() -> None:
        e = run.start_component("c0", instance, semconv.MODE_ASYNC)
        otel_context.detach(otel_context.attach(e.context))
        e.finish(1)

    try:
        return [
            micro("current_run()", current_run),
            micro("_runs_async(instance)", lambda: _runs_async(instance)),
            micro("PipelineTelemetry.component() cache hit", lambda: telemetry.component("c0", type(instance), "async")),
            micro("tracer.start_span(4 attributes) + span.end()", start_and_end_span, 5_000),
            micro("tracer.start_span(no attributes) + span.end()", start_and_end_bare_span, 5_000),
            micro("ComponentExecution(): 2 Context copies", lambda: ComponentExecution(comp, span, run.context)),
            micro("otel_context.attach + detach", lambda: otel_context.detach(otel_context.attach(execution.context))),
            micro("components_in_flight gauge inc + dec", lambda: (comp.in_flight.inc(), comp.in_flight.dec())),
            micro("_exemplar(span): trace/span id hex", lambda: _exemplar(span)),
            micro("histogram.observe(x, exemplar) incl. _exemplar", lambda: comp.observe(0.001, "ok", span)),
            micro("histogram.observe(x) without exemplar", lambda: histogram.observe(0.001)),
            micro("span.set_attribute (recording span)", lambda: span.set_attribute(semconv.COMPONENT_VISITS, 1)),
            micro("_context_with() (thread mode only)", lambda: _context_with(execution.context)),
            micro("WHOLE start_component + attach/detach + finish", whole_component, 5_000),
        ]
    finally:
        otel_context.detach(token)
        variant.settle()
        variant.shutdown()


# --------------------------------------------------------------------------------------------------
# 2. Ablations on a running pipeline's telemetry objects


class _Null:
    """Stands in for a prometheus child or metric: every call is a no-op returning itself."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "_Null":
        return self


class _NoExemplar(ComponentTelemetry):
    __slots__ = ()

    def observe(self, elapsed: float, status: str, span: Any) -> None:
        self._durations[status].observe(elapsed)


def _components(pipeline: TracedAsyncPipeline) -> list[ComponentTelemetry]:
    telemetry = pipeline._get_telemetry()
    return list(telemetry._components.values())


def no_exemplars(pipeline: TracedAsyncPipeline) -> None:
    for comp in _components(pipeline):
        comp.__class__ = _NoExemplar


def no_start_attributes(pipeline: TracedAsyncPipeline) -> None:
    for comp in _components(pipeline):
        comp.attributes = {}


def no_metrics(pipeline: TracedAsyncPipeline) -> None:
    telemetry: PipelineTelemetry = pipeline._get_telemetry()
    telemetry.metrics = _Null()  # type: ignore[assignment]
    telemetry._in_flight = _Null()
    for comp in _components(pipeline):
        comp.in_flight = _Null()
        comp._durations = {status: _Null() for status in comp._durations}


def no_spans(pipeline: TracedAsyncPipeline) -> None:
    telemetry = pipeline._get_telemetry()
    telemetry.tracer = trace.NoOpTracer()
    for comp in _components(pipeline):
        comp.tracer = telemetry.tracer


# A prototype of one fix, not in sdk/: `PipelineRun.context` and `ComponentExecution.context` hold
# the run/execution itself (under RUN_KEY/EXECUTION_KEY), a reference cycle that makes every run's
# spans, contexts and executions garbage only the cyclic GC can free. Dropping `.context` once the
# run/execution has finished breaks the cycle, so reference counting frees them at once.


class _CycleFreeExecution(ComponentExecution):
    __slots__ = ()

    def finish(self, visits: int | None, error: BaseException | None = None) -> None:
        super().finish(visits, error)
        self.context = None  # type: ignore[assignment]


class _CycleFreeRun(PipelineRun):
    __slots__ = ()

    def start_component(self, name: str, instance: Any, mode: str) -> ComponentExecution:
        component = self.telemetry.component(name, type(instance), mode)
        span = component.tracer.start_span(component.span_name, context=self.context, attributes=component.attributes)
        component.in_flight.inc()
        return _CycleFreeExecution(component, span, self.context)

    def finish(self, error: BaseException | None = None) -> None:
        super().finish(error)
        self.context = None  # type: ignore[assignment]


class _CycleFreeTelemetry(PipelineTelemetry):
    def start_run(self, attributes: Any) -> PipelineRun:
        parent = otel_context.get_current()
        span = self.tracer.start_span(self.span_name, context=parent, attributes=attributes)
        self._in_flight.inc()
        return _CycleFreeRun(self, span, parent)


def cycle_free(pipeline: TracedAsyncPipeline) -> None:
    pipeline._get_telemetry().__class__ = _CycleFreeTelemetry


def no_spans_no_metrics(pipeline: TracedAsyncPipeline) -> None:
    no_spans(pipeline)
    no_metrics(pipeline)


@dataclass
class Ablation:
    name: str
    variant: bench.Variant
    apply: Callable[[TracedAsyncPipeline], None] | None = None


def ONE_PERCENT() -> Any:  # noqa: N802
    return bench.ParentBased(bench.TraceIdRatioBased(0.01))


ABLATIONS: list[Callable[[], Ablation]] = [
    lambda: Ablation("bare", bench.Variant("bare")),
    lambda: Ablation("hayscope (as shipped)", bench.Variant("hayscope", hayscope=True)),
    lambda: Ablation("  - exemplars", bench.Variant("h1", hayscope=True), no_exemplars),
    lambda: Ablation("  - span start attributes", bench.Variant("h2", hayscope=True), no_start_attributes),
    lambda: Ablation("  - all metrics", bench.Variant("h3", hayscope=True), no_metrics),
    lambda: Ablation("  - spans (NoOpTracer)", bench.Variant("h4", hayscope=True), no_spans),
    lambda: Ablation("  - spans - metrics (structure only)", bench.Variant("h5", hayscope=True), no_spans_no_metrics),
    lambda: Ablation("  + reference cycle broken (prototype fix)", bench.Variant("h7", hayscope=True), cycle_free),
    lambda: Ablation("hayscope-1pct", bench.Variant("h6", hayscope=True, sampler=ONE_PERCENT())),
    lambda: Ablation(
        "hayscope-1pct + reference cycle broken", bench.Variant("h8", hayscope=True, sampler=ONE_PERCENT()), cycle_free
    ),
    lambda: Ablation("otel-haystack", bench.Variant("otel-haystack", haystack_tracer=True)),
]


async def ablation_table(rounds: int, runs: int) -> list[tuple[str, float, float]]:
    workload = bench.CHAIN_ASYNC
    ablations = [make() for make in ABLATIONS]
    pipelines = {}
    for ablation in ablations:
        pipeline = ablation.variant.build(workload)
        with ablation.variant.active():
            await bench.run_sequential(pipeline, workload, 100)  # builds the telemetry objects
        if ablation.apply is not None:
            assert isinstance(pipeline, TracedAsyncPipeline)
            ablation.apply(pipeline)
        pipelines[ablation.name] = pipeline
    per_run: dict[str, list[float]] = {ablation.name: [] for ablation in ablations}
    for round_index in range(rounds):
        shift = round_index % len(ablations)
        for ablation in [*ablations[shift:], *ablations[:shift]]:
            gc.collect()
            with ablation.variant.active():
                seconds = await bench.run_sequential(pipelines[ablation.name], workload, runs)
            per_run[ablation.name].append(seconds * 1e6)
            ablation.variant.settle()
    for ablation in ablations:
        ablation.variant.shutdown()
    bare = per_run["bare"]
    table = []
    for ablation in ablations[1:]:
        overhead = [(v - b) / workload.components for v, b in zip(per_run[ablation.name], bare)]
        table.append((ablation.name, statistics.median(overhead), min(per_run[ablation.name]) - min(bare)))
    return [(name, med, low / workload.components) for name, med, low in table]


# --------------------------------------------------------------------------------------------------
# 3. cProfile


async def cprofile_hayscope(runs: int) -> str:
    variant = bench.Variant("hayscope", hayscope=True)
    pipeline = variant.build(bench.CHAIN_ASYNC)
    profiler = cProfile.Profile()
    await bench.run_sequential(pipeline, bench.CHAIN_ASYNC, 200)
    profiler.enable()
    await bench.run_sequential(pipeline, bench.CHAIN_ASYNC, runs)
    profiler.disable()
    variant.shutdown()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats("hayscope|opentelemetry|prometheus", 40)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()

    for variant in (bench.Variant("hayscope", hayscope=True),
                    bench.Variant("hayscope-1pct", hayscope=True,
                                  sampler=bench.ParentBased(bench.TraceIdRatioBased(0.01)))):  # fmt: skip
        print(f"\n### Micro timings, {variant.name} (µs per call: best of 5, median of 5)\n")
        print("| step | best µs | median µs |\n|---|---:|---:|")
        for label, best, med in micro_steps(variant):
            print(f"| {label} | {best:.2f} | {med:.2f} |")

    print(f"\n### In-pipeline ablation, chain8-async ({args.rounds} rounds x {args.runs} runs)\n")
    print("| variant | overhead µs/component, median | from per-variant minima |\n|---|---:|---:|")
    for name, med, low in asyncio.run(ablation_table(args.rounds, args.runs)):
        print(f"| {name} | {med:.1f} | {low:.1f} |")

    if args.cprofile:
        print("\n### cProfile (inflated by the profiler; for shares, not absolute µs)\n")
        print(asyncio.run(cprofile_hayscope(2000)))


if __name__ == "__main__":
    main()
