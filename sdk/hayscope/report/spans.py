"""Finished spans as plain records the report can trust: ids, times, kind, subject and attributes.

Whatever comes in (spans of other instrumentations, spans without an end, odd attribute values) is
either turned into a `SpanRecord` or skipped; nothing here raises on a span.

hayscope names its spans "haystack.pipeline.run <pipeline>" and "haystack.component.run <component>"
and also writes the names as attributes. A sampler may drop a span's start attributes (it returns
the attributes the span keeps), so the name's suffix stands in when the attribute is missing, and a
component span without its pipeline's name takes the one of the run it belongs to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from hayscope import semconv
from hayscope.report.stats import finite

KIND_RUN: Final = "run"
KIND_COMPONENT: Final = "component"
KIND_WAIT: Final = "wait"
KIND_OTHER: Final = "span"

WAIT_SPANS: Final = frozenset({semconv.QUEUE_WAIT_SPAN, semconv.SCHEDULE_WAIT_SPAN})


@dataclass(frozen=True)
class SpanRecord:
    """One finished span, reduced to what the report reads."""

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    kind: str  # run | component | wait | span
    subject: str  # the pipeline's name for a run, the component's for a component, else the span's name
    pipeline: str  # the pipeline it belongs to ("" when unknown)
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]

    @property
    def duration_seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def status(self) -> str:
        return text(self.attributes.get(semconv.STATUS)) or semconv.STATUS_OK

    @property
    def mode(self) -> str:
        return text(self.attributes.get(semconv.COMPONENT_EXECUTION_MODE)) if self.kind == KIND_COMPONENT else ""

    def seconds(self, key: str) -> float | None:
        """A timing attribute in seconds, or None when absent or not a finite number >= 0."""
        value = finite(self.attributes.get(key))
        return value if value is not None and value >= 0 else None


def text(value: object) -> str:
    """An attribute value as display text ('' for None)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _kind_and_subject(name: str, attributes: Mapping[str, Any]) -> tuple[str, str]:
    for base, kind, key in (
        (semconv.PIPELINE_SPAN, KIND_RUN, semconv.PIPELINE_NAME),
        (semconv.COMPONENT_SPAN, KIND_COMPONENT, semconv.COMPONENT_NAME),
    ):
        # A bare base name without the attribute is haystack's own span, not hayscope's.
        suffix = name[len(base) + 1 :] if name.startswith(base + " ") else None
        if suffix is not None or (name == base and key in attributes):
            return kind, text(attributes.get(key)) or suffix or ""
    return (KIND_WAIT if name in WAIT_SPANS else KIND_OTHER), name


def record_of(span: Any) -> SpanRecord | None:
    """The record of one finished span, or None for a span that cannot be placed in time."""
    try:
        start, end = span.start_time, span.end_time
        if not isinstance(start, int) or not isinstance(end, int) or end < start:
            return None
        context = span.context
        parent = span.parent
        attributes = dict(span.attributes or {})
        name = text(span.name)
        kind, subject = _kind_and_subject(name, attributes)
        return SpanRecord(
            trace_id=int(context.trace_id),
            span_id=int(context.span_id),
            parent_id=int(parent.span_id) if parent is not None else None,
            name=name,
            kind=kind,
            subject=subject,
            pipeline=subject if kind == KIND_RUN else text(attributes.get(semconv.PIPELINE_NAME)),
            start_ns=start,
            end_ns=end,
            attributes=attributes,
        )
    except Exception:  # not a span we can read: leave it out rather than fail the report
        return None


def records_of(spans: Iterable[Any] | None) -> list[SpanRecord]:
    """The readable finished spans, in start order (ties: the parent first, as it was opened first)."""
    records: list[SpanRecord] = []
    try:
        for span in spans or ():
            record = record_of(span)
            if record is not None:
                records.append(record)
    except Exception:  # an iterable that fails midway: report on what it gave until then
        pass
    runs = {r.span_id: r.pipeline for r in records if r.kind == KIND_RUN}
    records = [
        dataclasses.replace(r, pipeline=runs[r.parent_id])
        if r.kind == KIND_COMPONENT and not r.pipeline and r.parent_id in runs
        else r
        for r in records
    ]
    records.sort(key=lambda r: (r.start_ns, r.kind != KIND_RUN, r.kind == KIND_WAIT))
    return records
