"""The report of where the time went, built from real telemetry of a real pipeline.

One module-wide workload runs a `TracedAsyncPipeline` with real haystack components (a BM25
retriever on the loop, a chat prompt builder offloaded to a worker thread) and small custom ones
(an async "LLM" that awaits, a sync checker that fails on some runs, a component that blocks the
loop on two runs, a thread component named `<b>bold</b>`) at a concurrency of 6, with the
`TimelineSampler` and the `LoopLagMonitor` running; the tests then hold the report to the spans and
metrics it was built from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from haystack import Document, component
from haystack.components.builders import ChatPromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.dataclasses import ChatMessage
from haystack.document_stores.in_memory import InMemoryDocumentStore
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanContext, TraceFlags
from prometheus_client import CollectorRegistry

from components import AsyncAdd, Gate, SyncAdd
from hayscope import LoopLagMonitor, semconv
from hayscope.metrics import GC_COMPONENT, NO_COMPONENT, register_metrics
from hayscope.pipeline import TracedAsyncPipeline
from hayscope.report import (
    SCHEMA_VERSION,
    ComponentStats,
    Report,
    TimelinePoint,
    TimelineSampler,
    build_report,
    render_html,
    render_text,
    report_from_json,
    report_to_json,
    verdict,
    write_html,
    write_json,
)
from hayscope.report.verdict import NOTHING_RECORDED
from hayscope.testing import TelemetryCapture

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

RUNS = 24
CONCURRENCY = 6
FAILING = {5, 17}  # runs whose question makes the checker raise
BLOCKING = {3, 15}  # runs on which the blocker holds the loop
BLOCK_SECONDS = 0.2  # past the loop monitor's default threshold of 0.1 s, even less a collection in it
BOLD = "<b>bold</b>"
MODES = {
    "retriever": semconv.MODE_ASYNC,
    "prompt_builder": semconv.MODE_THREAD,
    "llm": semconv.MODE_ASYNC,
    "checker": semconv.MODE_THREAD,
    "blocker": semconv.MODE_ASYNC,
    BOLD: semconv.MODE_THREAD,
}
PLOTS = ("plot-latency", "plot-breakdown", "plot-loop-lag", "plot-in-flight", "plot-waterfall")

DOCUMENTS = [
    "The Great Pyramid of Giza is the only one of the seven wonders still standing.",
    "The Colossus of Rhodes was a bronze statue of the sun god Helios beside the harbour.",
    "The Lighthouse of Alexandria stood on the island of Pharos and guided ships into the port.",
    "The Statue of Zeus at Olympia was made of ivory and gold by the sculptor Phidias.",
]
QUESTIONS = ["Which wonder still stands?", "What was the Colossus made of?", "Where was the lighthouse?"]
TEMPLATE = [ChatMessage.from_user("{% for d in documents %}{{ d.content }}\n{% endfor %}Question: {{ question }}")]


@component
class DraftReply:
    """Stands in for an LLM call: awaits `delay` seconds, then replies with the prompt."""

    @component.output_types(reply=str)
    def run(self, messages: list[ChatMessage], delay: float) -> dict[str, Any]:
        raise NotImplementedError("DraftReply runs async only")

    @component.output_types(reply=str)
    async def run_async(self, messages: list[ChatMessage], delay: float) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"reply": messages[-1].text or ""}


@component
class CheckReply:
    """Sync (so offloaded to a worker thread); raises when the reply asks it to."""

    @component.output_types(reply=str)
    def run(self, reply: str) -> dict[str, Any]:
        if "please fail" in reply:
            raise ValueError("the reply asked to fail")
        return {"reply": reply}


@component
class HoldLoop:
    """Async, but blocks the event loop with `time.sleep(block)` first: the mistake the report must name."""

    @component.output_types(value=int)
    def run(self, value: int, block: float) -> dict[str, Any]:
        raise NotImplementedError("HoldLoop runs async only")

    @component.output_types(value=int)
    async def run_async(self, value: int, block: float) -> dict[str, Any]:
        if block:
            time.sleep(block)
        await asyncio.sleep(0)
        return {"value": value}


def build_pipeline(capture: TelemetryCapture, name: str = "wonders") -> TracedAsyncPipeline:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=text) for text in DOCUMENTS])
    # One worker thread for the three sync components: they queue for it at this concurrency.
    pipeline = capture.pipeline(name=name, max_workers=1)
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=2))
    pipeline.add_component("prompt_builder", ChatPromptBuilder(template=TEMPLATE, required_variables="*"))
    pipeline.add_component("llm", DraftReply())
    pipeline.add_component("checker", CheckReply())
    pipeline.add_component("blocker", HoldLoop())
    pipeline.add_component(BOLD, SyncAdd())
    pipeline.connect("retriever.documents", "prompt_builder.documents")
    pipeline.connect("prompt_builder.prompt", "llm.messages")
    pipeline.connect("llm.reply", "checker.reply")
    return pipeline


def run_data(index: int) -> dict[str, Any]:
    question = QUESTIONS[index % len(QUESTIONS)] + (" please fail" if index in FAILING else "")
    return {
        "retriever": {"query": question},
        "prompt_builder": {"question": question},
        "llm": {"delay": 0.01 + 0.004 * (index % 7)},
        "blocker": {"value": index, "block": BLOCK_SECONDS if index in BLOCKING else 0.0},
        BOLD: {"value": index},
    }


async def drive(pipeline: TracedAsyncPipeline, runs: int, concurrency: int) -> list[Any]:
    """`runs` runs, `concurrency` at a time; a failed run's exception is its outcome."""
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Any:
        async with limit:
            return await pipeline.run_async(run_data(index))

    return await asyncio.gather(*(one(i) for i in range(runs)), return_exceptions=True)


@dataclass
class Recorded:
    capture: TelemetryCapture
    spans: tuple[ReadableSpan, ...]
    sampler: TimelineSampler
    wall_seconds: float
    outcomes: list[Any]
    report: Report


@pytest.fixture(scope="module")
def recorded() -> Iterator[Recorded]:
    capture = TelemetryCapture()
    pipeline = build_pipeline(capture)

    async def main() -> tuple[TimelineSampler, float, list[Any]]:
        async with LoopLagMonitor(registry=capture.registry), TimelineSampler(capture.registry, 0.02) as sampler:
            started = time.perf_counter()
            outcomes = await drive(pipeline, RUNS, CONCURRENCY)
            return sampler, time.perf_counter() - started, outcomes

    sampler, wall, outcomes = asyncio.run(main())
    spans = capture.spans()
    report = build_report(spans, capture.registry, sampler, wall_seconds=wall, title="where the time went")
    yield Recorded(capture, spans, sampler, wall, outcomes, report)
    capture.shutdown()


def nearest_rank(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1]


def seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


def component_spans(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get(semconv.COMPONENT_NAME) == name]


def run_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(semconv.PIPELINE_SPAN)]


def by_name(report: Report) -> dict[str, ComponentStats]:
    return {c.name: c for c in report.components}


# --- the model, against the spans and metrics it came from -------------------------------------------------


def test_every_component_is_there_with_its_mode_and_executions(recorded: Recorded) -> None:
    components = by_name(recorded.report)
    assert set(components) == set(MODES)
    for name, mode in MODES.items():
        assert components[name].mode == mode, name
        assert components[name].executions == len(component_spans(recorded.spans, name)), name
    assert components["retriever"].type == "InMemoryBM25Retriever"
    assert components["prompt_builder"].type == "ChatPromptBuilder"
    # the failing runs stop at the checker
    assert components["checker"].errors == len(FAILING)
    assert components["checker"].error_types == ("ValueError",)
    assert components["llm"].errors == 0


def test_percentiles_are_those_of_the_span_attributes(recorded: Recorded) -> None:
    for c in recorded.report.components:
        spans = component_spans(recorded.spans, c.name)
        durations = [seconds(s) for s in spans]
        assert (c.p50_seconds, c.p95_seconds, c.p99_seconds) == tuple(nearest_rank(durations, p) for p in (50, 95, 99))
        assert c.max_seconds == max(durations)
        assert c.total_seconds == pytest.approx(sum(durations))
        for key, value in (
            (semconv.QUEUE_WAIT, c.queue_wait_p95_seconds),
            (semconv.LOOP_HELD, c.loop_held_p95_seconds),
            (semconv.SCHEDULE_WAIT, c.schedule_wait_p95_seconds),
        ):
            parts = [s.attributes[key] for s in spans if key in (s.attributes or {})]
            assert value == (nearest_rank(parts, 95) if parts else None), (c.name, key)
    components = by_name(recorded.report)
    assert components["prompt_builder"].queue_wait_p95_seconds is not None  # thread mode measures the queue
    assert components["llm"].queue_wait_p95_seconds is None
    assert components["llm"].loop_held_p95_seconds is not None  # async mode measures the loop held
    (pipeline,) = recorded.report.pipelines
    runs = [seconds(s) for s in run_spans(recorded.spans)]
    assert (pipeline.p50_seconds, pipeline.p95_seconds, pipeline.p99_seconds, pipeline.max_seconds) == (
        nearest_rank(runs, 50),
        nearest_rank(runs, 95),
        nearest_rank(runs, 99),
        max(runs),
    )


def test_shares_of_run_time(recorded: Recorded) -> None:
    report = recorded.report
    summed_runs = sum(seconds(s) for s in run_spans(recorded.spans))
    for c in report.components:
        assert c.share_of_run_time == pytest.approx(c.total_seconds / summed_runs)
        assert c.queued_share == pytest.approx(c.queue_wait_total_seconds / c.total_seconds)
    assert by_name(report)["llm"].queued_share == 0.0
    assert report.pipelines[0].total_run_seconds == pytest.approx(summed_runs)


def test_runs_outcomes_and_throughput(recorded: Recorded) -> None:
    report = recorded.report
    failed = [o for o in recorded.outcomes if isinstance(o, BaseException)]
    assert len(failed) == len(FAILING)
    assert (report.runs, report.runs_ok, report.runs_error, report.runs_cancelled) == (
        RUNS,
        RUNS - len(FAILING),
        len(FAILING),
        0,
    )
    assert report.traced_runs == RUNS
    assert report.throughput_runs_per_second == pytest.approx(RUNS / recorded.wall_seconds)
    assert report.wall_seconds == recorded.wall_seconds
    assert not any("cover" in note for note in report.notes)


def test_blocked_seconds_come_from_the_counter(recorded: Recorded) -> None:
    report = recorded.report
    counted = recorded.capture.sample(
        "hayscope_event_loop_blocked_seconds_total", pipeline="wonders", component="blocker"
    )
    # (less what a garbage collection during a blocked step took: that is the collector's)
    assert counted is not None and counted >= len(BLOCKING) * BLOCK_SECONDS * 0.9
    assert by_name(report)["blocker"].blocked_seconds == counted
    blocked = {(b.pipeline, b.component): b.seconds for b in report.loop.blocked}
    assert blocked[("wonders", "blocker")] == counted
    assert report.loop.blocked_total_seconds >= counted
    assert by_name(report)["blocker"].loop_held_p95_seconds >= BLOCK_SECONDS  # type: ignore[operator]


def test_timeline_and_loop_lag(recorded: Recorded) -> None:
    report, sampler = recorded.report, recorded.sampler
    assert report.timeline == sampler.points and len(report.timeline) >= 2
    times = [p.t_seconds for p in report.timeline]
    assert times == sorted(times)
    assert 1 <= max(p.runs_in_flight for p in report.timeline) <= CONCURRENCY
    # The blocked steps held the loop past BLOCK_SECONDS: the sampler's heartbeat saw it.
    assert (
        report.loop.lag_max_seconds == sampler.max_loop_lag_seconds >= BLOCK_SECONDS - 0.03
    )  # less a heartbeat interval
    assert report.loop.lag_p99_seconds == nearest_rank([p.loop_lag_seconds for p in report.timeline], 99)
    assert report.loop.histogram_observations > 0 and report.loop.histogram_lag_p99_seconds is not None
    executor = report.executor
    assert executor.samples == len(report.timeline)
    assert executor.max_workers >= 1 and 0 <= executor.max_busy <= executor.max_workers
    assert executor.saturation == executor.max_busy / executor.max_workers
    assert 0.0 <= executor.saturated_share <= 1.0


def test_slowest_waterfall_is_the_longest_run_and_its_spans(recorded: Recorded) -> None:
    waterfall = recorded.report.slowest_run
    assert waterfall is not None
    runs = run_spans(recorded.spans)
    slowest = max(runs, key=seconds)
    assert waterfall.duration_seconds == seconds(slowest)
    assert waterfall.span_id == format(slowest.context.span_id, "016x")
    # every span under the slowest run, found by walking parent links
    members = {slowest.context.span_id}
    grew = True
    while grew:
        grew = False
        for s in recorded.spans:
            if s.parent is not None and s.parent.span_id in members and s.context.span_id not in members:
                members.add(s.context.span_id)
                grew = True
    assert len(waterfall.rows) == len(members)
    first, *rest = waterfall.rows
    assert (first.depth, first.offset_seconds, first.kind, first.name) == (0, 0.0, "run", "wonders")
    offsets = [r.offset_seconds for r in waterfall.rows]
    assert offsets == sorted(offsets)
    in_run = [s for s in recorded.spans if s.context.span_id in members]
    expected = sorted(
        s.attributes[semconv.COMPONENT_NAME] for s in in_run if semconv.COMPONENT_NAME in (s.attributes or {})
    )
    assert sorted(r.name for r in rest if r.kind == "component") == expected
    for row in rest:
        assert row.depth == (1 if row.kind == "component" else 2), row
        if row.kind == "component":
            assert row.mode == MODES[row.name]
        assert row.offset_seconds >= 0 and row.duration_seconds >= 0


def test_verdict_of_the_real_workload_names_the_largest_contributor(recorded: Recorded) -> None:
    top = max(recorded.report.components, key=lambda c: c.share_of_run_time)
    assert recorded.report.verdict == (
        f"{top.name}: {round(top.share_of_run_time * 100)}% of run time; blocker blocked the event loop for "
        f"{by_name(recorded.report)['blocker'].blocked_seconds:.2f} s: move the blocking call to a thread or "
        "await an async API"
    )
    assert recorded.report.verdict == verdict(recorded.report.components)


# --- the verdict's rules, one by one ----------------------------------------------------------------------


def stats(
    name: str,
    mode: str = semconv.MODE_ASYNC,
    *,
    total: float = 1.0,
    share: float = 0.1,
    queue: float = 0.0,
    schedule: float = 0.0,
    blocked: float = 0.0,
    pipeline: str = "rag",
    executions: int = 10,
) -> ComponentStats:
    return ComponentStats(
        pipeline=pipeline,
        name=name,
        type="Component",
        mode=mode,
        executions=executions,
        errors=0,
        cancelled=0,
        p50_seconds=0.1,
        p95_seconds=0.2,
        p99_seconds=0.3,
        max_seconds=0.3,
        mean_seconds=total / max(executions, 1),
        queue_wait_p95_seconds=None,
        loop_held_p95_seconds=None,
        schedule_wait_p95_seconds=None,
        total_seconds=total,
        run_time_total_seconds=total - queue - schedule,
        queue_wait_total_seconds=queue,
        schedule_wait_total_seconds=schedule,
        loop_held_total_seconds=0.0,
        share_of_run_time=share,
        queued_share=queue / total,
        schedule_wait_share=schedule / total,
        blocked_seconds=blocked,
    )


LLM = stats("llm", total=7.1, share=0.71)


def test_verdict_nothing_recorded() -> None:
    assert verdict([]) == NOTHING_RECORDED
    assert verdict([stats("idle", executions=0)]) == NOTHING_RECORDED


def test_verdict_without_a_cause_names_the_largest_share() -> None:
    components = [stats("retriever", share=0.1), LLM, stats("builder", mode=semconv.MODE_THREAD, share=0.05)]
    assert verdict(components) == "llm: 71% of run time; no waits or loop stalls stand out: speed up llm itself"


def test_verdict_queue_wait_of_a_thread_component() -> None:
    embedder = stats("text_embedder", semconv.MODE_THREAD, total=2.0, share=0.2, queue=0.76)
    assert verdict([LLM, embedder]) == (
        "llm: 71% of run time; text_embedder waited 38% of its time for a worker thread: "
        "raise max_workers or give it its own executor"
    )
    # at the limit (20%) it is not named; nor an async component's queue, which it does not have
    assert "worker thread" not in verdict([LLM, stats("e", semconv.MODE_THREAD, total=2.0, queue=0.4)])
    assert "worker thread" not in verdict([LLM, stats("e", semconv.MODE_ASYNC, total=2.0, queue=0.8)])


def test_verdict_blocked_event_loop() -> None:
    blocker = stats("parser", blocked=0.3)
    assert verdict([LLM, blocker]) == (
        "llm: 71% of run time; parser blocked the event loop for 0.30 s: "
        "move the blocking call to a thread or await an async API"
    )
    assert "blocked" not in verdict([LLM, stats("parser", blocked=0.04)])


def test_verdict_garbage_collection_that_blocked_the_loop() -> None:
    assert verdict([LLM], gc_blocked_seconds=0.45) == (
        "llm: 71% of run time; garbage collection stopped the event loop for 0.45 s: call gc.freeze() "
        "once startup is done (models loaded, pipelines built), so that full collections skip all it made"
    )
    assert "garbage" not in verdict([LLM], gc_blocked_seconds=0.04)
    # the collector and the components compete as blockers, by seconds
    assert "parser blocked" in verdict([LLM, stats("parser", blocked=0.6)], gc_blocked_seconds=0.45)
    assert "garbage collection" in verdict([LLM, stats("parser", blocked=0.3)], gc_blocked_seconds=0.45)


def test_verdict_schedule_wait() -> None:
    ranker = stats("ranker", total=2.0, schedule=0.9)
    assert verdict([LLM, ranker]) == (
        "llm: 71% of run time; ranker waited 45% of its time to start: raise concurrency_limit, or check the event loop lag"
    )
    assert "concurrency" not in verdict([LLM, stats("ranker", total=2.0, schedule=0.4)])


def test_verdict_puts_a_blocked_loop_first_then_the_costliest_wait() -> None:
    embedder = stats("embedder", semconv.MODE_THREAD, total=2.0, queue=0.76)
    ranker = stats("ranker", total=2.0, schedule=0.5)
    assert "embedder waited 38%" in verdict([LLM, embedder, ranker])
    assert "ranker waited 60%" in verdict([LLM, embedder, stats("ranker", total=2.0, schedule=1.2)])
    # a block inflates everyone's schedule wait, so it comes first whatever the waits add up to
    blockers = [stats("parser", blocked=0.3), stats("loader", blocked=0.6)]
    assert "loader blocked the event loop for 0.60 s" in verdict([LLM, embedder, ranker, *blockers])
    # the largest contributor can be its own cause
    assert verdict([stats("llm", total=9.0, share=0.9, schedule=3.0)]) == (
        "llm: 90% of run time; llm waited 33% of its time to start: raise concurrency_limit, or check the event loop lag"
    )


def test_verdict_ignores_share_causes_that_cost_next_to_nothing() -> None:
    # half of a tiny component's time is queueing, but that is 0.1% of all component time
    tiny = stats("tiny", semconv.MODE_THREAD, total=0.02, queue=0.01)
    assert "tiny" not in verdict([LLM, stats("other", total=10.0), tiny])


def test_verdict_labels_components_with_their_pipeline_when_there_are_several() -> None:
    components = [stats("llm", total=7.0, share=0.7, pipeline="chat"), stats("llm", share=0.2, pipeline="index")]
    assert verdict(components).startswith("chat/llm: 70% of run time; ")


# --- renderers --------------------------------------------------------------------------------------------


def test_json_round_trip_equals_the_model(recorded: Recorded, tmp_path: Path) -> None:
    data = report_to_json(recorded.report)
    assert data["schema_version"] == SCHEMA_VERSION
    assert report_from_json(json.loads(json.dumps(data, allow_nan=False))) == recorded.report
    path = tmp_path / "report.json"
    write_json(recorded.report, path)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written == data
    assert report_from_json(written) == recorded.report
    component = next(c for c in written["components"] if c["name"] == "llm")
    assert component["p95_seconds"] == by_name(recorded.report)["llm"].p95_seconds
    assert written["slowest_run"]["rows"][0]["kind"] == "run"
    with pytest.raises(ValueError, match="schema_version"):
        report_from_json({"schema_version": 999})


def test_text_has_a_row_per_component_and_the_verdict(recorded: Recorded) -> None:
    text = render_text(recorded.report)
    lines = text.splitlines()
    for c in recorded.report.components:
        row = next(line for line in lines if line.startswith(c.name + " "))
        assert f" {c.mode} " in row and f" {c.executions} " in row, row
    assert f"verdict: {recorded.report.verdict}" in " ".join(text.split())  # folded at the width
    assert all(len(line) <= 100 for line in lines if not line.startswith(tuple(MODES)) and "component" not in line)
    assert "slowest run: wonders" in text
    waterfall = recorded.report.slowest_run
    assert waterfall is not None
    # One bar per row: solid for spans, light for waits (a loaded machine may or may not produce waits).
    assert sum("|" in line and ("█" in line or "░" in line) for line in lines) == len(waterfall.rows)
    assert "blocker" in next(line for line in lines if line.strip().startswith("blocked"))
    assert all(len(line) <= 100 for line in lines if "|" in line)  # the waterfall fits the width


def test_html_escapes_names_and_carries_the_json(recorded: Recorded) -> None:
    page = render_html(recorded.report)
    assert "<b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    start = page.index('<script type="application/json" id="report-data">') + len(
        '<script type="application/json" id="report-data">'
    )
    data = json.loads(page[start : page.index("</script>", start)])
    assert data == report_to_json(recorded.report)
    assert "<script src" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "url(" not in page


# --- odd input --------------------------------------------------------------------------------------------


def test_nothing_recorded_is_a_report_not_an_error(tmp_path: Path) -> None:
    report = build_report([], CollectorRegistry(), None, wall_seconds=0.0, title="empty")
    assert report.empty and report.verdict == NOTHING_RECORDED
    assert report.slowest_run is None and report.components == () and report.pipelines == ()
    assert any(note.startswith("nothing recorded") for note in report.notes)
    text = render_text(report)
    assert "nothing recorded" in text
    assert report_from_json(report_to_json(report)) == report
    write_html(report, tmp_path / "empty.html")
    assert "no component executions recorded" in (tmp_path / "empty.html").read_text(encoding="utf-8")


def _span(
    name: str, span_id: int, parent: int | None, start: int, end: int | None, attributes: dict[str, Any]
) -> ReadableSpan:
    def context(sid: int) -> SpanContext:
        return SpanContext(trace_id=7, span_id=sid, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    return ReadableSpan(
        name=name,
        context=context(span_id),
        parent=context(parent) if parent is not None else None,
        attributes=attributes,
        start_time=start,
        end_time=end,
    )


def test_odd_spans_timelines_and_registries_do_not_raise(tmp_path: Path) -> None:
    run = {semconv.PIPELINE_NAME: "odd", semconv.STATUS: 42}
    spans: list[Any] = [
        _span(f"{semconv.PIPELINE_SPAN} odd", 1, None, 1_000, 5_000_000, run),
        _span(
            f"{semconv.COMPONENT_SPAN} <x>",
            2,
            1,
            2_000,
            4_000_000,
            {
                semconv.COMPONENT_NAME: "<x>",
                semconv.PIPELINE_NAME: "odd",
                semconv.RUN_TIME: "abc",
                semconv.QUEUE_WAIT: -1.0,
                semconv.SCHEDULE_WAIT: float("nan"),
            },
        ),
        _span(f"{semconv.COMPONENT_SPAN} open", 3, 1, 2_000, None, {semconv.COMPONENT_NAME: "open"}),  # not ended
        _span("something else", 4, 2, 3_000, 2_000, {}),  # ends before it starts
        _span("an orphan", 5, 99, 3_000, 9_000, {}),
        object(),
        None,
        42,
    ]
    timeline: list[Any] = [TimelinePoint(0.1, 0.002, 1, 0, 4, 0), TimelinePoint(0.2, float("nan"), 1, 0, 4, 0), "junk"]
    report = build_report(spans, object(), timeline, wall_seconds=float("nan"), title=None)  # type: ignore[arg-type]
    assert report.title == "hayscope report" and report.wall_seconds == 0.0
    assert [c.name for c in report.components] == ["<x>"]
    x = report.components[0]
    assert x.mode == "" and x.run_time_total_seconds == 0.0 and x.queue_wait_p95_seconds is None
    assert report.pipelines[0].name == "odd" and report.traced_runs == 1
    assert report.slowest_run is not None and [r.name for r in report.slowest_run.rows] == ["odd", "<x>"]
    assert len(report.timeline) == 1
    render_text(report)
    json.dumps(report_to_json(report), allow_nan=False)
    assert "&lt;x&gt;" in render_html(report)

    def broken() -> Iterator[Any]:
        yield spans[0]
        raise RuntimeError("the exporter went away")

    assert build_report(broken(), None, None).traced_runs == 1


def test_spans_whose_attributes_a_sampler_dropped_are_placed_by_their_names() -> None:
    spans = [
        _span(f"{semconv.PIPELINE_SPAN} rag", 1, None, 0, 10_000_000, {}),
        _span(f"{semconv.COMPONENT_SPAN} llm", 2, 1, 1_000_000, 9_000_000, {}),
        _span(semconv.PIPELINE_SPAN, 3, None, 0, 1_000, {}),  # haystack's own span: not a hayscope run
    ]
    report = build_report(spans, None, None, wall_seconds=1.0)
    assert [(p.name, p.traced_runs) for p in report.pipelines] == [("rag", 1)]
    (llm,) = report.components
    assert (llm.pipeline, llm.name, llm.executions, llm.share_of_run_time) == ("rag", "llm", 1, 0.8)


def test_timeline_sampler_keeps_memory_bounded_and_spikes() -> None:
    sampler = TimelineSampler(CollectorRegistry(), 0.1, max_points=4)
    for i in range(10):
        lag = 0.5 if i == 6 else 0.001
        sampler.record(i * 0.1, lag, {"haystack_pipeline_runs_in_flight": float(i)})
    sampler.stop()
    points = sampler.points
    assert 2 <= len(points) <= 4 and sampler.samples == 10
    assert max(p.loop_lag_seconds for p in points) == 0.5 == sampler.max_loop_lag_seconds
    assert max(p.runs_in_flight for p in points) == 9.0
    assert [p.t_seconds for p in points] == sorted(p.t_seconds for p in points) and points[0].t_seconds == 0.0
    with pytest.raises(ValueError, match="interval"):
        TimelineSampler(CollectorRegistry(), 0)


# --- several pipelines, sampling, cancellation -------------------------------------------------------------


def test_several_pipelines_are_reported_apart(capture: TelemetryCapture) -> None:
    alpha, beta = capture.pipeline(name="alpha"), capture.pipeline(name="beta")
    alpha.add_component("add", AsyncAdd(delay=0.005))
    beta.add_component("add", SyncAdd())

    async def main() -> None:
        await asyncio.gather(*(p.run_async({"add": {"value": 1}}) for p in (alpha, beta, alpha)))

    asyncio.run(main())
    report = build_report(capture.spans(), capture.registry, None, wall_seconds=1.0)
    assert {p.name: (p.runs, p.traced_runs) for p in report.pipelines} == {"alpha": (2, 2), "beta": (1, 1)}
    assert {(c.pipeline, c.name, c.mode, c.executions) for c in report.components} == {
        ("alpha", "add", semconv.MODE_ASYNC, 2),
        ("beta", "add", semconv.MODE_THREAD, 1),
    }
    text = render_text(report)
    assert "alpha/add" in text and "beta/add" in text
    assert report.verdict.split(":")[0] in ("alpha/add", "beta/add")


def test_the_verdict_names_garbage_collection_counted_under_gc(capture: TelemetryCapture) -> None:
    pipeline = capture.pipeline(name="rag")
    pipeline.add_component("add", AsyncAdd())
    asyncio.run(pipeline.run_async({"add": {"value": 1}}))
    # what the loop monitor counts for two full collections that stopped the loop during runs
    blocked = register_metrics(capture.registry).event_loop_blocked
    blocked.labels("rag", GC_COMPONENT).inc(0.25)
    blocked.labels(NO_COMPONENT, GC_COMPONENT).inc(0.15)

    report = build_report(capture.spans(), capture.registry, None, wall_seconds=1.0)

    assert report.verdict.endswith(
        "garbage collection stopped the event loop for 0.40 s: call gc.freeze() once startup is done "
        "(models loaded, pipelines built), so that full collections skip all it made"
    )


class EveryOtherRun(Sampler):
    """Samples the first, third, ... root span: half of the runs are traced."""

    def __init__(self) -> None:
        self.roots = 0

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, **more: Any
    ) -> SamplingResult:
        self.roots += 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.roots % 2 else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "EveryOtherRun"


def test_unsampled_runs_are_counted_and_the_report_says_what_it_covers() -> None:
    capture = TelemetryCapture(sampler=ParentBased(root=EveryOtherRun()))
    pipeline = capture.pipeline(name="sampled")
    pipeline.add_component("add", AsyncAdd())

    async def main() -> None:
        for value in range(6):
            await pipeline.run_async({"add": {"value": value}})

    asyncio.run(main())
    report = build_report(capture.spans(), capture.registry, None, wall_seconds=1.0)
    capture.shutdown()
    assert (report.runs, report.traced_runs) == (6, 3)
    assert by_name(report)["add"].executions == 3
    assert any("cover 3 of 6 runs" in note for note in report.notes)
    assert report.throughput_runs_per_second == 6.0


def test_a_cancelled_run_is_counted_as_cancelled(capture: TelemetryCapture) -> None:
    gate = Gate()
    pipeline = capture.pipeline(name="gated")
    pipeline.add_component("gate", gate)

    async def main() -> None:
        held = asyncio.create_task(pipeline.run_async({"gate": {"value": 1}}))
        await gate.entered.wait()
        held.cancel()
        await asyncio.wait({held})
        gate.release.set()
        await pipeline.run_async({"gate": {"value": 2}})

    asyncio.run(main())
    report = build_report(capture.spans(), capture.registry, None, wall_seconds=1.0)
    assert (report.runs, report.runs_ok, report.runs_cancelled) == (2, 1, 1)
    assert by_name(report)["gate"].cancelled == 1
    assert report.throughput_runs_per_second == 1.0


def test_report_is_frozen(recorded: Recorded) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        recorded.report.verdict = "changed"  # type: ignore[misc]


# --- the HTML report, as a person sees it in a browser -----------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make system-deps)")
def test_html_report_in_headless_chromium(recorded: Recorded, tmp_path: Path) -> None:
    from PIL import Image
    from playwright.sync_api import Route, sync_playwright

    report = recorded.report
    path = tmp_path / "report.html"
    write_html(report, path)
    empty_path = tmp_path / "empty.html"
    write_html(build_report([], None, None, title="empty"), empty_path)
    errors: list[str] = []
    left_the_page: list[str] = []

    def only_files(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            left_the_page.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("**/*", only_files)
            page.goto(path.as_uri())

            assert page.title() == report.title
            verdict_box = page.locator("#verdict")
            assert verdict_box.is_visible() and verdict_box.inner_text() == report.verdict

            for plot_id in PLOTS:
                svg = page.locator(f"svg#{plot_id}")
                svg.scroll_into_view_if_needed()
                assert svg.is_visible(), plot_id
                box = svg.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100, plot_id
                assert svg.get_attribute("role") == "img"
                title = svg.locator("text.plot-title")
                assert title.is_visible(), plot_id
                accessible_name = page.locator(f"#{plot_id}-title").text_content()
                assert accessible_name and title.text_content() == accessible_name
                labels = svg.locator("text.axis-label")
                assert labels.count() >= 2, plot_id  # x and y
                for i in range(labels.count()):
                    label = labels.nth(i)
                    label_box = label.bounding_box()
                    assert label.is_visible() and label_box is not None and label_box["width"] > 0, plot_id
                    assert label.text_content(), plot_id
            assert (
                page.locator("svg#plot-latency text.axis-label")
                .first.text_content()
                .startswith("execution duration (ms")
            )
            for plot_id in ("plot-latency", "plot-breakdown", "plot-in-flight", "plot-waterfall"):
                assert page.locator(f"svg#{plot_id} .legend text").first.is_visible(), plot_id
            for name in ("llm", "blocker"):
                assert page.locator("svg#plot-latency text.category", has_text=name).first.is_visible()

            # the whole component table fits: no column hides behind a scroll bar
            wrap = page.locator(".table-wrap", has=page.locator("#component-table"))
            assert wrap.evaluate("element => element.scrollWidth <= element.clientWidth")
            rows = page.locator("#component-table tbody tr")
            assert rows.count() == len(report.components)
            for i, c in enumerate(report.components):
                row = rows.nth(i)
                row.scroll_into_view_if_needed()
                assert row.is_visible()
                cells = row.locator("td")
                assert cells.nth(0).inner_text() == c.name and cells.nth(2).inner_text() == c.mode
            bold = page.locator("#component-table td", has_text=BOLD)
            assert bold.is_visible() and bold.inner_text() == BOLD  # shown literally, not as markup
            assert page.locator("main b").count() == 0

            assert json.loads(page.locator("#report-data").text_content() or "") == report_to_json(report)
            png = page.screenshot(full_page=True)
            colours = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 24)
            assert colours is not None and len(colours) > 100, "the page looks blank"

            page.goto(empty_path.as_uri())
            assert page.locator("#verdict").inner_text() == NOTHING_RECORDED
            for plot_id in PLOTS:
                assert page.locator(f"svg#{plot_id} text.plot-title").is_visible(), plot_id
        finally:
            browser.close()
    assert errors == []
    assert left_the_page == []
