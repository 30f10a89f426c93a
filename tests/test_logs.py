"""structlog events carry the ids of the span that is current where they are logged."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import LogCapture

from components import AsyncTraced, SyncTraced
from hayscope import add_trace_context, setup_telemetry


@pytest.fixture
def log_entries() -> Iterator[list[dict]]:
    previous = structlog.get_config()
    entries = LogCapture()
    structlog.configure(processors=[add_trace_context, entries])
    yield entries.entries
    structlog.configure(**previous)


@pytest.mark.parametrize("path", ["run_async", "run"])
async def test_events_logged_inside_components_carry_their_trace_and_span_ids(capture, log_entries, path):
    pipeline = capture.pipeline(name="logged")
    pipeline.add_component("on_loop", AsyncTraced(capture.tracer_provider))
    pipeline.add_component("in_thread", SyncTraced(capture.tracer_provider))
    pipeline.connect("on_loop.value", "in_thread.value")

    if path == "run":
        pipeline.run({"on_loop": {"value": 7}})
    else:
        await pipeline.run_async({"on_loop": {"value": 7}})

    inner_spans = capture.spans_named("inner work")
    assert len(log_entries) == 2 == len(inner_spans)
    expected = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in inner_spans}
    assert {(e["trace_id"], e["span_id"]) for e in log_entries} == expected
    for entry in log_entries:
        assert re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])


def test_events_outside_any_span_are_left_alone(log_entries):
    structlog.get_logger().info("idle")

    assert log_entries == [{"event": "idle", "log_level": "info"}]


@pytest.mark.parametrize(
    ("renderer", "parse"),
    [
        (structlog.processors.JSONRenderer(), json.loads),
        (
            structlog.processors.KeyValueRenderer(),
            lambda line: dict(pair.split("=", 1) for pair in line.split(" ")),
        ),
        (structlog.dev.ConsoleRenderer(colors=False), None),
    ],
)
def test_the_ids_survive_every_renderer(capture, renderer, parse):
    tracer = capture.tracer_provider.get_tracer("tests")
    with tracer.start_as_current_span("work") as span:
        line = renderer(None, "info", add_trace_context(None, "info", {"event": "hello"}))
    trace_id = f"{span.get_span_context().trace_id:032x}"
    span_id = f"{span.get_span_context().span_id:016x}"

    if parse is None:
        assert f"trace_id={trace_id}" in line and f"span_id={span_id}" in line
    else:
        fields = parse(line)
        assert fields["trace_id"].strip("'") == trace_id
        assert fields["span_id"].strip("'") == span_id


@pytest.fixture
def structlog_restored() -> Iterator[None]:
    previous = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**previous)


def test_configure_logging_renders_exceptions_and_says_it_replaces_a_configuration(structlog_restored, caplog):
    structlog.configure(processors=[structlog.processors.JSONRenderer()])  # an application's own
    lines = io.StringIO()
    with setup_telemetry(
        traces_exporter="none", serve_metrics=False, set_global=False, configure_logging=True, log_format="json"
    ):
        assert "configure_logging=True replaces the structlog configuration already made" in caplog.text
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(lines))  # (the processors stay)
        try:
            raise KeyError("missing")
        except KeyError:
            structlog.get_logger("app").exception("lookup failed")
    entry = json.loads(lines.getvalue())
    assert entry["event"] == "lookup failed" and entry["level"] == "error"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].rstrip().endswith("KeyError: 'missing'")
