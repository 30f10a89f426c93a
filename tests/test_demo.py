"""`hayscope demo` end to end: the real embedding model, the local LLM server, spans over OTLP, the report.

The LLM is the local OpenAI-compatible server the demo starts (no API key, no network); the spans
also go to an in-process OTLP receiver, as they would to a collector, so the report's numbers can be
checked against what was exported.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from hayscope.cli import main
from hayscope.testing import OtlpReceiver

pytest.importorskip("haystack_integrations.components.embedders.sentence_transformers")

RUNS = 6
COMPONENTS = {"text_embedder": "thread", "retriever": "async", "prompt_builder": "thread", "llm": "async"}


def nearest_rank(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(quantile * len(ordered)) - 1, 0)]


@pytest.fixture
def receiver(monkeypatch):
    with OtlpReceiver() as started:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", started.http_base_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        yield started


def test_the_demo_answers_from_the_corpus_and_reports_what_the_spans_say(receiver, tmp_path, capsys):
    report_path = tmp_path / "report.json"

    code = main(
        ["demo", "--runs", str(RUNS), "--concurrency", "3", "--llm-latency", "0.02", "--llm-latency-p95", "0.05",
         "--show-partial", "--json", str(report_path), "--html", str(tmp_path / "report.html")]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"llm: local OpenAI-compatible server at http://127\.0\.0\.1:\d+/v1", out)
    # Partial outputs arrive per component, as the notebook prints them.
    for name in COMPONENTS:
        assert re.search(rf"^\[run \d\] {name}: ", out, re.MULTILINE), name
    first_answer = out.split("first answer: ")[1].splitlines()[0]
    assert first_answer.startswith("'Where is Gardens of Babylon?' -> ") and "Babylon" in first_answer.split("->")[1]

    report = json.loads(report_path.read_text())
    assert (report["runs"], report["runs_ok"], report["traced_runs"]) == (RUNS, RUNS, RUNS)
    assert [pipeline["name"] for pipeline in report["pipelines"]] == ["wonders-rag"]
    components = {component["name"]: component for component in report["components"]}
    assert {name: component["mode"] for name, component in components.items()} == COMPONENTS

    exported = [s for s in receiver.spans() if s.attributes.get("haystack.pipeline.name") == "wonders-rag"]
    for name, component in components.items():
        spans = [s for s in exported if s.attributes.get("haystack.component.name") == name]
        assert component["executions"] == len(spans) == RUNS, name
        if COMPONENTS[name] == "thread":
            waits = [s.attributes["hayscope.component.queue_wait"] for s in spans]
            assert component["queue_wait_p95_seconds"] == pytest.approx(nearest_rank(waits, 0.95)), name
        else:
            held = [s.attributes["hayscope.component.loop_held"] for s in spans]
            assert component["loop_held_p95_seconds"] == pytest.approx(nearest_rank(held, 0.95)), name
    assert report["verdict"] and report["slowest_run"]["rows"]

    # GenAI attributes from what the components returned.
    llm = next(s for s in exported if s.attributes.get("haystack.component.name") == "llm")
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.provider.name"] == "openai"
    assert llm.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert llm.attributes["gen_ai.response.model"].startswith("gpt-4o-mini")
    assert llm.attributes["gen_ai.usage.input_tokens"] > 50 and llm.attributes["gen_ai.usage.output_tokens"] > 5
    embedder = next(s for s in exported if s.attributes.get("haystack.component.name") == "text_embedder")
    assert embedder.attributes["gen_ai.request.model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert not [key for s in exported for key in s.attributes if key.startswith("haystack.component.input")]
    # The indexing pipeline is traced too (document embedder in a thread, the async writer).
    indexing = {s.attributes.get("haystack.component.name") for s in receiver.spans()
                if s.attributes.get("haystack.pipeline.name") == "wonders-indexing"}
    assert indexing == {None, "document_embedder", "writer"}


def test_the_real_api_needs_a_key(monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    assert main(["demo", "--llm", "openai"]) == 2
    assert "--llm openai needs OPENAI_API_KEY set" in capsys.readouterr().err
