"""The report's model, and `build_report`, which fills it from what telemetry recorded.

Everything comes from finished spans (durations, the timing attributes, statuses, the waterfall),
the metrics registry (run counts of all runs, sampled or not; blocked seconds; the loop-lag
histogram) and a `TimelineSampler`'s points (loop lag and gauges over time). Times are in seconds
and every field that holds one says so (`_seconds`); shares are fractions from 0 to 1.
Percentiles are nearest-rank (stats.py), over every finished execution or run, whatever its status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hayscope import semconv
from hayscope.metrics import GC_COMPONENT
from hayscope.report.spans import KIND_COMPONENT, KIND_RUN, SpanRecord, records_of, text
from hayscope.report.stats import (
    PERCENTILE_METHOD,
    finite,
    histogram_quantile,
    order_statistics,
    percentile,
    percentile_of_sorted,
    share,
)
from hayscope.report.timeline import TimelinePoint, TimelineSampler
from hayscope.report.verdict import NOTHING_RECORDED, verdict

__all__ = [
    "BlockedTime",
    "ComponentStats",
    "ExecutorStats",
    "LoopStats",
    "PipelineStats",
    "Report",
    "Waterfall",
    "WaterfallRow",
    "build_report",
]

# Per component, the durations kept for plots: beyond this, evenly spaced order statistics.
MAX_DURATION_SAMPLES: Final = 1000
# The waterfall of a run with a loop in it can have thousands of spans; past this they are counted only.
MAX_WATERFALL_ROWS: Final = 400

RUNS_TOTAL: Final = "haystack_pipeline_runs_total"
BLOCKED_TOTAL: Final = "hayscope_event_loop_blocked_seconds_total"
LAG_BUCKET: Final = "asyncio_event_loop_lag_seconds_bucket"
LAG_COUNT: Final = "asyncio_event_loop_lag_seconds_count"
STATUSES: Final = (semconv.STATUS_OK, semconv.STATUS_ERROR, semconv.STATUS_CANCELLED)


@dataclass(frozen=True)
class ComponentStats:
    """One component of one pipeline in one execution mode, over all its finished executions."""

    pipeline: str
    name: str
    type: str
    mode: str  # async | thread | sync
    executions: int
    errors: int
    cancelled: int
    p50_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None
    max_seconds: float | None
    mean_seconds: float | None
    # p95 of the parts the mode measures; None where the mode does not measure that part
    queue_wait_p95_seconds: float | None
    loop_held_p95_seconds: float | None
    schedule_wait_p95_seconds: float | None
    total_seconds: float  # summed span durations
    run_time_total_seconds: float
    queue_wait_total_seconds: float
    schedule_wait_total_seconds: float
    loop_held_total_seconds: float
    share_of_run_time: float  # total_seconds over the summed durations of its pipeline's runs
    queued_share: float  # of its own time, spent queued for a worker thread
    schedule_wait_share: float  # of its own time, spent waiting for the concurrency limit
    blocked_seconds: float  # event loop blocked by its code (hayscope_event_loop_blocked_seconds_total)
    error_types: tuple[str, ...] = ()
    duration_sample_seconds: tuple[float, ...] = ()  # sorted; see MAX_DURATION_SAMPLES


@dataclass(frozen=True)
class PipelineStats:
    """Runs of one pipeline: counts of all runs, latencies of the traced ones."""

    name: str
    runs: int
    runs_ok: int
    runs_error: int
    runs_cancelled: int
    traced_runs: int
    p50_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None
    max_seconds: float | None
    mean_seconds: float | None
    total_run_seconds: float  # summed durations of the traced runs
    throughput_runs_per_second: float | None  # runs that ran to an end (ok or error) per wall second


@dataclass(frozen=True)
class BlockedTime:
    pipeline: str
    component: str  # "(none)" for stalls no component's code caused
    seconds: float


@dataclass(frozen=True)
class LoopStats:
    """Event-loop health: the sampler's heartbeat lag, the monitor's histogram, blocked seconds."""

    lag_p99_seconds: float | None
    lag_max_seconds: float | None
    lag_samples: int
    # Upper bound of the histogram bucket holding the p99 (LoopLagMonitor's heartbeat), if any.
    histogram_lag_p99_seconds: float | None
    histogram_observations: int
    blocked_total_seconds: float
    blocked: tuple[BlockedTime, ...]  # largest first


@dataclass(frozen=True)
class ExecutorStats:
    """Worker threads for sync components, summed over executors, from the timeline."""

    samples: int
    max_busy: float
    max_workers: float
    saturation: float | None  # max_busy / max_workers
    max_queue_depth: float
    saturated_share: float  # of samples with a queue or with every worker busy


@dataclass(frozen=True)
class WaterfallRow:
    depth: int
    offset_seconds: float  # from the run's start
    duration_seconds: float
    name: str  # the component's name for component spans, the pipeline's for the run
    kind: str  # run | component | wait | span
    mode: str  # a component's execution mode, else ""
    status: str


@dataclass(frozen=True)
class Waterfall:
    """The slowest traced run: its spans in start order."""

    pipeline: str
    trace_id: str
    span_id: str
    duration_seconds: float
    status: str
    rows: tuple[WaterfallRow, ...]
    omitted_rows: int = 0  # spans past MAX_WATERFALL_ROWS


@dataclass(frozen=True)
class Report:
    title: str
    wall_seconds: float
    runs: int
    runs_ok: int
    runs_error: int
    runs_cancelled: int
    traced_runs: int
    throughput_runs_per_second: float | None
    pipelines: tuple[PipelineStats, ...]
    components: tuple[ComponentStats, ...]
    loop: LoopStats
    executor: ExecutorStats
    timeline: tuple[TimelinePoint, ...]
    slowest_run: Waterfall | None
    verdict: str
    notes: tuple[str, ...] = ()
    percentile_method: str = PERCENTILE_METHOD

    @property
    def empty(self) -> bool:
        """Nothing traced: no component executions and no run spans."""
        return not self.components and self.traced_runs == 0


@dataclass
class _Metrics:
    """What the report reads from the registry."""

    runs: dict[str, Counter[str]] = field(default_factory=dict)  # pipeline -> status -> count
    blocked: list[BlockedTime] = field(default_factory=list)
    lag_buckets: list[tuple[float, float]] = field(default_factory=list)
    lag_count: int = 0


def build_report(
    spans: Iterable[Any] | None,
    registry: Any = None,
    timeline: TimelineSampler | Iterable[TimelinePoint] | None = None,
    *,
    wall_seconds: float = 0.0,
    title: str = "hayscope report",
) -> Report:
    """The report of a workload: `spans` are its finished spans, `registry` the metrics registry its
    pipelines recorded into, `timeline` a `TimelineSampler` (or its points) that ran alongside, and
    `wall_seconds` the workload's wall time. Never raises: what cannot be read is left out and said.
    """
    title = text(title) or "hayscope report"
    wall = finite(wall_seconds)
    wall = wall if wall is not None and wall > 0 else 0.0
    try:
        return _build(records_of(spans), _read_metrics(registry), _timeline(timeline), wall, title)
    except Exception as error:  # a last resort: a report that says so beats a traceback after a long run
        return _failed(title, wall, f"the report could not be built: {type(error).__name__}: {error}")


def _build(
    records: list[SpanRecord],
    metrics: _Metrics,
    timeline: tuple[tuple[TimelinePoint, ...], int, float | None],
    wall: float,
    title: str,
) -> Report:
    runs = [r for r in records if r.kind == KIND_RUN]
    executions = [r for r in records if r.kind == KIND_COMPONENT]
    pipelines = _pipelines(runs, executions, metrics.runs, wall)
    run_seconds = {p.name: p.total_run_seconds for p in pipelines}
    components = _components(executions, run_seconds, metrics.blocked)
    points, samples, lag_max = timeline
    totals = {
        key: sum(getattr(p, key) for p in pipelines) for key in ("runs", "runs_ok", "runs_error", "runs_cancelled")
    }
    traced = len(runs)
    ended = totals["runs_ok"] + totals["runs_error"]
    waterfall = _slowest_waterfall(runs, records)
    notes = _notes(records, totals["runs"], traced, points, waterfall)
    return Report(
        title=title,
        wall_seconds=wall,
        traced_runs=traced,
        throughput_runs_per_second=ended / wall if wall > 0 and ended else None,
        pipelines=tuple(pipelines),
        components=tuple(components),
        loop=_loop(points, samples, lag_max, metrics),
        executor=_executor(points),
        timeline=points,
        slowest_run=waterfall,
        verdict=verdict(components, sum(b.seconds for b in metrics.blocked if b.component == GC_COMPONENT)),
        notes=notes,
        **totals,
    )


def _failed(title: str, wall: float, note: str) -> Report:
    return Report(
        title=title,
        wall_seconds=wall,
        runs=0,
        runs_ok=0,
        runs_error=0,
        runs_cancelled=0,
        traced_runs=0,
        throughput_runs_per_second=None,
        pipelines=(),
        components=(),
        loop=LoopStats(None, None, 0, None, 0, 0.0, ()),
        executor=_executor(()),
        timeline=(),
        slowest_run=None,
        verdict=NOTHING_RECORDED,
        notes=(note,),
    )


def _notes(
    records: list[SpanRecord], runs: int, traced: int, points: Sequence[TimelinePoint], waterfall: Waterfall | None
) -> tuple[str, ...]:
    notes = []
    if not records:
        notes.append("nothing recorded: no finished spans came in")
    if runs > traced > 0:
        notes.append(
            f"the spans cover {traced} of {runs} runs (the others were not sampled): latencies, components "
            "and the waterfall describe the sampled runs"
        )
    elif runs > 0 and traced == 0:
        notes.append(
            f"no run spans for the {runs} runs the metrics counted (tracing off or not sampled): only run "
            "counts, the event loop and the executor are reported"
        )
    if not points:
        notes.append("no timeline samples: loop lag and executor saturation over time are unknown")
    if waterfall is not None and waterfall.omitted_rows:
        notes.append(
            f"the slowest run's waterfall shows its first {len(waterfall.rows)} spans of "
            f"{len(waterfall.rows) + waterfall.omitted_rows}"
        )
    return tuple(notes)


def _read_metrics(registry: Any) -> _Metrics:
    """Run counts, blocked seconds and the loop-lag histogram; empty for no (or an unreadable) registry."""
    found = _Metrics()
    restrict = getattr(registry, "restricted_registry", None)
    if restrict is None:
        return found
    try:
        for metric in restrict([RUNS_TOTAL, BLOCKED_TOTAL, LAG_BUCKET, LAG_COUNT]).collect():
            for sample in metric.samples:
                value = finite(sample.value)
                if value is None:
                    continue
                labels = sample.labels
                if sample.name == RUNS_TOTAL and value > 0:
                    found.runs.setdefault(labels.get("pipeline", ""), Counter())[labels.get("status", "")] += int(value)
                elif sample.name == BLOCKED_TOTAL and value > 0:
                    found.blocked.append(BlockedTime(labels.get("pipeline", ""), labels.get("component", ""), value))
                elif sample.name == LAG_BUCKET:
                    found.lag_buckets.append((float(labels.get("le", "nan")), value))
                elif sample.name == LAG_COUNT:
                    found.lag_count = int(value)
    except Exception:  # a broken custom collector in the registry: report without the metrics
        return _Metrics()
    found.blocked.sort(key=lambda b: -b.seconds)
    return found


def _timeline(timeline: Any) -> tuple[tuple[TimelinePoint, ...], int, float | None]:
    """(points, samples taken, exact max lag or None) from a sampler or an iterable of points."""
    if timeline is None:
        return (), 0, None
    try:
        if isinstance(timeline, TimelineSampler):
            return timeline.points, timeline.samples, timeline.max_loop_lag_seconds
        points = tuple(p for p in timeline if isinstance(p, TimelinePoint) and _point_ok(p))
        return points, len(points), None
    except Exception:
        return (), 0, None


def _point_ok(point: TimelinePoint) -> bool:
    return all(
        finite(getattr(point, name)) is not None
        for name in (
            "t_seconds",
            "loop_lag_seconds",
            "runs_in_flight",
            "executor_busy",
            "executor_max",
            "executor_queue_depth",
        )
    )


def _first_seen(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _pipelines(
    runs: list[SpanRecord], executions: list[SpanRecord], counted: Mapping[str, Counter[str]], wall: float
) -> list[PipelineStats]:
    names = _first_seen([r.pipeline for r in runs] + [e.pipeline for e in executions] + sorted(counted))
    stats = []
    for name in names:
        mine = [r for r in runs if r.pipeline == name]
        durations = sorted(r.duration_seconds for r in mine)
        by_status = Counter(r.status for r in mine)
        metric_counts = counted.get(name, Counter())
        # The metrics count every run, sampled or not; spans only the sampled ones. Prefer the metrics
        # unless they know fewer runs than there are spans (another registry).
        counts = metric_counts if sum(metric_counts.values()) >= len(mine) else by_status
        ok, error, cancelled = (counts.get(status, 0) for status in STATUSES)
        total = float(sum(durations))
        stats.append(
            PipelineStats(
                name=name,
                runs=ok + error + cancelled,
                runs_ok=ok,
                runs_error=error,
                runs_cancelled=cancelled,
                traced_runs=len(mine),
                p50_seconds=percentile_of_sorted(durations, 50),
                p95_seconds=percentile_of_sorted(durations, 95),
                p99_seconds=percentile_of_sorted(durations, 99),
                max_seconds=durations[-1] if durations else None,
                mean_seconds=total / len(durations) if durations else None,
                total_run_seconds=total,
                throughput_runs_per_second=(ok + error) / wall if wall > 0 and ok + error else None,
            )
        )
    return stats


def _components(
    executions: list[SpanRecord], run_seconds: Mapping[str, float], blocked: Sequence[BlockedTime]
) -> list[ComponentStats]:
    groups: dict[tuple[str, str, str], list[SpanRecord]] = {}
    for e in executions:
        groups.setdefault((e.pipeline, e.subject, e.mode), []).append(e)
    blocked_by = Counter[tuple[str, str]]()
    for b in blocked:
        blocked_by[(b.pipeline, b.component)] += b.seconds
    component_seconds = Counter[str]()
    for (pipeline, _name, _mode), members in groups.items():
        component_seconds[pipeline] += sum(m.duration_seconds for m in members)
    stats = []
    for (pipeline, name, mode), members in groups.items():
        # Without run spans of the pipeline, its components' summed time stands in for the run time.
        whole = run_seconds.get(pipeline) or component_seconds[pipeline]
        stats.append(_component(pipeline, name, mode, members, whole, blocked_by[(pipeline, name)]))
    return stats


def _component(
    pipeline: str, name: str, mode: str, members: list[SpanRecord], whole: float, blocked_seconds: float
) -> ComponentStats:
    durations = sorted(m.duration_seconds for m in members)
    total = float(sum(durations))

    def part(key: str) -> list[float]:
        return [v for v in (m.seconds(key) for m in members) if v is not None]

    run_time, queue, schedule, held = (
        part(k) for k in (semconv.RUN_TIME, semconv.QUEUE_WAIT, semconv.SCHEDULE_WAIT, semconv.LOOP_HELD)
    )
    statuses = Counter(m.status for m in members)
    types = Counter(text(m.attributes.get(semconv.COMPONENT_TYPE)) for m in members)
    error_types = _first_seen(
        text(m.attributes.get(semconv.ERROR_TYPE)) for m in members if m.attributes.get(semconv.ERROR_TYPE)
    )
    return ComponentStats(
        pipeline=pipeline,
        name=name,
        type=types.most_common(1)[0][0],
        mode=mode,
        executions=len(members),
        errors=statuses[semconv.STATUS_ERROR],
        cancelled=statuses[semconv.STATUS_CANCELLED],
        p50_seconds=percentile_of_sorted(durations, 50),
        p95_seconds=percentile_of_sorted(durations, 95),
        p99_seconds=percentile_of_sorted(durations, 99),
        max_seconds=durations[-1],
        mean_seconds=total / len(durations),
        queue_wait_p95_seconds=percentile(queue, 95),
        loop_held_p95_seconds=percentile(held, 95),
        schedule_wait_p95_seconds=percentile(schedule, 95),
        total_seconds=total,
        run_time_total_seconds=float(sum(run_time)),
        queue_wait_total_seconds=float(sum(queue)),
        schedule_wait_total_seconds=float(sum(schedule)),
        loop_held_total_seconds=float(sum(held)),
        share_of_run_time=share(total, whole),
        queued_share=share(sum(queue), total),
        schedule_wait_share=share(sum(schedule), total),
        blocked_seconds=float(blocked_seconds),
        error_types=tuple(error_types[:5]),
        duration_sample_seconds=order_statistics(durations, MAX_DURATION_SAMPLES),
    )


def _loop(points: Sequence[TimelinePoint], samples: int, lag_max: float | None, metrics: _Metrics) -> LoopStats:
    lags = [p.loop_lag_seconds for p in points]
    if lag_max is None or not lags:
        lag_max = max(lags) if lags else None
    return LoopStats(
        lag_p99_seconds=percentile(lags, 99),
        lag_max_seconds=lag_max,
        lag_samples=samples if lags else 0,
        histogram_lag_p99_seconds=histogram_quantile(metrics.lag_buckets, 0.99),
        histogram_observations=metrics.lag_count,
        blocked_total_seconds=float(sum(b.seconds for b in metrics.blocked)),
        blocked=tuple(metrics.blocked),
    )


def _executor(points: Sequence[TimelinePoint]) -> ExecutorStats:
    if not points:
        return ExecutorStats(0, 0.0, 0.0, None, 0.0, 0.0)
    max_busy = max(p.executor_busy for p in points)
    max_workers = max(p.executor_max for p in points)
    saturated = sum(
        1 for p in points if p.executor_queue_depth > 0 or (p.executor_max > 0 and p.executor_busy >= p.executor_max)
    )
    return ExecutorStats(
        samples=len(points),
        max_busy=max_busy,
        max_workers=max_workers,
        saturation=max_busy / max_workers if max_workers > 0 else None,
        max_queue_depth=max(p.executor_queue_depth for p in points),
        saturated_share=saturated / len(points),
    )


def _slowest_waterfall(runs: list[SpanRecord], records: list[SpanRecord]) -> Waterfall | None:
    """The longest run span and every span under it, in start order (records are in start order)."""
    if not runs:
        return None
    slowest = max(runs, key=lambda r: (r.duration_seconds, -r.start_ns))
    children: dict[int, list[SpanRecord]] = {}
    for r in records:
        if r.parent_id is not None and r.trace_id == slowest.trace_id:
            children.setdefault(r.parent_id, []).append(r)
    depth = {slowest.span_id: 0}
    members = [slowest]
    frontier = [slowest]
    while frontier:  # breadth first; a malformed parent cycle cannot loop as depths are set once
        nxt = []
        for parent in frontier:
            for child in children.get(parent.span_id, []):
                if child.span_id not in depth:
                    depth[child.span_id] = depth[parent.span_id] + 1
                    members.append(child)
                    nxt.append(child)
        frontier = nxt
    members.sort(key=lambda r: (r.start_ns, depth[r.span_id]))
    rows = tuple(_row(r, depth[r.span_id], slowest.start_ns) for r in members[:MAX_WATERFALL_ROWS])
    return Waterfall(
        pipeline=slowest.pipeline,
        trace_id=format(slowest.trace_id, "032x"),
        span_id=format(slowest.span_id, "016x"),
        duration_seconds=slowest.duration_seconds,
        status=slowest.status,
        rows=rows,
        omitted_rows=max(0, len(members) - MAX_WATERFALL_ROWS),
    )


def _row(r: SpanRecord, depth: int, run_start_ns: int) -> WaterfallRow:
    return WaterfallRow(
        depth=depth,
        offset_seconds=(r.start_ns - run_start_ns) / 1e9,
        duration_seconds=r.duration_seconds,
        name=r.subject,
        kind=r.kind,
        mode=r.mode,
        status=r.status if r.kind in (KIND_RUN, KIND_COMPONENT) else "",
    )
