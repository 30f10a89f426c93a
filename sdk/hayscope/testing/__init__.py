"""Helpers for testing code instrumented with hayscope: in-memory spans, fresh registries, an OTLP receiver, collectors in trouble."""

from hayscope.testing.capture import TelemetryCapture, span_tree
from hayscope.testing.faults import HangingCollector, refusing_endpoint
from hayscope.testing.otlp import OtlpReceiver, ReceivedSpan

__all__ = ["HangingCollector", "OtlpReceiver", "ReceivedSpan", "TelemetryCapture", "refusing_endpoint", "span_tree"]
