"""active_context: the current OpenTelemetry context through its ContextVar, as the API sees it."""

from __future__ import annotations

import contextvars
import logging

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from hayscope import active_context

KEY = otel_context.create_key("tests.value")


def test_the_default_runtime_is_read_and_set_through_its_contextvar() -> None:
    assert active_context._runtime_variable() is not None
    token = active_context.attach(otel_context.set_value(KEY, "ours"))
    try:
        assert otel_context.get_value(KEY) == "ours"  # the API sees what was attached here
        assert active_context.get_current() is otel_context.get_current()
    finally:
        active_context.detach(token)
    assert otel_context.get_value(KEY) is None


def test_what_the_api_attaches_is_current_here() -> None:
    token = otel_context.attach(otel_context.set_value(KEY, "theirs"))
    try:
        assert active_context.get_current().get(KEY) == "theirs"
    finally:
        otel_context.detach(token)


def test_a_token_of_another_context_is_logged_and_not_raised_as_the_api_does(caplog: pytest.LogCaptureFixture) -> None:
    token = contextvars.copy_context().run(active_context.attach, Context({KEY: "elsewhere"}))
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        active_context.detach(token)
    assert [record.getMessage() for record in caplog.records] == ["Failed to detach context"]


def test_another_runtime_context_is_used_through_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    class OwnRuntime:
        _current_context: contextvars.ContextVar[Context] = contextvars.ContextVar("own")

    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", OwnRuntime())
    assert active_context._runtime_variable() is None


def test_span_key_is_where_the_api_keeps_the_current_span() -> None:
    span = trace.NonRecordingSpan(trace.SpanContext(1, 2, False))
    assert trace.get_current_span(Context({active_context.SPAN_KEY: span})) is span
