"""Overhead of hayscope's tracing against bare haystack and opentelemetry-haystack.

    python benchmarks/bench_overhead.py [--quick] [--json out.json]

Every variant runs in this one process and one event loop. Sequential runs alternate between the
variants run by run, and each concurrent block of one variant is measured right next to a `bare`
block, so that the host's slow phases (seconds long here, up to 2x slower) hit every variant alike.
Overheads are means over a round's cycles of a run less the `bare` run of the same cycle; they and
the throughput ratios are summarised as median and min–max over rounds. See benchmarks/README.md for
what each variant and workload is.
"""

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from haystack import Pipeline, component, tracing
from haystack.core.component.types import Variadic
from haystack.core.pipeline.base import PipelineBase
from haystack_integrations.tracing.opentelemetry.tracer import OpenTelemetryTracer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from prometheus_client import CollectorRegistry

import hayscope.pipeline as hayscope_pipeline
from hayscope import TracedAsyncPipeline

# --------------------------------------------------------------------------------------------------
# Components: they do nothing, so whatever a run costs beyond bare haystack is instrumentation.


@component
class AsyncPass:
    """Passes its input on; has `run_async`, so haystack awaits it on the loop."""

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, int]:
        return {"value": value}

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, int]:
        return {"value": value}


@component
class SyncPass:
    """Passes its input on; sync only, so `run_async` offloads it to a thread."""

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, int]:
        return {"value": value}


@component
class AsyncJoin:
    """Sums a Variadic input: the fan-in of the fan-out workload."""

    @component.output_types(value=int)
    def run(self, values: Variadic[int]) -> dict[str, int]:
        return {"value": sum(values)}

    @component.output_types(value=int)
    async def run_async(self, values: Variadic[int]) -> dict[str, int]:
        return {"value": sum(values)}


# --------------------------------------------------------------------------------------------------
# Workloads


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    components: int  # component executions per run
    populate: Callable[[Pipeline], None]
    first: str  # the component that receives the run's input

    def data(self) -> dict[str, Any]:
        return {self.first: {"value": 1}}


def _chain(make: Callable[[], Any], length: int) -> Callable[[Pipeline], None]:
    def populate(pipeline: Pipeline) -> None:
        for i in range(length):
            pipeline.add_component(f"c{i}", make())
        for i in range(length - 1):
            pipeline.connect(f"c{i}.value", f"c{i + 1}.value")

    return populate


def _fan_out(branches: int) -> Callable[[Pipeline], None]:
    def populate(pipeline: Pipeline) -> None:
        pipeline.add_component("source", AsyncPass())
        pipeline.add_component("join", AsyncJoin())
        for i in range(branches):
            pipeline.add_component(f"b{i}", AsyncPass())
            pipeline.connect("source.value", f"b{i}.value")
            pipeline.connect(f"b{i}.value", "join.values")

    return populate


CHAIN_ASYNC = Workload("chain8-async", "8 async components in a chain", 8, _chain(AsyncPass, 8), "c0")
WORKLOADS: tuple[Workload, ...] = (
    CHAIN_ASYNC,
    Workload("chain8-sync", "8 sync-only components in a chain (thread-offloaded)", 8, _chain(SyncPass, 8), "c0"),
    Workload("fanout4", "source -> 4 async branches -> Variadic joiner", 6, _fan_out(4), "source"),
)

# --------------------------------------------------------------------------------------------------
# Exporters and variants


class DroppingExporter(SpanExporter):
    """Drops every span; keeps only how many it was handed, to reveal spans lost to a full queue."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def take(self) -> int:
        count, self.exported = self.exported, 0
        return count


class CountingExporter(DroppingExporter):
    """Also counts spans by (instrumentation scope, kind), for the span-count check."""

    def __init__(self) -> None:
        super().__init__()
        self.by_kind: collections.Counter[tuple[str, str]] = collections.Counter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            scope = span.instrumentation_scope.name if span.instrumentation_scope else "?"
            self.by_kind[scope, _span_kind(span.name)] += 1
        return super().export(spans)


def _span_kind(name: str) -> str:
    if name.startswith("haystack.pipeline.run"):
        return "pipeline"
    if name.startswith("haystack.component.run"):
        return "component"
    return "other"  # e.g. hayscope's wait spans (a schedule or queue wait past its threshold)


@dataclass
class Variant:
    """One way of running a workload: which pipeline class, which tracer, which sampler."""

    name: str
    hayscope: bool = False  # TracedAsyncPipeline instead of haystack.Pipeline
    haystack_tracer: bool = False  # opentelemetry-haystack's tracer enabled while this variant runs
    sampler: Sampler = ALWAYS_ON
    time_breakdown: bool = True  # False: hayscope without its loop-held timing and schedule-wait hook
    exporter: DroppingExporter = field(default_factory=DroppingExporter)
    provider: TracerProvider | None = field(init=False, default=None)
    registry: CollectorRegistry | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.hayscope or self.haystack_tracer:
            self.provider = TracerProvider(sampler=self.sampler)
            self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        if self.hayscope:
            self.registry = CollectorRegistry()

    def build(self, workload: Workload) -> Pipeline:
        if self.hayscope:
            traced = TracedAsyncPipeline if self.time_breakdown else WithoutScheduleHook
            pipeline: Pipeline = traced(name=workload.name, tracer_provider=self.provider, registry=self.registry)
        else:
            pipeline = Pipeline()
        workload.populate(pipeline)
        return pipeline

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """haystack's tracer is global: enabled only inside this block, and for this variant only."""
        if self.haystack_tracer:
            assert self.provider is not None
            tracing.enable_tracing(OpenTelemetryTracer(self.provider.get_tracer("haystack")))
        try:
            with contextlib.nullcontext() if self.time_breakdown else without_loop_held_timing():
                yield
        finally:
            tracing.disable_tracing()

    def settle(self) -> int:
        """Flushes queued spans (outside any timed section) and returns how many were exported."""
        if self.provider is not None:
            self.provider.force_flush()
        return self.exporter.take()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


class WithoutScheduleHook(TracedAsyncPipeline):
    """hayscope without its schedule-wait hook: haystack's own method, so no schedule-wait sample or
    attribute. A class of its own rather than a patch while the variant runs: assigning a class
    attribute invalidates the interpreter's caches for that class, which the next runs of every
    hayscope variant would pay for, every cycle."""

    _consume_component_inputs = vars(PipelineBase)["_consume_component_inputs"]  # haystack's staticmethod


@contextlib.contextmanager
def without_loop_held_timing() -> Iterator[None]:
    """No loop-held timing of async components (the loop-held histogram still gets its zero), for
    this benchmark only and only while the no-breakdown variant runs: a module global, read on every
    execution, so swapping it leaves every cache alone."""
    timer = hayscope_pipeline.timed_on_loop
    hayscope_pipeline.timed_on_loop = lambda coroutine, execution: coroutine  # type: ignore[assignment]
    try:
        yield
    finally:
        hayscope_pipeline.timed_on_loop = timer


def one_percent() -> Sampler:
    return ParentBased(TraceIdRatioBased(0.01))


NO_BREAKDOWN = "hayscope-no-breakdown"
# What the time breakdown may add per component (µs) over hayscope without it, in the same run.
BREAKDOWN_BUDGET_US = 5.0


def timed_variants() -> list[Variant]:
    return [
        Variant("bare"),
        Variant("hayscope", hayscope=True),
        Variant(NO_BREAKDOWN, hayscope=True, time_breakdown=False),
        Variant("hayscope-1pct", hayscope=True, sampler=one_percent()),
        Variant("otel-haystack", haystack_tracer=True),
    ]


def with_counting_exporter(variant: Variant) -> Variant:
    return dataclasses.replace(variant, exporter=CountingExporter())


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class Stat:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stat":
        return cls(statistics.median(values), min(values), max(values))

    def fmt(self, digits: int = 1) -> str:
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}–{self.max:.{digits}f})"


@dataclass
class Row:
    workload: str
    variant: str
    components: int
    run_us: Stat  # sequential: µs per run
    overhead_us_per_component: Stat | None  # (variant - bare) / components, paired per round
    throughput_runs_per_s: Stat  # concurrent
    throughput_vs_bare: Stat | None  # variant / bare, paired per round
    spans_per_run_sequential: float  # exported by the dropping exporter while timing sequential runs
    spans_per_run_concurrent: float  # ... and concurrent runs (hayscope adds wait spans under load)


@dataclass
class SpanCheck:
    variant: str
    workload: str
    runs: int
    spans_per_run: dict[str, float]  # "scope/kind" -> spans per run
    expected: str
    ok: bool


@dataclass
class MemoryResult:
    variant: str
    workload: str
    warmup_runs: int
    runs: int
    rss_start_mb: float
    rss_end_mb: float
    growth_mb: float
    samples_mb: list[tuple[int, float]]  # (runs done, RSS) along the way


@dataclass
class Target:
    name: str
    value: float
    threshold: float
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


@dataclass
class OverheadRatio:
    """overhead(hayscope) / overhead(otel-haystack) per component."""

    of_medians: float  # ratio of the two median overheads: the figure the target is checked on
    per_round: Stat  # the ratio within each round (noisy when a round's otel-haystack overhead is small)


@dataclass
class Report:
    machine: dict[str, Any]
    parameters: dict[str, Any]
    rows: list[Row]
    overhead_ratio_hayscope_vs_otel: dict[str, OverheadRatio]
    span_checks: list[SpanCheck]
    memory: MemoryResult
    targets: list[Target]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets"] = [target.to_dict() for target in self.targets]
        return data


# --------------------------------------------------------------------------------------------------
# Measurements


async def run_sequential(pipeline: Pipeline, workload: Workload, runs: int) -> float:
    """Seconds per run over `runs` sequential runs."""
    start = time.perf_counter()
    for _ in range(runs):
        await pipeline.run_async(workload.data())
    return (time.perf_counter() - start) / runs


async def run_concurrent(pipeline: Pipeline, workload: Workload, runs: int) -> float:
    """Runs per second with `runs` runs in flight at once."""
    start = time.perf_counter()
    await asyncio.gather(*(pipeline.run_async(workload.data()) for _ in range(runs)))
    return runs / (time.perf_counter() - start)


def rotated(items: Sequence[Variant], round_index: int) -> list[Variant]:
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


async def alternating_runs(
    variants: Sequence[Variant], pipelines: dict[str, Pipeline], workload: Workload, cycles: int, order: random.Random
) -> dict[str, list[float]]:
    """Seconds of each sequential run per variant: `cycles` cycles of one run of every variant.

    The host's slow phases on this machine last up to seconds and slow every run down by up to 2x.
    Variants alternating run by run meet the same phases, so a variant's run is compared with the
    other variants' runs of the same cycle, milliseconds apart. The order within a cycle is drawn
    from `order` for every cycle: a run finds the code and data of the run before it in the CPU's
    caches, and an order merely rotated from cycle to cycle gives each variant the same predecessor
    every time (two identical hayscope variants then differed by ~9 µs per component, one always
    running right after the other; drawn orders put them 0.3 µs apart).
    """
    seconds: dict[str, list[float]] = {variant.name: [] for variant in variants}
    for _ in range(cycles):
        for variant in order.sample(variants, len(variants)):
            pipeline = pipelines[variant.name]
            with variant.active():
                start = time.perf_counter()
                await pipeline.run_async(workload.data())
                seconds[variant.name].append(time.perf_counter() - start)
    return seconds


def paired_us_per_component(seconds: dict[str, list[float]], name: str, baseline: str, components: int) -> float:
    """Mean over cycles of `name`'s run less `baseline`'s run of the same cycle, µs per component.

    A mean, not a median: what a variant does once every so many runs (apply its buffered samples,
    hand a batch of spans to the exporter's thread, collect its garbage) is part of its cost."""
    return statistics.fmean((a - b) * 1e6 / components for a, b in zip(seconds[name], seconds[baseline]))


async def paired_throughput(
    variants: Sequence[Variant], pipelines: dict[str, Pipeline], workload: Workload, params: "Params",
    spans: collections.Counter[str],
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:  # fmt: skip
    """Runs per second of every block per variant, and each variant's throughput over the `bare`
    block measured right next to it (before it in even rounds, after it in odd ones)."""
    figures: dict[str, list[float]] = {variant.name: [] for variant in variants}
    vs_bare: dict[str, list[float]] = {variant.name: [] for variant in variants if variant.name != "bare"}
    bare = next(variant for variant in variants if variant.name == "bare")
    for round_index in range(params.rounds):
        for variant in rotated([v for v in variants if v is not bare], round_index):
            pair = (bare, variant) if round_index % 2 == 0 else (variant, bare)
            measured = {}
            for member in pair:
                gc.collect()
                with member.active():
                    measured[member.name] = await run_concurrent(
                        pipelines[member.name], workload, params.concurrent_runs
                    )
                spans[member.name] += member.settle()
                figures[member.name].append(measured[member.name])
            vs_bare[variant.name].append(measured[variant.name] / measured["bare"])
    return figures, vs_bare


async def warm_up(variants: Sequence[Variant], pipelines: dict[str, Pipeline], workload: Workload, runs: int) -> None:
    for variant in variants:
        with variant.active():
            await run_sequential(pipelines[variant.name], workload, runs)
        variant.settle()


# Per round of sequential runs, each variant's run times in seconds (see `alternating_runs`).
SequentialRound = dict[str, list[float]]


async def bench_workload(
    variants: Sequence[Variant], workload: Workload, params: "Params"
) -> tuple[list[Row], list[SequentialRound]]:
    """Rows per variant, and the sequential run times of every round."""
    pipelines = {variant.name: variant.build(workload) for variant in variants}
    await warm_up(variants, pipelines, workload, params.warmup_runs)
    sequential_spans: collections.Counter[str] = collections.Counter()
    concurrent_spans: collections.Counter[str] = collections.Counter()

    sequential: list[SequentialRound] = []
    order = random.Random(workload.name)  # the same orders on every run of the benchmark
    for _ in range(params.rounds):
        gc.collect()
        sequential.append(await alternating_runs(variants, pipelines, workload, params.sequential_runs, order))
        for variant in variants:  # queued spans exported outside the timing
            sequential_spans[variant.name] += variant.settle()
    throughput, vs_bare = await paired_throughput(variants, pipelines, workload, params, concurrent_spans)

    rows = []
    for variant in variants:
        is_bare = variant.name == "bare"
        overhead = [
            paired_us_per_component(seconds, variant.name, "bare", workload.components) for seconds in sequential
        ]
        rows.append(
            Row(
                workload=workload.name,
                variant=variant.name,
                components=workload.components,
                run_us=Stat.of([statistics.fmean(seconds[variant.name]) * 1e6 for seconds in sequential]),
                overhead_us_per_component=None if is_bare else Stat.of(overhead),
                throughput_runs_per_s=Stat.of(throughput[variant.name]),
                throughput_vs_bare=None if is_bare else Stat.of(vs_bare[variant.name]),
                spans_per_run_sequential=sequential_spans[variant.name] / (params.rounds * params.sequential_runs),
                spans_per_run_concurrent=concurrent_spans[variant.name]
                / (len(throughput[variant.name]) * params.concurrent_runs),
            )
        )
    return rows, sequential


def overhead_ratio(rows: Sequence[Row], sequential: list[SequentialRound], workload: Workload) -> OverheadRatio:
    by_variant = {row.variant: row.overhead_us_per_component for row in rows if row.workload == workload.name}
    ours, theirs = by_variant["hayscope"], by_variant["otel-haystack"]
    assert ours is not None and theirs is not None
    per_round = []
    for seconds in sequential:
        theirs_in_round = paired_us_per_component(seconds, "otel-haystack", "bare", workload.components)
        if theirs_in_round:
            per_round.append(
                paired_us_per_component(seconds, "hayscope", "bare", workload.components) / theirs_in_round
            )
    return OverheadRatio(ours.median / theirs.median, Stat.of(per_round))


async def check_spans(variant: Variant, workload: Workload, runs: int, expected: str) -> SpanCheck:
    counted = with_counting_exporter(variant)
    pipeline = counted.build(workload)
    with counted.active():
        await run_sequential(pipeline, workload, runs)
    counted.settle()
    counted.shutdown()
    assert isinstance(counted.exporter, CountingExporter)
    per_run = {f"{scope}/{kind}": count / runs for (scope, kind), count in sorted(counted.exporter.by_kind.items())}
    return SpanCheck(
        variant.name, workload.name, runs, per_run, expected, ok=_spans_as_expected(variant, workload, per_run)
    )


def _spans_as_expected(variant: Variant, workload: Workload, per_run: dict[str, float]) -> bool:
    """Exactly 1 pipeline span and 1 span per component execution, all from one tracer.

    With both tracers on, hayscope's spans must win and haystack's tracer add none. Spans of other
    kinds (hayscope's wait spans) are reported but not counted here.
    """
    counted = {key: value for key, value in per_run.items() if not key.endswith("/other")}
    if not (variant.hayscope or variant.haystack_tracer):
        return not per_run
    if variant.sampler is not ALWAYS_ON:
        return True  # sampled: a fraction of runs, checked by eye
    scope = "hayscope" if variant.hayscope else "haystack"
    return counted == {f"{scope}/component": float(workload.components), f"{scope}/pipeline": 1.0}


async def span_checks(runs: int) -> list[SpanCheck]:
    both = Variant("hayscope+otel-haystack", hayscope=True, haystack_tracer=True)
    checks = []
    for workload in WORKLOADS:
        for variant in [*timed_variants(), both]:
            expected = {
                "bare": "none",
                "hayscope-1pct": f"~1% of (1 + {workload.components})",
                "hayscope+otel-haystack": f"hayscope: 1 + {workload.components}; haystack: none",
            }.get(variant.name, f"1 + {workload.components}")
            checks.append(await check_spans(variant, workload, runs, expected))
            variant.shutdown()
    return checks


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def measure_memory(variant: Variant, workload: Workload, warmup: int, runs: int) -> MemoryResult:
    pipeline = variant.build(workload)
    samples: list[tuple[int, float]] = []
    step = max(runs // 10, 1)
    with variant.active():
        await run_sequential(pipeline, workload, warmup)
        variant.settle()
        gc.collect()
        start = rss_mb()
        for done in range(step, runs + 1, step):
            await run_sequential(pipeline, workload, step)
            gc.collect()
            samples.append((done, rss_mb()))
        variant.settle()
        gc.collect()
        end = rss_mb()
    return MemoryResult(variant.name, workload.name, warmup, runs, start, end, end - start, samples)


# --------------------------------------------------------------------------------------------------
# Orchestration and output


@dataclass(frozen=True)
class Params:
    rounds: int
    sequential_runs: int
    concurrent_runs: int
    warmup_runs: int
    span_check_runs: int
    memory_warmup_runs: int
    memory_runs: int


FULL = Params(rounds=20, sequential_runs=150, concurrent_runs=200, warmup_runs=100,
              span_check_runs=500, memory_warmup_runs=2000, memory_runs=100_000)  # fmt: skip
QUICK = Params(rounds=5, sequential_runs=50, concurrent_runs=200, warmup_runs=30,
               span_check_runs=200, memory_warmup_runs=2000, memory_runs=10_000)  # fmt: skip


def sdk_source() -> dict[str, Any]:
    """Which hayscope code was measured: its directory, and the git commit and state of that directory."""
    import hayscope

    directory = str(Path(hayscope.__file__).parent)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", ".")
    return {"path": directory, "commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes": None if status is None else bool(status)}  # fmt: skip


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "hayscope_source": sdk_source(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "packages": {
            name: version(name)
            for name in ("haystack-ai", "opentelemetry-sdk", "opentelemetry-haystack", "prometheus-client", "hayscope")
        },
    }


def breakdown_cost(sequential: dict[str, list[SequentialRound]]) -> dict[str, float]:
    """Per workload, µs per component the time breakdown adds: the median over rounds of hayscope's
    runs less hayscope-no-breakdown's runs of the same cycles."""
    workloads = {workload.name: workload for workload in WORKLOADS}
    return {
        name: statistics.median(
            paired_us_per_component(seconds, "hayscope", NO_BREAKDOWN, workloads[name].components) for seconds in rounds
        )
        for name, rounds in sequential.items()
    }


def targets(
    rows: Sequence[Row], ratios: dict[str, OverheadRatio], breakdown: dict[str, float], memory: MemoryResult
) -> list[Target]:
    found: list[Target] = []
    for workload, ratio in ratios.items():
        found.append(Target(f"{workload}: overhead hayscope / otel-haystack", ratio.of_medians, 0.5, False))
    for workload, cost in breakdown.items():
        found.append(Target(f"{workload}: time breakdown, µs/component over {NO_BREAKDOWN}", cost,
                            BREAKDOWN_BUDGET_US, False))  # fmt: skip
    floors = {"hayscope": 0.75, "hayscope-1pct": 0.95}
    for row in rows:
        if row.variant in floors and row.throughput_vs_bare is not None:
            found.append(
                Target(
                    f"{row.workload}: throughput {row.variant} / bare",
                    row.throughput_vs_bare.median,
                    floors[row.variant],
                    True,
                )
            )
    found.append(Target(f"{memory.workload}: RSS growth of {memory.variant} over {memory.runs:,} runs (MB)",
                        memory.growth_mb, 10.0, False))  # fmt: skip
    return found


def markdown(report: Report) -> str:
    lines = [
        "| workload | variant | µs/run, median (min–max) | overhead µs/component vs bare | "
        "concurrent runs/s | × bare | spans/run seq. / conc. |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        overhead = row.overhead_us_per_component.fmt(2) if row.overhead_us_per_component else "—"
        vs_bare = row.throughput_vs_bare.fmt(2) if row.throughput_vs_bare else "1"
        lines.append(
            f"| {row.workload} | {row.variant} | {row.run_us.fmt()} | {overhead} | "
            f"{row.throughput_runs_per_s.fmt(0)} | {vs_bare} | "
            f"{row.spans_per_run_sequential:.2f} / {row.spans_per_run_concurrent:.2f} |"
        )
    lines += ["", "Overhead per component, hayscope / otel-haystack:", ""]
    lines += [
        f"- {workload}: {ratio.of_medians:.2f} (ratio of medians); per round: {ratio.per_round.fmt(2)}"
        for workload, ratio in report.overhead_ratio_hayscope_vs_otel.items()
    ]
    lines += ["", "| target | value | threshold | result |", "|---|---:|---:|---|"]
    for target in report.targets:
        sign = "≥" if target.higher_is_better else "≤"
        lines.append(
            f"| {target.name} | {target.value:.2f} | {sign} {target.threshold} | {'PASS' if target.passed else 'FAIL'} |"
        )
    lines += ["", "Span counts per run (counting exporter, scope/kind):", "",
              "| workload | variant | spans per run | expected | ok |", "|---|---|---|---|---|"]  # fmt: skip
    for check in report.span_checks:
        found = ", ".join(f"{key} {value:g}" for key, value in check.spans_per_run.items()) or "none"
        lines.append(
            f"| {check.workload} | {check.variant} | {found} | {check.expected} | {'yes' if check.ok else 'NO'} |"
        )
    memory = report.memory
    samples = ", ".join(f"{done // 1000}k: {mb:.1f}" for done, mb in memory.samples_mb)
    lines += [
        "",
        f"Memory ({memory.variant}, {memory.workload}): RSS {memory.rss_start_mb:.1f} MB -> {memory.rss_end_mb:.1f} MB "
        f"over {memory.runs:,} runs after {memory.warmup_runs:,} warm-up runs: growth {memory.growth_mb:+.2f} MB",
        f"(RSS along the way, MB: {samples})",
    ]
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def main_async(params: Params) -> Report:
    info = machine()
    log(f"span checks ({params.span_check_runs} runs per variant and workload)")
    checks = await span_checks(params.span_check_runs)

    variants = timed_variants()
    rows: list[Row] = []
    sequential: dict[str, list[SequentialRound]] = {}
    for workload in WORKLOADS:
        log(f"timing {workload.name}")
        workload_rows, sequential[workload.name] = await bench_workload(variants, workload, params)
        rows += workload_rows
    ratios = {workload.name: overhead_ratio(rows, sequential[workload.name], workload) for workload in WORKLOADS}

    log(f"memory: {params.memory_runs:,} runs")
    hayscope = next(variant for variant in variants if variant.name == "hayscope")
    memory = await measure_memory(hayscope, CHAIN_ASYNC, params.memory_warmup_runs, params.memory_runs)
    for variant in variants:
        variant.shutdown()
    found = targets(rows, ratios, breakdown_cost(sequential), memory)
    return Report(info, dataclasses.asdict(params), rows, ratios, checks, memory, found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs (a smoke run, noisier)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    # hayscope's warnings (a collection pausing the loop mid-run, say) go to stderr, beside the
    # progress lines, and leave the report on stdout alone
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    report = asyncio.run(main_async(QUICK if args.quick else FULL))
    info = report.machine
    source = info["hayscope_source"]
    dirty = {True: " + uncommitted changes", False: "", None: ""}[source["uncommitted_changes"]]
    print(f"Python {info['python']}, {info['cpus']} CPUs, load at start {info['loadavg_at_start'][0]:.2f}; "
          f"{', '.join(f'{k} {v}' for k, v in info['packages'].items())}; "
          f"hayscope from {source['path']} (commit {source['commit'] or 'unknown'}{dirty})\n")  # fmt: skip
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report.to_dict(), out, indent=2)
    return 0 if all(target.passed for target in report.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
