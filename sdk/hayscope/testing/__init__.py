"""Helpers for testing code instrumented with hayscope: in-memory spans, fresh registries, an OTLP receiver."""

from hayscope.testing.capture import TelemetryCapture, span_tree
from hayscope.testing.otlp import OtlpReceiver, ReceivedSpan

__all__ = ["OtlpReceiver", "ReceivedSpan", "TelemetryCapture", "span_tree"]
