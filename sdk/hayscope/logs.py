"""structlog processors that put the current span's ids on every event."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace

__all__ = ["add_trace_context"]


def add_trace_context(_logger: Any, _method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add `trace_id` (32 hex digits) and `span_id` (16 hex digits) of the current span, if any.

    Works wherever the span is current: in the pipeline, in an async component, and in a
    thread-offloaded one (hayscope hands the worker the component's context).
    """
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict
