"""A small instrumented pipeline that runs offline: what `hayscope demo` shows until the full RAG demo.

Real haystack components (an async BM25 retriever over an in-memory store, a sync ChatPromptBuilder
that the pipeline offloads to a thread) and one custom async component standing in for an LLM call,
run concurrently through `run_async_generator`; then the slowest run's spans and the metrics.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from haystack import Document, component
from haystack.components.builders import ChatPromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.dataclasses import ChatMessage
from haystack.document_stores.in_memory import InMemoryDocumentStore
from opentelemetry.sdk.trace import ReadableSpan
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from hayscope.pipeline import TracedAsyncPipeline

DOCUMENTS = [
    "The Great Pyramid of Giza is the only one of the seven wonders still standing.",
    "The Hanging Gardens of Babylon are described as terraces of trees watered from the Euphrates.",
    "The Colossus of Rhodes was a bronze statue of the sun god Helios beside the harbour.",
    "The Lighthouse of Alexandria stood on the island of Pharos and guided ships into the port.",
    "The Temple of Artemis at Ephesus was rebuilt several times after fires and floods.",
    "The Statue of Zeus at Olympia was made of ivory and gold by the sculptor Phidias.",
    "The Mausoleum at Halicarnassus was the tomb of Mausolus, a Persian satrap.",
]
QUESTIONS = [
    "Which wonder still stands?",
    "What was the Colossus made of?",
    "Where was the lighthouse?",
    "Who made the statue of Zeus?",
    "Whose tomb was the mausoleum?",
    "What watered the hanging gardens?",
]
TEMPLATE = [
    ChatMessage.from_user(
        "Answer from the context.\nContext:\n{% for d in documents %}{{ d.content }}\n{% endfor %}Question: {{ question }}"
    )
]


@component
class DraftAnswer:
    """Stands in for an LLM: waits a realistic, random time, then answers from the first document."""

    def __init__(self, mean_latency: float = 0.05) -> None:
        self.mean_latency = mean_latency

    @component.output_types(answer=str)
    def run(self, messages: list[ChatMessage]) -> dict[str, Any]:
        raise RuntimeError("DraftAnswer runs async only")

    @component.output_types(answer=str)
    async def run_async(self, messages: list[ChatMessage]) -> dict[str, Any]:
        await asyncio.sleep(random.expovariate(1 / self.mean_latency))
        context = messages[-1].text or ""
        return {"answer": context.splitlines()[2] if context.count("\n") > 2 else ""}


def build_pipeline(**telemetry: Any) -> TracedAsyncPipeline:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=text) for text in DOCUMENTS])
    pipeline = TracedAsyncPipeline(name="wonders", **telemetry)
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=2))
    pipeline.add_component("prompt_builder", ChatPromptBuilder(template=TEMPLATE, required_variables="*"))
    pipeline.add_component("llm", DraftAnswer())
    pipeline.connect("retriever.documents", "prompt_builder.documents")
    pipeline.connect("prompt_builder.prompt", "llm.messages")
    return pipeline


async def ask_all(pipeline: TracedAsyncPipeline, runs: int, concurrency: int) -> list[str]:
    """Runs `runs` questions, `concurrency` at a time, consuming partial outputs as they arrive."""
    limit = asyncio.Semaphore(concurrency)

    async def ask(question: str) -> str:
        async with limit:
            data = {"retriever": {"query": question}, "prompt_builder": {"question": question}}
            answer = ""
            async for partial in pipeline.run_async_generator(data):
                answer = partial.get("llm", {}).get("answer", answer)
            return answer

    return await asyncio.gather(*(ask(QUESTIONS[i % len(QUESTIONS)]) for i in range(runs)))


def waterfall(spans: tuple[ReadableSpan, ...]) -> list[str]:
    """The slowest run's spans as lines: offset from the run's start, duration, name, mode."""
    roots = [s for s in spans if s.parent is None and s.name.startswith("haystack.pipeline.run")]
    slowest = max(roots, key=lambda s: (s.end_time or 0) - (s.start_time or 0))
    start = slowest.start_time or 0
    members = sorted(
        (s for s in spans if s.context.trace_id == slowest.context.trace_id), key=lambda s: s.start_time or 0
    )
    parents = {s.context.span_id: s.parent.span_id if s.parent else None for s in members}

    def depth(span_id: int | None) -> int:
        return 0 if parents.get(span_id) is None else 1 + depth(parents[span_id])

    lines = []
    for span in members:
        offset = ((span.start_time or 0) - start) / 1e6
        duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        mode = span.attributes.get("haystack.component.execution_mode", "") if span.attributes else ""
        indent = "  " * depth(span.context.span_id)
        lines.append(f"{offset:8.1f} ms {duration:8.1f} ms  {indent}{span.name} {mode}".rstrip())
    return lines


def metric_lines(registry: CollectorRegistry) -> list[str]:
    """The non-zero counters, gauges and histogram counts/sums of the exposition (no buckets, for brevity)."""
    text = generate_latest(registry).decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith("haystack_") and "_bucket" not in line and "_created" not in line
        and not line.endswith(" 0.0")
    ]
