"""Content capture: off by default, capped and redacted when on, and no credential ever exported."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
import structlog
from haystack import Pipeline, component
from haystack.utils import Secret
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from prometheus_client.openmetrics.exposition import generate_latest

from components import AsyncAdd, SyncAdd
from hayscope import semconv
from hayscope.content import (
    SECRET_PLACEHOLDER,
    TRUNCATED_MARKER,
    configure_content_capture,
    content_capture,
    scrub,
    to_text,
)
from hayscope.logs import add_trace_context
from hayscope.testing import TelemetryCapture

PLANTED = "sk-planted0123456789abcdefPLANTED"
PLANTED_ENV = "hs-env-secret-4f1c2b9e77"
PLANTED_REPLACEMENT = "replaced-credential-7d3e1a0c55"


@pytest.fixture(autouse=True)
def content_off():
    yield
    configure_content_capture(False)


@component
class Authenticated:
    """Holds a token Secret and an env-var Secret; echoes its query; can be told to fail quoting its key."""

    def __init__(self) -> None:
        self.api_key = Secret.from_token(PLANTED)
        self.other = Secret.from_env_var("HAYSCOPE_TEST_PLANTED")

    @component.output_types(answer=str, meta=dict[str, Any])
    def run(self, query: str, headers: dict[str, str] | None = None, fail: bool = False) -> dict[str, Any]:
        key = self.api_key.resolve_value()
        if fail:
            raise PermissionError(f"401 from https://api.example.com/v1?key={key}: rejected {key}")
        # A careless component puts its credentials into its own outputs and log lines.
        structlog.get_logger("user.component").info("called upstream", query=query)
        return {"answer": f"echo {query} (used {key[:6]}...)", "meta": {"api_key": key, "env": self.other}}


def text_pipeline(capture: TelemetryCapture) -> Any:
    pipeline = capture.pipeline(name="content")
    pipeline.add_component("first", SyncAdd(1))
    pipeline.add_component("second", AsyncAdd(2))
    pipeline.connect("first.value", "second.value")
    return pipeline


async def test_nothing_of_the_data_reaches_a_span_by_default(capture):
    await text_pipeline(capture).run_async({"first": {"value": 40}})

    for span in capture.spans():
        assert not set(span.attributes) & semconv.HAYSTACK_CONTENT_TAGS, span.name


async def test_when_on_inputs_outputs_and_pipeline_data_are_recorded(capture):
    configure_content_capture(True)
    pipeline = text_pipeline(capture)

    await pipeline.run_async({"first": {"value": 40}})
    pipeline.run({"first": {"value": 1}})

    runs = capture.spans_named("haystack.pipeline.run content")
    assert [run.attributes[semconv.PIPELINE_INPUT_DATA] for run in runs] == [
        '{"first": {"value": 40}}',
        '{"first": {"value": 1}}',
    ]
    assert semconv.PIPELINE_OUTPUT_DATA not in runs[0].attributes  # streamed: outputs are the partials
    assert runs[1].attributes[semconv.PIPELINE_OUTPUT_DATA] == '{"second": {"value": 4}}'
    second = capture.spans_named("haystack.component.run second")
    assert [s.attributes[semconv.COMPONENT_INPUT] for s in second] == ['{"value": 41}', '{"value": 2}']
    assert [s.attributes[semconv.COMPONENT_OUTPUT] for s in second] == ['{"value": 43}', '{"value": 4}']


async def test_every_value_is_cut_with_a_marker_and_the_hook_sees_it_first(capture):
    seen: dict[str, str] = {}

    def redact(key: str, value: str) -> str | None:
        seen[key] = value
        return None if key == semconv.COMPONENT_OUTPUT else value.upper()

    configure_content_capture(True, max_length=12, redact=redact)
    pipeline = capture.pipeline(name="cut")
    pipeline.add_component("authenticated", Authenticated())

    await pipeline.run_async({"authenticated": {"query": "a long question about the pharos"}})

    span = capture.spans_named("haystack.component.run authenticated")[0]
    full = seen[semconv.COMPONENT_INPUT]
    assert full == '{"query": "a long question about the pharos", "headers": null, "fail": false}'
    assert span.attributes[semconv.COMPONENT_INPUT] == full.upper()[:12] + TRUNCATED_MARKER
    assert semconv.COMPONENT_OUTPUT in seen and semconv.COMPONENT_OUTPUT not in span.attributes


def exported_bytes(capture: TelemetryCapture) -> bytes:
    """Every span as the OTLP exporters put it on the wire."""
    return encode_spans(capture.spans()).SerializeToString()


@pytest.mark.parametrize("capture_content", [False, True])
async def test_a_planted_key_never_leaves_in_spans_logs_or_metrics(capture, monkeypatch, capture_content):
    monkeypatch.setenv("HAYSCOPE_TEST_PLANTED", PLANTED_ENV)
    configure_content_capture(capture_content)
    logs = io.StringIO()
    structlog.configure(
        processors=[add_trace_context, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(logs),
        cache_logger_on_first_use=False,
    )
    pipeline = capture.pipeline(name="secrets")
    pipeline.add_component("authenticated", Authenticated())
    headers = {"Authorization": f"Bearer {PLANTED}", "X-Other": PLANTED_ENV}
    try:
        result = await pipeline.run_async({"authenticated": {"query": "q", "headers": headers}})
        with pytest.raises(Exception, match="rejected"):
            await pipeline.run_async({"authenticated": {"query": f"my key is {PLANTED}", "fail": True}})
    finally:
        structlog.reset_defaults()

    assert result["authenticated"]["meta"]["api_key"] == PLANTED  # the pipeline's own data is untouched
    wire = exported_bytes(capture)
    metrics = generate_latest(capture.registry)
    for secret in (PLANTED, PLANTED_ENV):
        for where, data in (("spans", wire), ("metrics", metrics), ("logs", logs.getvalue().encode())):
            assert secret.encode() not in data, where
    if capture_content:
        assert SECRET_PLACEHOLDER.encode() in wire  # captured, with the credentials replaced
    failed = [s for s in capture.spans() if s.attributes.get("hayscope.status") == "error"]
    assert failed and all(PLANTED not in str(event.attributes) for s in failed for event in s.events)


@component
class Careless:
    """Quotes its whole credential in a plain-text output."""

    def __init__(self, key: str) -> None:
        self.api_key = Secret.from_token(key)

    @component.output_types(answer=str)
    def run(self, query: str) -> dict[str, Any]:
        return {"answer": f"{query}, asked with {self.api_key.resolve_value()}"}


async def test_a_component_added_again_under_its_name_has_its_own_secret_scrubbed(capture):
    # The first instance has run: the one added in its place (another credential) is another component.
    configure_content_capture(True)
    pipeline = capture.pipeline(name="secrets")
    pipeline.add_component("careless", Careless(PLANTED))
    await pipeline.run_async({"careless": {"query": "q"}})
    pipeline.remove_component("careless")
    pipeline.add_component("careless", Careless(PLANTED_REPLACEMENT))
    capture.clear()

    result = await pipeline.run_async({"careless": {"query": "q"}})

    assert result["careless"]["answer"] == f"q, asked with {PLANTED_REPLACEMENT}"
    wire = exported_bytes(capture)
    assert PLANTED_REPLACEMENT.encode() not in wire
    assert f"q, asked with {SECRET_PLACEHOLDER}".encode() in wire


def test_scrub_removes_credential_shapes_and_keeps_ordinary_text():
    text = "Authorization: Bearer abc.def-123456 and key sk-proj-ABCDEFGHIJKLMNOP1234, hf_abcdefghijklmnopqrs"
    assert scrub(text) == f"Authorization: {SECRET_PLACEHOLDER} and key {SECRET_PLACEHOLDER}, {SECRET_PLACEHOLDER}"
    assert scrub("the sk-8 skiing trip, bearer of news") == "the sk-8 skiing trip, bearer of news"


def test_to_text_handles_cycles_depth_bytes_secrets_and_odd_objects():
    loop: list[Any] = [1]
    loop.append(loop)
    deep: Any = "bottom"
    for _ in range(40):
        deep = [deep]

    class Hostile:
        @property
        def __dict__(self):  # type: ignore[override]
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    text = to_text(
        {"loop": loop, "deep": deep, "raw": b"\x00\x01", "key": Secret.from_token("x"), "odd": Hostile(), 3: float("inf")}
    )
    assert text.startswith('{"loop": [1, "<cycle>"], "deep": [[[[')
    assert '"…"' in text and "bottom" not in text
    assert '"raw": "<bytes of 2 bytes>"' in text and '"key": "[secret]"' in text
    assert '"odd": "<Hostile>"' in text and '"3": "inf"' in text


def test_to_text_keeps_token_counts_and_hides_values_under_credential_keys():
    usage = {"prompt_tokens": 42, "completion_tokens": 7, "max_tokens": 256, "token_count": 3.0}
    credentials = {"access_token": "opaque-1", "tokens": ["opaque-2"], "password": 1234, "refresh_tokens_x": "opaque-3"}

    text = to_text({"usage": usage, "auth": credentials})

    assert json.loads(text) == {
        "usage": usage,
        "auth": {"access_token": "[secret]", "tokens": "[secret]", "password": "[secret]", "refresh_tokens_x": "[secret]"},
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=12), children, max_size=6)
    | st.tuples(children, children),
    max_leaves=60,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values, budget=st.integers(min_value=1, max_value=500))
def test_to_text_never_raises_never_mutates_and_stays_near_its_budget(value, budget):
    before = repr(value)
    text = to_text(value, budget=budget)
    assert repr(value) == before
    assert isinstance(text, str)
    # One more token may be emitted after the budget runs out: a key, a marker, a closing bracket.
    assert len(text) <= budget + 64 or len(text) <= len(before) * 4 + 64


@component
class Passthrough:
    @component.output_types(value=Any)
    def run(self, value: Any) -> dict[str, Any]:
        return {"value": value}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values, capture_on=st.booleans())
def test_any_output_passes_through_a_traced_pipeline_unchanged(value, capture_on):
    configure_content_capture(capture_on, max_length=256)
    telemetry = TelemetryCapture()
    pipeline = telemetry.pipeline(name="passthrough")
    pipeline.add_component("echo", Passthrough())
    before = repr(value)

    plain = Pipeline()
    plain.add_component("echo", Passthrough())

    result = pipeline.run({"echo": {"value": value}})

    # The same as haystack alone returns (haystack copies inputs; repr also compares NaNs), input untouched.
    assert repr(result) == repr(plain.run({"echo": {"value": value}}))
    assert repr(value) == before
    (span,) = telemetry.spans_named("haystack.component.run echo")
    assert span.attributes["hayscope.status"] == "ok"
    if capture_on:
        assert len(span.attributes[semconv.COMPONENT_OUTPUT]) <= 256 + len(TRUNCATED_MARKER) + 12
    telemetry.shutdown()


def test_content_capture_is_off_unless_configured():
    assert content_capture().enabled is False
    assert content_capture().text("k", "v") is None


def test_logging_of_a_failing_hook_names_the_key(capture, caplog):
    caplog.set_level(logging.WARNING)

    def broken(key: str, value: str) -> str:
        raise ValueError("boom")

    configure_content_capture(True, redact=broken)
    assert content_capture().attribute("haystack.component.input", "x") is None
    assert json.dumps({"ok": True})  # the process goes on


def test_setup_telemetry_switches_content_on_and_shutdown_restores_it(monkeypatch):
    from hayscope import setup_telemetry

    def upper(key: str, value: str) -> str:
        return value.upper()

    monkeypatch.delenv("HAYSTACK_CONTENT_TRACING_ENABLED", raising=False)
    with setup_telemetry(
        traces_exporter="none", serve_metrics=False, set_global=False,
        capture_content=True, content_max_length=10, redact=upper,
    ):
        policy = content_capture()
        assert (policy.enabled, policy.max_length, policy.redact) == (True, 10, upper)
    assert content_capture().enabled is False


@pytest.mark.parametrize(("value", "argument", "enabled"), [("true", None, True), ("1", None, True),
                                                          ("false", None, False), ("true", False, False)])
def test_haystacks_variable_is_read_at_setup_and_an_argument_beats_it(monkeypatch, value, argument, enabled):
    from hayscope import setup_telemetry

    monkeypatch.setenv("HAYSTACK_CONTENT_TRACING_ENABLED", value)
    assert content_capture().enabled is False  # nothing happens at import or before setup
    with setup_telemetry(traces_exporter="none", serve_metrics=False, set_global=False, capture_content=argument):
        assert content_capture().enabled is enabled


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        ({}, "maybe", r"HAYSTACK_CONTENT_TRACING_ENABLED='maybe' is not a switch: use true or false"),
        ({"capture_content": "sometimes"}, None, r"capture_content='sometimes' is not a switch"),
        ({"capture_content": True, "content_max_length": -1}, None, r"max_length=-1 is not a positive number"),
        ({"capture_content": True, "redact": "scrub"}, None, r"redact='scrub' is not callable"),
    ],
)
def test_bad_content_settings_fail_at_setup(monkeypatch, arguments, env, message):
    from hayscope import setup_telemetry

    if env is None:
        monkeypatch.delenv("HAYSTACK_CONTENT_TRACING_ENABLED", raising=False)
    else:
        monkeypatch.setenv("HAYSTACK_CONTENT_TRACING_ENABLED", env)
    with pytest.raises((TypeError, ValueError), match=message):
        setup_telemetry(traces_exporter="none", serve_metrics=False, set_global=False, **arguments)
    assert content_capture().enabled is False
