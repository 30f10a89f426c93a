"""SpanStarter: the spans it builds are the spans the SDK's tracer would make."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator, Sequence
from types import FunctionType, ModuleType
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Status, StatusCode, TraceState

from hayscope import spans as hayscope_spans
from hayscope.spans import SpanStarter, set_trusted_attributes

OWN = {"haystack.component.name": "retriever", "haystack.component.type": "Retriever", "hayscope.n": 3}


class Recorder(SpanProcessor):
    """What a span processor is shown: (event, span, parent context)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, Any]] = []

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        self.seen.append(("start", span, parent_context))

    def on_end(self, span: ReadableSpan) -> None:
        self.seen.append(("end", span, None))


def provider(sampler: Sampler = ALWAYS_ON, limits: SpanLimits | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler, span_limits=limits)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


@pytest.fixture
def sdk() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    tracer_provider, exporter = provider()
    yield tracer_provider.get_tracer("tests"), exporter
    tracer_provider.shutdown()


def exercise(span: trace.Span) -> None:
    """What hayscope and user code do to a component span, in that order."""
    span.set_attribute("user.list", [1, 2])  # cleaned: stored as a tuple
    span.add_event("something", {"n": 1}, timestamp=5)
    set_trusted_attributes(span, {"hayscope.run_time_seconds": 0.25, "hayscope.status": "ok"})
    span.set_status(Status(StatusCode.ERROR, "boom"))
    span.end(end_time=10_000)


def comparable(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "trace_id": span.context.trace_id,
        "flags": span.context.trace_flags,
        "trace_state": span.context.trace_state,
        "parent": span.parent,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "dropped_events": span.dropped_events,
        "dropped_links": span.dropped_links,
        "events": [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "start_time": span.start_time,
        "end_time": span.end_time,
        "resource": span.resource,
        "scope": span.instrumentation_scope,
    }


def started_both_ways(tracer: trace.Tracer, name: str = "haystack.component.run retriever") -> tuple[Any, Any]:
    parent = tracer.start_span("parent")
    context = trace.set_span_in_context(parent)
    ours = SpanStarter(tracer).start(name, context, parent.get_span_context(), OWN, start_time=1_000)
    theirs = tracer.start_span(name, context, attributes=OWN, start_time=1_000)
    return ours, theirs


def test_a_built_span_is_exported_exactly_as_the_sdk_would_export_it(sdk: tuple[trace.Tracer, Any]) -> None:
    tracer, exporter = sdk
    assert SpanStarter(tracer).fits
    ours, theirs = started_both_ways(tracer)
    assert type(ours) is type(theirs)
    assert ours.get_span_context().span_id != theirs.get_span_context().span_id
    exercise(ours)
    exercise(theirs)
    exported = {span.context.span_id: span for span in exporter.get_finished_spans()}
    ours_out = comparable(exported[ours.get_span_context().span_id])
    theirs_out = comparable(exported[theirs.get_span_context().span_id])
    assert ours_out == theirs_out
    assert ours_out["attributes"] == {**OWN, "user.list": (1, 2), "hayscope.run_time_seconds": 0.25, "hayscope.status": "ok"}


def test_span_processors_see_start_with_the_parent_context_and_end() -> None:
    tracer_provider = TracerProvider()
    recorder = Recorder()
    tracer_provider.add_span_processor(recorder)
    tracer = tracer_provider.get_tracer("tests")
    parent = tracer.start_span("parent")
    context = trace.set_span_in_context(parent)
    span = SpanStarter(tracer).start("child", context, parent.get_span_context(), OWN)
    assert recorder.seen[-1] == ("start", span, context)
    assert span.is_recording() and span.start_time is not None
    span.end()
    event, ended, _ = recorder.seen[-1]
    assert event == "end" and ended.context == span.get_span_context() and ended.end_time is not None


class Deciding(Sampler):
    """A sampler that adds an attribute and a trace state, with a fixed decision."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, links: Sequence[Any] | None = None, trace_state: Any = None
    ) -> SamplingResult:
        self.asked.append((name, dict(attributes or {})))
        return SamplingResult(self.decision, {"sampler.says": "yes"}, TraceState([("k", "v")]))

    def get_description(self) -> str:
        return "Deciding"


@pytest.mark.parametrize("decision", [Decision.RECORD_AND_SAMPLE, Decision.RECORD_ONLY, Decision.DROP])
def test_the_tracers_sampler_decides_with_the_spans_name_and_attributes(decision: Decision) -> None:
    sampler = Deciding(decision)
    tracer_provider, exporter = provider(sampler)
    tracer = tracer_provider.get_tracer("tests")
    ours, theirs = started_both_ways(tracer)
    assert sampler.asked[-2:] == [("haystack.component.run retriever", OWN)] * 2
    assert type(ours) is type(theirs)
    assert ours.is_recording() == theirs.is_recording() == decision.is_recording()
    assert ours.get_span_context().trace_flags == theirs.get_span_context().trace_flags
    assert ours.get_span_context().trace_state == theirs.get_span_context().trace_state == TraceState([("k", "v")])
    exercise(ours)
    exercise(theirs)
    finished = exporter.get_finished_spans()
    names = [span.name for span in finished]
    # SimpleSpanProcessor exports sampled spans only
    assert names.count("haystack.component.run retriever") == (2 if decision.is_sampled() else 0)
    if decision.is_sampled():
        first, second = (comparable(span) for span in finished if span.name != "parent")
        # the SDK starts a span with the attributes its sampler returns
        assert first == second and first["attributes"]["sampler.says"] == "yes"
        assert "haystack.component.name" not in first["attributes"]


def test_an_unsampled_parent_gives_a_non_recording_child_in_its_trace() -> None:
    tracer_provider, _exporter = provider(ParentBased(ALWAYS_OFF))
    tracer = tracer_provider.get_tracer("tests")
    ours, theirs = started_both_ways(tracer)
    assert not ours.is_recording() and isinstance(ours, trace.NonRecordingSpan)
    assert ours.get_span_context().trace_id == theirs.get_span_context().trace_id
    assert ours.get_span_context().trace_flags == theirs.get_span_context().trace_flags


def test_the_attribute_count_limit_holds_for_what_users_add() -> None:
    tracer_provider, exporter = provider(limits=SpanLimits(max_span_attributes=64))
    tracer = tracer_provider.get_tracer("tests")
    ours, theirs = started_both_ways(tracer)
    for span in (ours, theirs):
        span.set_attributes({f"user.{i}": i for i in range(70)})
        set_trusted_attributes(span, {"hayscope.status": "ok"})
        span.end(end_time=10_000)
    first, second = (comparable(span) for span in exporter.get_finished_spans() if span.name != "parent")
    assert first == second
    assert len(first["attributes"]) == 64 and first["dropped_attributes"] == 10
    assert first["attributes"]["hayscope.status"] == "ok"


def test_events_and_links_are_kept_and_bounded_as_the_sdk_keeps_them() -> None:
    tracer_provider, exporter = provider(limits=SpanLimits(max_events=2, max_links=1))
    tracer = tracer_provider.get_tracer("tests")
    ours, theirs = started_both_ways(tracer)
    linked = tracer.start_span("linked").get_span_context()
    for span in (ours, theirs):
        assert list(span.events) == [] and len(span._links) == 0  # type: ignore[attr-defined]
        for n in range(3):
            span.add_event(f"event {n}", {"n": n}, timestamp=n)
        span.add_link(linked, {"why": "first"})
        span.add_link(linked, {"why": "second"})
        span.end(end_time=10_000)
    first, second = (comparable(span) for span in exporter.get_finished_spans() if span.name != "parent")
    assert first == second
    assert [name for name, _attributes, _at in first["events"]] == ["event 1", "event 2"]
    assert (first["dropped_events"], first["dropped_links"], first["links"]) == (1, 1, [(linked, {"why": "second"})])


def _tracked_objects_of(span: ReadableSpan) -> dict[int, Any]:
    """The objects the cyclic GC tracks that `span` holds, directly or not (not into types and code)."""
    seen: dict[int, Any] = {}
    todo: list[Any] = [span]
    while todo:
        held = todo.pop()
        if id(held) in seen or not gc.is_tracked(held) or isinstance(held, (type, ModuleType, FunctionType)):
            continue
        seen[id(held)] = held
        todo.extend(gc.get_referents(held))
    return seen


def test_an_exported_span_holds_few_objects_for_the_cyclic_gc_to_scan(sdk: tuple[trace.Tracer, Any]) -> None:
    # A span waits in a batch processor's queue until it is exported: every object the collector
    # tracks in it is scanned and promoted meanwhile. Shared ones (resource, scope) do not count.
    tracer, exporter = sdk
    parent = tracer.start_span("parent")
    context = trace.set_span_in_context(parent)
    starter = SpanStarter(tracer)
    for make in (
        lambda: starter.start("ours", context, parent.get_span_context(), OWN),
        lambda: tracer.start_span("theirs", context, attributes=OWN),
    ):
        for _ in range(2):
            span = make()
            set_trusted_attributes(span, {"hayscope.status": "ok"})
            span.end()
    ours, ours_too, theirs, theirs_too = (_tracked_objects_of(span) for span in exporter.get_finished_spans())
    own = {
        "ours": sorted(type(held).__name__ for key, held in ours.items() if key not in ours_too),
        "theirs": sorted(type(held).__name__ for key, held in theirs.items() if key not in theirs_too),
    }
    assert own["ours"] == [
        "ReadableSpan", "SpanContext", "_LazyBoundedList", "_LazyBoundedList", "_TrustedAttributes", "lock"
    ]
    assert len(own["theirs"]) == 11, own


def test_a_log_handler_may_set_attributes_while_the_sdk_warns_about_another_span(sdk: tuple[trace.Tracer, Any]) -> None:
    # The SDK logs "Attributes dict is full" while holding the attribute map's lock: a handler that
    # sets an attribute on another span must find that span's lock free.
    tracer, _exporter = sdk
    parent = tracer.start_span("parent")
    context = trace.set_span_in_context(parent)
    starter = SpanStarter(tracer)
    other = starter.start("other", context, parent.get_span_context(), OWN)
    full = starter.start("full", context, parent.get_span_context(), OWN)
    full._attributes.maxlen = len(OWN)  # type: ignore[attr-defined]  # full from the start

    class SetsAnAttribute(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            other.set_attribute("hayscope.test.warnings", 1)

    handler = SetsAnAttribute()
    sdk_logger = logging.getLogger("opentelemetry.attributes")
    sdk_logger.addHandler(handler)
    try:
        setter = threading.Thread(target=full.set_attribute, args=("user.key", 1), daemon=True)
        setter.start()
        setter.join(timeout=10)
    finally:
        sdk_logger.removeHandler(handler)
    assert not setter.is_alive(), "set_attribute deadlocked"
    assert other.attributes["hayscope.test.warnings"] == 1  # type: ignore[attr-defined]
    assert full.attributes["user.key"] == 1  # type: ignore[attr-defined]


def test_attributes_set_after_the_end_are_refused_as_the_sdk_refuses_them(sdk: tuple[trace.Tracer, Any]) -> None:
    tracer, exporter = sdk
    ours, _theirs = started_both_ways(tracer)
    ours.end()
    set_trusted_attributes(ours, {"late": 1})
    assert "late" not in exporter.get_finished_spans()[-1].attributes


@pytest.mark.parametrize(
    "tracer",
    [
        trace.NoOpTracer(),
        trace.ProxyTracer("tests"),
        TracerProvider(span_limits=SpanLimits(max_span_attribute_length=8)).get_tracer("tests"),
        TracerProvider(span_limits=SpanLimits(max_span_attributes=10)).get_tracer("tests"),
    ],
    ids=["no-op", "proxy", "value-length-limit", "few-attributes"],
)
def test_other_tracers_and_cutting_limits_start_spans_the_usual_way(tracer: trace.Tracer) -> None:
    starter = SpanStarter(tracer)
    assert not starter.fits
    parent = trace.NonRecordingSpan(
        trace.SpanContext(1, 2, False, trace.TraceFlags(trace.TraceFlags.SAMPLED))
    )
    context = trace.set_span_in_context(parent)
    span = starter.start("x", context, parent.get_span_context(), {"long": "abcdefghijkl"})
    if isinstance(tracer, sdk_trace.Tracer):
        usual = tracer.start_span("x", context, attributes={"long": "abcdefghijkl"})
        assert dict(span.attributes) == dict(usual.attributes)  # cut to 8 characters where the limit says so
    else:
        assert not span.is_recording()


def test_an_sdk_whose_spans_have_other_fields_gets_its_own_start_span(monkeypatch: pytest.MonkeyPatch) -> None:
    constructor = sdk_trace._Span.__init__

    def with_a_new_field(self: Any, *args: Any, **kwargs: Any) -> None:
        constructor(self, *args, **kwargs)
        self._something_new = None

    monkeypatch.setattr(sdk_trace._Span, "__init__", with_a_new_field)
    tracer_provider, exporter = provider()
    tracer = tracer_provider.get_tracer("tests")
    starter = SpanStarter(tracer)
    assert not starter.fits
    parent = tracer.start_span("parent")
    span = starter.start("child", trace.set_span_in_context(parent), parent.get_span_context(), OWN)
    assert span._something_new is None  # made by the SDK's constructor
    span.end()
    assert exporter.get_finished_spans()[-1].parent == parent.get_span_context()


def test_a_missing_parent_is_looked_up_in_the_context(sdk: tuple[trace.Tracer, Any]) -> None:
    tracer, _exporter = sdk
    parent = tracer.start_span("parent")
    span = SpanStarter(tracer).start("child", trace.set_span_in_context(parent), None, OWN)
    assert span.parent == parent.get_span_context()
    assert span.get_span_context().trace_id == parent.get_span_context().trace_id
    assert hayscope_spans._PER_SPAN <= set(vars(span))


@pytest.mark.parametrize("sampler", [ALWAYS_ON, ParentBased(TraceIdRatioBased(0.0))], ids=["always-on", "ratio-0"])
def test_a_root_span_is_what_the_sdk_makes_with_values_cleaned_as_it_cleans_them(sampler: Sampler) -> None:
    tracer_provider, exporter = provider(sampler)
    tracer = tracer_provider.get_tracer("tests")
    attributes = {**OWN, "user.list": [1, 2]}  # not a plain value: cleaned (stored as a tuple)
    context = otel_context.Context()
    ours = SpanStarter(tracer).start("haystack.pipeline.run p", context, None, attributes, start_time=1)
    theirs = tracer.start_span("haystack.pipeline.run p", context, attributes=attributes, start_time=1)
    assert type(ours) is type(theirs)
    assert ours.get_span_context().trace_flags == theirs.get_span_context().trace_flags
    assert ours.get_span_context().trace_id != theirs.get_span_context().trace_id
    for span in (ours, theirs):
        span.end(end_time=2)
    roots = [comparable(span) for span in exporter.get_finished_spans()]
    if sampler is ALWAYS_ON:
        first, second = roots
        first.pop("trace_id"), second.pop("trace_id")
        assert first == second
        assert first["parent"] is None and first["attributes"]["user.list"] == (1, 2)
    else:
        assert roots == [] and not ours.is_recording()


@pytest.mark.parametrize(
    "sampler",
    [
        ParentBased(ALWAYS_ON),
        ALWAYS_ON,
        ParentBasedTraceIdRatio(1.0),
        ParentBased(ALWAYS_ON, local_parent_sampled=Deciding(Decision.RECORD_ONLY)),
    ],
    ids=["parent-based", "always-on", "parent-based-ratio", "own-local-parent-sampler"],
)
def test_children_of_a_sampled_span_carry_its_trace_state_and_the_samplers_decision(sampler: Sampler) -> None:
    tracer_provider, exporter = provider(sampler)
    tracer = tracer_provider.get_tracer("tests")
    remote = trace.SpanContext(7, 8, True, trace.TraceFlags(trace.TraceFlags.SAMPLED), TraceState([("vendor", "1")]))
    parent = tracer.start_span("parent", trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    context = trace.set_span_in_context(parent)
    ours = SpanStarter(tracer).start("child", context, parent.get_span_context(), OWN, start_time=1)
    theirs = tracer.start_span("child", context, attributes=OWN, start_time=1)
    assert ours.get_span_context().trace_state == theirs.get_span_context().trace_state
    assert ours.get_span_context().trace_flags == theirs.get_span_context().trace_flags
    assert ours.is_recording() == theirs.is_recording()
    for span in (ours, theirs):
        span.end(end_time=2)
    children = [comparable(span) for span in exporter.get_finished_spans() if span.name == "child"]
    assert len(children) in (0, 2) and (not children or children[0] == children[1])


def test_attributes_said_not_plain_are_cleaned_as_the_sdk_cleans_them(sdk: tuple[trace.Tracer, Any]) -> None:
    tracer, exporter = sdk
    attributes = {**OWN, "user.list": [1, 2]}
    span = SpanStarter(tracer).start("x", otel_context.Context(), None, attributes, plain=False)
    span.end()
    assert exporter.get_finished_spans()[-1].attributes["user.list"] == (1, 2)
    assert hayscope_spans.plain_values(OWN) and not hayscope_spans.plain_values(attributes)


@pytest.mark.parametrize(
    "span_context",
    [
        trace.SpanContext(0xABC, 0xDEF, True, trace.TraceFlags(trace.TraceFlags.SAMPLED), TraceState([("v", "1")])),
        trace.SpanContext(1, 2, False, trace.TraceFlags(trace.TraceFlags.DEFAULT)),
        trace.INVALID_SPAN_CONTEXT,
    ],
    ids=["remote-sampled-with-state", "local-unsampled", "invalid"],
)
def test_span_context_fields_are_its_properties(span_context: trace.SpanContext) -> None:
    by_property = hayscope_spans._span_context_fields_by_property(span_context)
    assert hayscope_spans.span_context_fields(span_context) == by_property
    assert by_property[5] == span_context.is_valid
