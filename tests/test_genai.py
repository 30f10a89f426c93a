"""GenAI attributes and metrics on generator, embedder and retriever spans, and content capture."""

from __future__ import annotations

import json
from typing import Any

import pytest
from haystack import Document, component
from haystack.components.builders import ChatPromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.dataclasses import ChatMessage
from haystack.document_stores.in_memory import InMemoryDocumentStore

from hayscope import genai
from hayscope.content import TRUNCATED_MARKER, configure_content_capture
from hayscope.testing import TelemetryCapture


@component
class ScriptedChat:
    """A chat generator answering with a fixed reply and the usage meta OpenAI's API reports."""

    def __init__(self, model: str = "scripted-1", reply: str = "The pyramid.", usage: Any = None) -> None:
        self.model = model
        self.reply = reply
        self.usage = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49} if usage is None else usage

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage]) -> dict[str, Any]:
        meta = {"model": f"{self.model}-2026", "finish_reason": "stop", "usage": self.usage}
        return {"replies": [ChatMessage.from_assistant(self.reply, meta=meta)]}

    @component.output_types(replies=list[ChatMessage])
    async def run_async(self, messages: list[ChatMessage]) -> dict[str, Any]:
        return self.run(messages)


@component
class TinyTextEmbedder:
    """An embedder reporting usage in a `meta` output, as OpenAI's embedders do."""

    def __init__(self, model: str = "tiny-embed") -> None:
        self.model = model

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        return {"embedding": [float(len(text))], "meta": {"model": self.model, "usage": {"prompt_tokens": 5}}}


@component
class OddChat:
    """A chat generator whose outputs are not what anyone expects."""

    @component.output_types(replies=list[Any], meta=Any)
    def run(self, messages: list[ChatMessage]) -> dict[str, Any]:
        return {"replies": ["plain string", None, {"meta": "not a mapping"}], "meta": [1, 2]}


@pytest.fixture(autouse=True)
def content_off():
    yield
    configure_content_capture(False)


def rag(capture: TelemetryCapture, chat: Any) -> Any:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content="The Great Pyramid still stands."), Document(content="Rhodes had a colossus.")])
    pipeline = capture.pipeline(name="genai")
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=1))
    pipeline.add_component(
        "prompt_builder",
        ChatPromptBuilder(template=[ChatMessage.from_user("{{ documents[0].content }} {{ question }}")]),
    )
    pipeline.add_component("llm", chat)
    pipeline.connect("retriever.documents", "prompt_builder.documents")
    pipeline.connect("prompt_builder.prompt", "llm.messages")
    return pipeline


def data(question: str = "Which wonder stands?") -> dict[str, Any]:
    return {"retriever": {"query": question}, "prompt_builder": {"question": question}}


def span_of(capture: TelemetryCapture, component_name: str) -> Any:
    (span,) = [s for s in capture.spans() if s.attributes.get("haystack.component.name") == component_name]
    return span


async def test_a_chat_generator_span_carries_the_genai_attributes_from_its_replies(capture):
    result = await rag(capture, ScriptedChat()).run_async(data())

    assert result["llm"]["replies"][0].text == "The pyramid."
    attributes = span_of(capture, "llm").attributes
    assert {key: attributes[key] for key in attributes if key.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "test_genai",
        "gen_ai.request.model": "scripted-1",
        "gen_ai.response.model": "scripted-1-2026",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 42,
        "gen_ai.usage.output_tokens": 7,
    }


async def test_a_generator_added_again_under_its_name_is_recorded_with_its_own_model(capture):
    pipeline = rag(capture, ScriptedChat(model="scripted-1"))
    await pipeline.run_async(data())
    pipeline.remove_component("llm")
    pipeline.add_component("llm", ScriptedChat(model="scripted-2"))
    pipeline.connect("prompt_builder.prompt", "llm.messages")
    capture.clear()

    await pipeline.run_async(data())

    assert span_of(capture, "llm").attributes["gen_ai.request.model"] == "scripted-2"
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "test_genai"}
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert capture.sample(duration, **labels, gen_ai_request_model="scripted-1") == 1
    assert capture.sample(duration, **labels, gen_ai_request_model="scripted-2") == 1


async def test_retriever_and_embedder_spans_name_their_operation_and_others_get_nothing(capture):
    pipeline = rag(capture, ScriptedChat())
    pipeline.add_component("embedder", TinyTextEmbedder())
    await pipeline.run_async({**data(), "embedder": {"text": "hello"}})

    retriever = span_of(capture, "retriever").attributes
    assert retriever["gen_ai.operation.name"] == "retrieval"
    assert retriever["gen_ai.provider.name"] == "haystack.in_memory"
    assert "gen_ai.request.model" not in retriever
    embedder = span_of(capture, "embedder").attributes
    assert (embedder["gen_ai.operation.name"], embedder["gen_ai.request.model"]) == ("embeddings", "tiny-embed")
    assert (embedder["gen_ai.response.model"], embedder["gen_ai.usage.input_tokens"]) == ("tiny-embed", 5)
    assert "gen_ai.usage.output_tokens" not in embedder
    assert not [key for key in span_of(capture, "prompt_builder").attributes if key.startswith("gen_ai.")]


async def test_token_usage_and_operation_duration_histograms(capture):
    pipeline = rag(capture, ScriptedChat())
    pipeline.add_component("embedder", TinyTextEmbedder())
    for _ in range(3):
        await pipeline.run_async({**data(), "embedder": {"text": "hello"}})

    def tokens(operation: str, model: str, token_type: str, suffix: str) -> float | None:
        return capture.sample(
            f"gen_ai_client_token_usage_{suffix}",
            gen_ai_operation_name=operation,
            gen_ai_request_model=model,
            gen_ai_token_type=token_type,
        )

    assert (tokens("chat", "scripted-1", "input", "count"), tokens("chat", "scripted-1", "input", "sum")) == (3, 126)
    assert (tokens("chat", "scripted-1", "output", "count"), tokens("chat", "scripted-1", "output", "sum")) == (3, 21)
    assert tokens("embeddings", "tiny-embed", "input", "sum") == 15
    assert tokens("embeddings", "tiny-embed", "output", "count") is None
    for operation, provider, model in (
        ("chat", "test_genai", "scripted-1"),
        ("embeddings", "test_genai", "tiny-embed"),
        ("retrieval", "haystack.in_memory", ""),
    ):
        count = capture.sample(
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_operation_name=operation,
            gen_ai_provider_name=provider,
            gen_ai_request_model=model,
        )
        assert count == 3, operation


async def test_odd_outputs_record_nothing_and_reach_the_caller_unchanged(capture):
    pipeline = capture.pipeline(name="odd")
    pipeline.add_component("llm", OddChat())

    result = await pipeline.run_async({"llm": {"messages": [ChatMessage.from_user("hi")]}})

    assert result == {"llm": {"replies": ["plain string", None, {"meta": "not a mapping"}], "meta": [1, 2]}}
    attributes = span_of(capture, "llm").attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["hayscope.status"] == "ok"
    assert not [key for key in attributes if key.startswith(("gen_ai.usage", "gen_ai.response"))]


@component
class UnconfiguredEmbedder:
    """An embedder whose settings are properties that fail until configured; `run` needs none of them."""

    @property
    def model(self) -> str:
        raise RuntimeError("no model configured")

    @property
    def api_base_url(self) -> str:
        raise KeyError("EMBEDDER_BASE_URL")

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        return {"embedding": [float(len(text))]}


@pytest.mark.parametrize("path", ["run", "run_async"])
async def test_settings_that_fail_to_read_are_left_out_and_the_run_goes_on(capture, path):
    pipeline = capture.pipeline(name="unconfigured")
    pipeline.add_component("embedder", UnconfiguredEmbedder())
    data = {"embedder": {"text": "hello"}}

    result = pipeline.run(data) if path == "run" else await pipeline.run_async(data)

    assert result == {"embedder": {"embedding": [5.0]}}
    attributes = span_of(capture, "embedder").attributes
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert "gen_ai.request.model" not in attributes and "server.address" not in attributes
    assert attributes["hayscope.status"] == "ok"


async def test_usage_that_is_not_a_count_is_left_out(capture):
    chat = ScriptedChat(usage={"prompt_tokens": "many", "completion_tokens": -3, "input_tokens": True})
    await rag(capture, chat).run_async(data())

    attributes = span_of(capture, "llm").attributes
    assert "gen_ai.usage.input_tokens" not in attributes and "gen_ai.usage.output_tokens" not in attributes
    assert attributes["gen_ai.response.model"] == "scripted-1-2026"


async def test_prompt_and_reply_text_stay_off_spans_by_default(capture):
    await rag(capture, ScriptedChat()).run_async(data())

    attributes = span_of(capture, "llm").attributes
    assert genai.INPUT_MESSAGES not in attributes and genai.OUTPUT_MESSAGES not in attributes
    assert not any("pyramid" in str(value).lower() for value in attributes.values())


async def test_content_capture_records_messages_cut_and_redacted(capture):
    seen: list[str] = []

    def redact(key: str, value: str) -> str:
        seen.append(key)
        return value.replace("Great Pyramid", "[landmark]")

    configure_content_capture(True, max_length=60, redact=redact)
    await rag(capture, ScriptedChat(reply="x" * 100)).run_async(data())

    attributes = span_of(capture, "llm").attributes
    prompt = attributes[genai.INPUT_MESSAGES]
    assert prompt.startswith(json.dumps([{"role": "user", "content": "The [landmark] still stands. Which"}])[:60])
    assert prompt.endswith(TRUNCATED_MARKER) and len(prompt) == 60 + len(TRUNCATED_MARKER)
    reply = attributes[genai.OUTPUT_MESSAGES]
    assert reply[:60] == json.dumps([{"role": "assistant", "content": "x" * 100}])[:60]
    assert "truncated by hayscope" in reply
    assert set(seen) == {
        genai.INPUT_MESSAGES,
        genai.OUTPUT_MESSAGES,
        "haystack.pipeline.input_data",
        "haystack.component.input",
        "haystack.component.output",
    }


class Unprintable:
    """A message-like input whose text is not a string and whose str() raises."""

    text = None

    def __str__(self) -> str:
        raise RuntimeError("no text")

    def __deepcopy__(self, memo: dict) -> Unprintable:
        return self


@component
class AnyChat:
    """Answers whatever it is given."""

    @component.output_types(replies=list[str])
    def run(self, messages: list[Any]) -> dict[str, Any]:
        return {"replies": ["ok"]}


async def test_inputs_that_cannot_be_captured_leave_the_run_and_its_span_as_they_were(capture):
    configure_content_capture(True)
    pipeline = capture.pipeline(name="odd_inputs")
    pipeline.add_component("llm", AnyChat())

    assert await pipeline.run_async({"llm": {"messages": [Unprintable()]}}) == {"llm": {"replies": ["ok"]}}

    span = span_of(capture, "llm")
    assert span.attributes["gen_ai.operation.name"] == "chat" and span.attributes["hayscope.status"] == "ok"


async def test_a_failing_redaction_hook_drops_the_value_and_not_the_run(capture):
    def broken(key: str, value: str) -> str:
        raise RuntimeError("hook bug")

    configure_content_capture(True, redact=broken)
    result = await rag(capture, ScriptedChat()).run_async(data())

    assert result["llm"]["replies"][0].text == "The pyramid."
    attributes = span_of(capture, "llm").attributes
    assert genai.INPUT_MESSAGES not in attributes and genai.OUTPUT_MESSAGES not in attributes


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"enabled": "yes"}, "enabled='yes' is not a bool"),
        ({"enabled": True, "max_length": 0}, "max_length=0 is not a positive number of characters"),
        ({"enabled": True, "redact": "scrub"}, "redact='scrub' is not callable"),
    ],
)
def test_bad_content_settings_are_refused_with_the_value_and_the_fix(arguments, message):
    with pytest.raises((TypeError, ValueError), match=message):
        configure_content_capture(**arguments)


def test_request_models_from_local_directories_read_like_hub_ids():
    @component
    class LocalEmbedder:
        def __init__(self) -> None:
            self.model = "/opt/models/sentence-transformers/all-MiniLM-L6-v2"

        @component.output_types(embedding=list[float])
        def run(self, text: str) -> dict[str, Any]:
            return {"embedding": [0.0]}

    operation = genai.operation_of(LocalEmbedder())
    assert operation is not None
    assert operation.request_model == "sentence-transformers/all-MiniLM-L6-v2"
