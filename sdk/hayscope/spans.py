"""Starting hayscope's spans at a fraction of `Tracer.start_span`'s cost.

The OpenTelemetry SDK's `Tracer.start_span` looks the parent up in the context again, and cleans
every attribute value (a chain of isinstance checks and a lock per value) when the span starts and
again when attributes are added: for a component span, most of what hayscope costs per execution.
When the tracer is the SDK's own, `SpanStarter` builds the same `opentelemetry.sdk.trace.Span`
itself: the tracer's sampler decides, its id generator makes the span id, its span processors see
`on_start` and `on_end` as usual, and every method called on the span is the SDK's. Only the
attributes hayscope starts and ends the span with, when they are plain strings, numbers and
booleans, are stored without cleaning; anything else is cleaned and bounded as always.

Building a span outside its constructor needs the SDK's private fields. A check at first use (an
SDK span made by its constructor has exactly the fields set here) makes any SDK version that differs
use `Tracer.start_span` instead, as do tracers that are not the SDK's, disabled tracers and span
limits that would cut attribute values.

Every span stays alive until its processor exports it (a `BatchSpanProcessor` keeps up to a batch),
long enough for the cyclic garbage collector to scan it several times and promote it to the oldest
generation, where it counts towards the next full collection (120-180 ms over a large heap, with the
loop stopped). So the spans built here keep fewer objects the collector tracks: an empty event or
link list has no deque and lock of its own until something is appended, and the trace flags are
shared values; 6 tracked objects per exported span instead of 11.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

# Hayscope's own attributes of one span: far below this, or the SDK decides what to drop.
_MOST_ATTRIBUTES = 64
_UNSET = Status(StatusCode.UNSET)
_RANDOM_TRACE_ID = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
# The flags a span can get here, one shared value each.
_TRACE_FLAGS = {
    flags: TraceFlags(flags)
    for flags in (TraceFlags.DEFAULT, TraceFlags.SAMPLED, _RANDOM_TRACE_ID, TraceFlags.SAMPLED | _RANDOM_TRACE_ID)
}
# Guards only the making of an event or link list's own deque and lock (nothing else runs under it),
# and is the stand-in lock of the lists still empty: safe to share between spans.
_LIST_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a forked child must not inherit it held by a thread it lacks
    os.register_at_fork(after_in_child=_LIST_LOCK._at_fork_reinit)  # type: ignore[attr-defined]


class _TrustedAttributes(BoundedAttributes):
    """A span's `BoundedAttributes` that takes hayscope's own values as they are."""

    def __init__(self, limits: Any, attributes: Mapping[str, AttributeValue]) -> None:
        # BoundedAttributes' own fields, set without its cleaning
        self._dict = dict(attributes)
        self.maxlen = limits.max_span_attributes
        self.dropped = 0
        self.max_value_len = limits.max_span_attribute_length
        self._lock = threading.Lock()  # its own: the SDK logs while holding it, and a log handler may set attributes
        self._immutable = False

    def add_trusted(self, attributes: Mapping[str, AttributeValue]) -> bool:
        """Adds `attributes` unless they would not all fit or the span has ended (then: False)."""
        with self._lock:
            room = self.maxlen is None or len(self._dict) + len(attributes) <= self.maxlen
            if room and not self._immutable:
                self._dict.update(attributes)
                return True
        return False


class _LazyBoundedList(BoundedList):
    """The SDK's `BoundedList` of a span's events or links, with its deque and lock made on the first
    append (most spans never get one): until then it reads as empty.

    Made without a call to `__init__` (`_empty_list_type`): a subclass per `maxlen` holds it."""

    _dq: collections.deque[Any] = collections.deque()  # the stand-in while empty: never appended to
    _lock = _LIST_LOCK
    _maxlen: int | None = None
    dropped = 0

    def append(self, item: Any) -> None:
        self._own_deque()
        super().append(item)

    def extend(self, seq: Any) -> None:
        self._own_deque()
        super().extend(seq)

    def __deepcopy__(self, memo: dict[int, Any]) -> BoundedList:
        self._own_deque()
        return super().__deepcopy__(memo)

    def _own_deque(self) -> None:
        if "_dq" in vars(self):
            return
        with _LIST_LOCK:
            if "_dq" not in vars(self):
                self._lock = threading.Lock()  # before the deque: whoever sees the deque sees its lock
                self._dq = collections.deque(maxlen=self._maxlen)


_LIST_TYPES: dict[int | None, type[_LazyBoundedList]] = {}


def _empty_list_type(maxlen: int | None) -> type[_LazyBoundedList]:
    """The type of empty event or link lists of at most `maxlen`: `list_type.__new__(list_type)` is one."""
    list_type = _LIST_TYPES.get(maxlen)
    if list_type is None:
        list_type = _LIST_TYPES[maxlen] = type("_LazyBoundedList", (_LazyBoundedList,), {"_maxlen": maxlen})
    return list_type


def set_trusted_attributes(span: Span, attributes: Mapping[str, AttributeValue]) -> None:
    """`span.set_attributes` on a recording span, without cleaning when `SpanStarter` made the span:
    every value must be a plain string, number or boolean (hayscope's own attributes are)."""
    stored = getattr(span, "_attributes", None)
    if type(stored) is not _TrustedAttributes or not stored.add_trusted(attributes):
        span.set_attributes(attributes)  # full (user attributes) or ended: the SDK's own rules


def _span_context_fields_by_property(span_context: SpanContext) -> tuple[Any, ...]:
    return (
        span_context.trace_id,
        span_context.span_id,
        span_context.is_remote,
        span_context.trace_flags,
        span_context.trace_state,
        span_context.is_valid,
    )


def _span_context_fields_reader() -> Any:
    """`tuple` when a `SpanContext` is the tuple of its fields (read without a property call each)."""
    probe = SpanContext(0x1F, 0x2E, True, TraceFlags(1), TraceState([("k", "v")]))
    if isinstance(probe, tuple) and tuple(probe) == _span_context_fields_by_property(probe):
        return tuple
    return _span_context_fields_by_property


# span context -> (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)
span_context_fields = _span_context_fields_reader()


class SpanStarter:
    """Starts hayscope's spans on one tracer, on the SDK's fields when `fits` (see the module doc)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._fields = _sdk_fields(tracer)
        self.fits = self._fields is not None
        if self._fields is not None:
            limits = self._fields["_limits"]
            self._list_types = (_empty_list_type(limits.max_events), _empty_list_type(limits.max_links))
        self._sampler: Sampler | None = None
        self._samples_children = False

    def start(
        self,
        name: str,
        context: otel_context.Context,
        parent: SpanContext | None,
        attributes: Mapping[str, AttributeValue],
        start_time: int | None = None,
        plain: bool | None = None,
    ) -> Span:
        """A span named `name` in `context`; `parent` is the span context of the span current in it
        (None: looked up). `attributes` must be valid attribute values; those that are not plain
        strings, numbers or booleans are cleaned, as the SDK cleans them. `plain`: whether all of
        them are (see `plain_values`), when the caller knows it already."""
        fields = self._fields
        tracer = self.tracer
        if fields is None or not tracer._is_enabled():  # type: ignore[attr-defined]
            return tracer.start_span(name, context=context, attributes=attributes, start_time=start_time)
        if parent is None:
            parent = trace.get_current_span(context).get_span_context()
        sampler = tracer.sampler  # type: ignore[attr-defined]
        if sampler is not self._sampler:
            self._sampler, self._samples_children = sampler, _samples_children_of_sampled_spans(sampler)
        trace_id, _span_id, is_remote, parent_flags, parent_state, is_valid = span_context_fields(parent)
        if is_valid:
            random_trace_id = parent_flags & _RANDOM_TRACE_ID
        else:  # a root span
            parent = None
            ids = tracer.id_generator  # type: ignore[attr-defined]
            trace_id = ids.generate_trace_id()
            random_trace_id = _RANDOM_TRACE_ID if getattr(ids, "is_trace_id_random", bool)() else 0
        if parent is not None and self._samples_children and parent_flags & TraceFlags.SAMPLED and not is_remote:
            decision, trace_state, start_attributes = Decision.RECORD_AND_SAMPLE, parent_state, attributes
        else:
            sampling = sampler.should_sample(context, trace_id, name, SpanKind.INTERNAL, attributes, ())
            decision, trace_state, start_attributes = sampling.decision, sampling.trace_state, sampling.attributes
        flags = _TRACE_FLAGS[(TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT) | random_trace_id]
        span_context = SpanContext(trace_id, tracer.id_generator.generate_span_id(), False, flags, trace_state)  # type: ignore[attr-defined]
        metrics = getattr(tracer, "_tracer_metrics", None)
        end_metrics = metrics.start_span(parent, decision) if metrics is not None else None
        if not decision.is_recording():
            return trace.NonRecordingSpan(span_context)
        span = sdk_trace._Span.__new__(sdk_trace._Span)
        state = span.__dict__
        state.update(fields)
        limits = fields["_limits"]
        state["_name"] = name
        state["_context"] = span_context
        state["_parent"] = parent
        state["_lock"] = threading.Lock()
        if (start_attributes is attributes or start_attributes == attributes) and (
            plain if plain is not None else plain_values(attributes)
        ):
            state["_attributes"] = _TrustedAttributes(limits, attributes)
        else:  # the sampler's own, as the SDK takes them
            state["_attributes"] = BoundedAttributes(
                limits.max_span_attributes, start_attributes, False, limits.max_span_attribute_length
            )
        events, links = self._list_types
        state["_events"] = events.__new__(events)
        state["_links"] = links.__new__(links)
        if "_record_end_metrics" in fields:
            state["_record_end_metrics"] = end_metrics
        state["_start_time"] = start_time if start_time is not None else time.time_ns()
        fields["_span_processor"].on_start(span, parent_context=context)
        return span


_PLAIN_TYPES = frozenset((str, int, float, bool))


def plain_values(attributes: Mapping[str, AttributeValue]) -> bool:
    """Whether every value is stored as it is: a plain string, number or boolean."""
    return _PLAIN_TYPES.issuperset(map(type, attributes.values()))


def _samples_children_of_sampled_spans(sampler: Sampler) -> bool:
    """Whether `sampler` records and samples every child of a sampled local span, keeping its
    attributes and its parent's trace state: the SDK's `ParentBased` samplers (its default) with
    their default `local_parent_sampled`, and `ALWAYS_ON`. Such a child needs no sampler call."""
    if sampler is ALWAYS_ON:
        return True
    return (
        isinstance(sampler, ParentBased)
        and type(sampler).should_sample is ParentBased.should_sample
        and getattr(sampler, "_local_parent_sampled", None) is ALWAYS_ON
    )


# The fields of an SDK span that are the same for every span of a tracer, by name; the per-span ones.
_PER_SPAN = {"_name", "_context", "_parent", "_lock", "_attributes", "_events", "_links", "_start_time"}


def _sdk_fields(tracer: trace.Tracer) -> dict[str, Any] | None:
    """The tracer-wide fields of its spans, or None when its spans cannot be built here."""
    if type(tracer) is not sdk_trace.Tracer or not callable(getattr(tracer, "_is_enabled", None)):
        return None
    try:
        limits = tracer._span_limits
        if limits.max_span_attribute_length is not None or (
            limits.max_span_attributes is not None and limits.max_span_attributes < _MOST_ATTRIBUTES
        ):
            return None
        fields: dict[str, Any] = {
            "_kind": SpanKind.INTERNAL,
            "_instrumentation_info": tracer.instrumentation_info,
            "_instrumentation_scope": tracer._instrumentation_scope,
            "_end_time": None,
            "_resource": tracer.resource,
            "_status": _UNSET,
            "_sampler": tracer.sampler,
            "_trace_config": None,
            "_record_exception": True,
            "_set_status_on_exception": True,
            "_span_processor": tracer.span_processor,
            "_limits": limits,
        }
        probe = sdk_trace._Span("probe", trace.INVALID_SPAN_CONTEXT, resource=tracer.resource, limits=limits)
        expected = set(vars(probe))
        if "_record_end_metrics" in expected and hasattr(tracer, "_tracer_metrics"):
            fields["_record_end_metrics"] = None
    except Exception:  # another SDK version: its own constructor, then
        return None
    attributes_probe = vars(BoundedAttributes())
    trusted_probe = vars(_TrustedAttributes(limits, {}))
    if set(fields) | _PER_SPAN != expected or set(attributes_probe) != set(trusted_probe):
        return None
    return fields
