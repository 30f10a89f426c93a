"""Where hayscope's per-component time goes, for benchmarks/README.md.

    python benchmarks/profile_hayscope.py [--rounds N] [--runs K]
    PYTHONPATH=/path/to/a/checkout/sdk python benchmarks/profile_hayscope.py   # a given commit of hayscope

Three views of the 8-async chain (no real work, so every µs beyond bare haystack is hayscope's):

1. Calls per component execution: cProfile's call counts of the primitives hayscope's hot path uses
   (OpenTelemetry SDK spans, prometheus_client samples, contexts, loop-held timer steps).
2. Micro cost of each primitive, timed alone in a loop (cache-hot: a lower bound of its cost in a run).
3. In-pipeline ablations, interleaved in rounds with `bare`: hayscope with one part switched off,
   through public arguments (a no-op tracer provider) or by patching a function *only while that
   variant's block runs* (nothing in sdk/ is edited). The difference between two rows is what the
   switched-off part costs inside a real run. A patch whose target no longer exists is reported as
   skipped, so the script survives changes to hayscope's internals.
"""

import argparse
import asyncio
import contextlib
import cProfile
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from haystack import Pipeline
from haystack.core.pipeline.base import PipelineBase
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

sys.path.insert(0, str(Path(__file__).parent))

import bench_overhead as bench  # noqa: E402

import hayscope.metrics as hayscope_metrics  # noqa: E402
import hayscope.pipeline as hayscope_pipeline  # noqa: E402
import hayscope.recording as hayscope_recording  # noqa: E402
import hayscope.spans as hayscope_spans  # noqa: E402
from hayscope import TracedAsyncPipeline  # noqa: E402

WORKLOAD = bench.CHAIN_ASYNC

# --------------------------------------------------------------------------------------------------
# 1. Calls per component execution


@dataclass(frozen=True)
class Primitive:
    label: str
    path_part: str  # part of the function's file name ("~" for built-ins)
    functions: tuple[str, ...]


PRIMITIVES = (
    Primitive("SDK Tracer.start_span", "opentelemetry/sdk/trace/__init__.py", ("start_span",)),
    Primitive("SDK Span.end (+ BatchSpanProcessor.on_end)", "opentelemetry/sdk/trace/__init__.py", ("end",)),
    Primitive("SDK Span.set_attribute", "opentelemetry/sdk/trace/__init__.py", ("set_attribute",)),
    Primitive("prometheus Histogram.observe", "prometheus_client/metrics.py", ("observe",)),
    Primitive("prometheus exemplar validation", "prometheus_client/validation.py", ("_validate_exemplar",)),
    Primitive("prometheus Gauge/Counter inc+dec", "prometheus_client/metrics.py", ("inc", "dec")),
    Primitive("hayscope _exemplar (hex ids)", "hayscope/", ("_exemplar", "exemplar_labels")),
    Primitive("hayscope SampleBuffer.add", "hayscope/metrics.py", ("add",)),
    Primitive("otel context set_value (Context copy)", "opentelemetry/context/__init__.py", ("set_value",)),
    Primitive("otel context attach+detach", "opentelemetry/context/__init__.py", ("attach", "detach")),
    Primitive("loop-held timer steps", "hayscope/timing.py", ("__await__", "timed_on_loop")),
    Primitive("time.perf_counter / time_ns", "~", ("<built-in method time.perf_counter>",
                                                   "<built-in method time.time_ns>")),  # fmt: skip
)


async def calls_per_execution(runs: int) -> dict[str, float]:
    variant = bench.Variant("hayscope", hayscope=True)
    pipeline = variant.build(WORKLOAD)
    await bench.run_sequential(pipeline, WORKLOAD, 50)
    profiler = cProfile.Profile()
    profiler.enable()
    await bench.run_sequential(pipeline, WORKLOAD, runs)
    profiler.disable()
    variant.shutdown()
    profiler.create_stats()
    executions = runs * WORKLOAD.components
    counts = {}
    for primitive in PRIMITIVES:
        calls = sum(
            stats[1]
            for (path, _line, function), stats in profiler.stats.items()  # type: ignore[attr-defined]
            if primitive.path_part in path and function in primitive.functions
        )
        counts[primitive.label] = calls / executions
    return counts


# --------------------------------------------------------------------------------------------------
# 2. Micro cost of each primitive


def micro(fn: Callable[[], Any], n: int = 10_000) -> float:
    """Best of 5 loops, µs per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


class _Execution:
    loop_held = 0.0


async def _nothing() -> None:
    return None


async def _await_many(n: int, wrap: Callable[[Any], Any]) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await wrap(_nothing())
    return (time.perf_counter() - start) / n * 1e6


def micro_costs() -> dict[str, float]:
    provider_variant = bench.Variant("micro", hayscope=True)
    assert provider_variant.provider is not None
    tracer = provider_variant.provider.get_tracer("micro")
    parent = tracer.start_span("parent")
    parent_context = trace.set_span_in_context(parent)
    span = tracer.start_span("child", context=parent_context)
    attributes = {"a.name": "c0", "a.type": "AsyncPass", "a.mode": "async", "a.pipeline": "p"}
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", ("a",), registry=registry).labels("x")
    gauge = Gauge("g", "g", ("a",), registry=registry).labels("x")
    key = otel_context.create_key("micro")
    context = otel_context.set_value(key, 1, parent_context)
    ids = span.get_span_context()

    def exemplar() -> dict[str, str]:
        return {"trace_id": format(ids.trace_id, "032x"), "span_id": format(ids.span_id, "016x")}

    costs = {
        "SDK Tracer.start_span": micro(lambda: tracer.start_span("c", context=parent_context, attributes=attributes)),
        "SDK Span.end (+ BatchSpanProcessor.on_end)": micro(
            lambda: tracer.start_span("c", context=parent_context, attributes=attributes).end()
        ),
        "SDK Span.set_attribute": micro(lambda: span.set_attribute("a.visits", 1)),
        "prometheus Histogram.observe": micro(lambda: histogram.observe(0.001)),
        "prometheus Histogram.observe with exemplar": micro(lambda: histogram.observe(0.001, exemplar())),
        "prometheus Gauge/Counter inc+dec": micro(gauge.inc),
        "hayscope _exemplar (hex ids)": micro(exemplar),
        "otel context set_value (Context copy)": micro(lambda: otel_context.set_value(key, 2, context)),
        "otel context attach+detach": micro(lambda: otel_context.detach(otel_context.attach(context))) / 2,
        "time.perf_counter / time_ns": micro(time.perf_counter),
    }
    # Span.end alone = (start + end) - start; the exemplar's cost inside observe is reported apart.
    costs["SDK Span.end (+ BatchSpanProcessor.on_end)"] -= costs["SDK Tracer.start_span"]
    costs["prometheus exemplar validation"] = (
        costs.pop("prometheus Histogram.observe with exemplar") - costs["prometheus Histogram.observe"]
        - costs["hayscope _exemplar (hex ids)"]
    )  # fmt: skip
    buffer_class = getattr(hayscope_metrics, "SampleBuffer", None)
    if buffer_class is not None:  # one execution's record of 5 samples; the bulk apply every FLUSH_EVERY included
        buffer = buffer_class()
        if hasattr(buffer, "kind"):  # records as flat tuples of numbers, their instruments by kind
            record: Any = (buffer.kind((histogram,) * 4, ((gauge, 1),)), 0, 0, 0.0) + (0.001,) * 4
        else:
            record = ((histogram,) * 4, (0.001,) * 4, None, 0.0, ((gauge, 1),))
        costs["hayscope SampleBuffer.add"] = micro(lambda: buffer.add(record))
    timing = sys.modules.get("hayscope.timing")
    timer = getattr(timing, "timed_on_loop", None) or getattr(timing, "LoopHeldTimer", None)
    if timer is not None:
        loop = asyncio.new_event_loop()
        plain = min(loop.run_until_complete(_await_many(10_000, lambda c: c)) for _ in range(5))
        timed = min(loop.run_until_complete(_await_many(10_000, lambda c: timer(c, _Execution()))) for _ in range(5))
        loop.close()
        costs["loop-held timer steps"] = timed - plain
    provider_variant.settle()
    provider_variant.shutdown()
    return costs


# --------------------------------------------------------------------------------------------------
# 3. Ablations


@dataclass(frozen=True)
class Patch:
    """`owner.name = value` while a variant's block runs."""

    owner: Any
    name: str
    value: Any


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _passthrough_timer(coroutine: Any, execution: Any) -> Any:
    return coroutine


def _no_exemplar(span: Any) -> None:
    return None


def _patchable(patches: tuple[Patch, ...]) -> bool:
    return all(patch.name in vars(patch.owner) for patch in patches)


def _first_patchable(*choices: tuple[Patch, ...]) -> tuple[Patch, ...]:
    """The first set of patches this hayscope has the targets of (internals differ between commits)."""
    return next((patches for patches in choices if patches and _patchable(patches)), choices[-1])


# Samples are buffered (SampleBuffer) and their exemplar comes from `_sampled` since the buffer
# was added; before, each was an observe()/inc() with an exemplar made by `_exemplar`.
NO_EXEMPLARS = _first_patchable(
    (Patch(hayscope_recording, "_sampled", _no_exemplar),),
    (Patch(hayscope_recording, "_exemplar", _no_exemplar),),
)
NO_METRICS = _first_patchable(
    (Patch(hayscope_metrics.SampleBuffer, "add", _noop),) if hasattr(hayscope_metrics, "SampleBuffer") else (),
    (
        Patch(Histogram, "observe", _noop),
        Patch(Gauge, "inc", _noop),
        Patch(Gauge, "dec", _noop),
        Patch(Counter, "inc", _noop),
    ),
)


def _sdk_start_span(starter: Any, name: str, context: Any, parent: Any, attributes: Any, start_time: Any = None) -> Any:
    return starter.tracer.start_span(name, context=context, attributes=attributes, start_time=start_time)


# SpanStarter builds component spans itself; switched off, every span comes from Tracer.start_span.
NO_SPAN_STARTER = (Patch(hayscope_spans.SpanStarter, "start", _sdk_start_span),)
NO_LOOP_HELD_TIMER = _first_patchable(
    (Patch(hayscope_pipeline, "timed_on_loop", _passthrough_timer),),
    (Patch(hayscope_pipeline, "LoopHeldTimer", _passthrough_timer),),
)
NO_SCHEDULE_HOOK = (
    Patch(TracedAsyncPipeline, "_consume_component_inputs", vars(PipelineBase)["_consume_component_inputs"]),
)


@contextlib.contextmanager
def patched(patches: tuple[Patch, ...]) -> Iterator[None]:
    saved = [(patch, patch.owner.__dict__[patch.name]) for patch in patches]
    for patch in patches:
        setattr(patch.owner, patch.name, patch.value)
    try:
        yield
    finally:
        for patch, original in saved:
            setattr(patch.owner, patch.name, original)


@dataclass
class Ablation:
    name: str
    variant: bench.Variant
    patches: tuple[Patch, ...] = ()
    no_spans: bool = False  # TracedAsyncPipeline(tracer_provider=NoOpTracerProvider())
    pipeline: Pipeline | None = field(default=None, init=False)

    def build(self) -> Pipeline:
        if self.no_spans:
            pipeline = TracedAsyncPipeline(
                name=WORKLOAD.name, tracer_provider=trace.NoOpTracerProvider(), registry=CollectorRegistry()
            )
            WORKLOAD.populate(pipeline)
            return pipeline
        return self.variant.build(WORKLOAD)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self.variant.active(), patched(self.patches):
            yield


def ablations() -> list[Ablation]:
    def hayscope(name: str, patches: tuple[Patch, ...] = (), no_spans: bool = False) -> Ablation:
        return Ablation(name, bench.Variant(name, hayscope=True), patches, no_spans)

    everything = NO_METRICS + NO_LOOP_HELD_TIMER + NO_SCHEDULE_HOOK
    candidates = [
        Ablation("bare", bench.Variant("bare")),
        hayscope("hayscope (as is)"),
        hayscope("  - SpanStarter (Tracer.start_span instead)", NO_SPAN_STARTER),
        hayscope("  - exemplars", NO_EXEMPLARS),
        hayscope("  - all prometheus samples", NO_METRICS),
        hayscope("  - loop-held timer", NO_LOOP_HELD_TIMER),
        hayscope("  - time breakdown (loop-held timer and schedule-wait hook)", NO_LOOP_HELD_TIMER + NO_SCHEDULE_HOOK),
        hayscope("  - schedule-wait hook", NO_SCHEDULE_HOOK),
        hayscope("  - spans (NoOpTracerProvider)", no_spans=True),
        hayscope("  - spans - samples - timer - hook (what is left)", everything, no_spans=True),
        Ablation("hayscope-1pct", bench.Variant("1pct", hayscope=True, sampler=bench.one_percent())),
        Ablation("otel-haystack", bench.Variant("otel-haystack", haystack_tracer=True)),
    ]
    usable = []
    for ablation in candidates:
        if _patchable(ablation.patches):
            usable.append(ablation)
        else:
            print(f"(skipped '{ablation.name.strip()}': this hayscope has no such function)", file=sys.stderr)
    return usable


async def ablation_table(rounds: int, runs: int) -> list[tuple[str, float, float]]:
    table = ablations()
    for ablation in table:
        ablation.pipeline = ablation.build()
        with ablation.active():
            await bench.run_sequential(ablation.pipeline, WORKLOAD, 100)
        ablation.variant.settle()
    per_run: dict[str, list[float]] = {ablation.name: [] for ablation in table}
    for round_index in range(rounds):
        shift = round_index % len(table)
        for ablation in [*table[shift:], *table[:shift]]:
            assert ablation.pipeline is not None
            gc.collect()
            with ablation.active():
                per_run[ablation.name].append(await bench.run_sequential(ablation.pipeline, WORKLOAD, runs) * 1e6)
            ablation.variant.settle()
    for ablation in table:
        ablation.variant.shutdown()
    bare = per_run["bare"]
    rows = []
    for ablation in table[1:]:
        us = per_run[ablation.name]
        overhead = statistics.median((v - b) / WORKLOAD.components for v, b in zip(us, bare))
        rows.append((ablation.name, overhead, (min(us) - min(bare)) / WORKLOAD.components))
    return rows


# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=150)
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # warnings beside, not in, the report
    source = bench.sdk_source()
    print(f"hayscope from {source['path']} (commit {source['commit']}, "
          f"uncommitted changes: {source['uncommitted_changes']})")  # fmt: skip

    counts = asyncio.run(calls_per_execution(1000))
    costs = micro_costs()
    print("\n### Per component execution: calls (cProfile counts) x micro cost (cache-hot, a lower bound)\n")
    print("| primitive | calls per execution | µs per call | µs per execution |\n|---|---:|---:|---:|")
    total = 0.0
    for primitive in PRIMITIVES:
        calls, cost = counts[primitive.label], costs.get(primitive.label, float("nan"))
        total += calls * cost if cost == cost else 0.0
        print(f"| {primitive.label} | {calls:.2f} | {cost:.2f} | {calls * cost:.1f} |")
    print(f"| **sum** | | | **{total:.1f}** |")

    print(f"\n### In-pipeline ablation, {WORKLOAD.name} ({args.rounds} rounds x {args.runs} runs, interleaved)\n")
    print("| variant | overhead µs/component vs bare, median of rounds | from the variants' best rounds |")
    print("|---|---:|---:|")
    for name, median, best in asyncio.run(ablation_table(args.rounds, args.runs)):
        print(f"| {name} | {median:.1f} | {best:.1f} |")


if __name__ == "__main__":
    main()
