"""Helpers for testing code instrumented with hayscope: in-memory spans, a fresh registry, span trees."""

from hayscope.testing.capture import TelemetryCapture, span_tree

__all__ = ["TelemetryCapture", "span_tree"]
