"""OpenTelemetry GenAI attributes and metrics for generator, embedder and retriever components.

Which operation a component performs is decided once, from its class and its sockets, when the
pipeline first runs it; what the call used (response model, tokens, finish reasons) is read from
the outputs the component returned, which is where every haystack integration reports it
(`ChatMessage.meta`, a `meta` output). Nothing here changes those outputs.

The attribute names follow the OpenTelemetry GenAI semantic conventions; `retrieval` is the
conventions' operation for a retriever. Prompt and reply text are added only when content
capture is on (see `hayscope.content`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from hayscope import content

OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

CHAT: Final = "chat"
TEXT_COMPLETION: Final = "text_completion"
EMBEDDINGS: Final = "embeddings"
RETRIEVAL: Final = "retrieval"

TOKEN_INPUT: Final = "input"
TOKEN_OUTPUT: Final = "output"

# Matched against the lower-cased module and class name, first match wins (azure before openai).
_PROVIDERS: Final = (
    ("azure", "azure.ai.openai"),
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("bedrock", "aws.bedrock"),
    ("vertex", "gcp.vertex_ai"),
    ("google", "gcp.gemini"),
    ("gemini", "gcp.gemini"),
    ("cohere", "cohere"),
    ("mistral", "mistral_ai"),
    ("ollama", "ollama"),
    ("sentence_transformers", "sentence_transformers"),
    ("sentencetransformers", "sentence_transformers"),
    ("huggingface", "huggingface"),
    ("in_memory", "haystack.in_memory"),
    ("inmemory", "haystack.in_memory"),
)
# Where haystack integrations keep the model they were configured with.
_MODEL_ATTRIBUTES: Final = ("model", "model_name", "model_id", "azure_deployment", "model_name_or_path")


@dataclass(frozen=True)
class GenAIOperation:
    """What one component does in GenAI terms; its `attributes` go on every execution's span."""

    operation: str
    provider: str
    request_model: str  # "" when the component has none (retrievers)
    attributes: Mapping[str, AttributeValue]


@dataclass(frozen=True)
class GenAIResult:
    """What one execution's outputs say about the call."""

    attributes: dict[str, AttributeValue]
    input_tokens: int | None
    output_tokens: int | None


def operation_of(instance: Any) -> GenAIOperation | None:
    """The GenAI operation a component instance performs, or None for any other component."""
    cls = type(instance)
    class_name = cls.__name__
    inputs = _read(instance, "__haystack_input__")
    replies = "replies" in (_read(instance, "__haystack_output__") or ())
    if replies and inputs is not None and "messages" in inputs:
        operation = CHAT
    elif replies and inputs is not None and "prompt" in inputs:
        operation = TEXT_COMPLETION
    elif "Embedder" in class_name:
        operation = EMBEDDINGS
    elif "Retriever" in class_name:
        operation = RETRIEVAL
    else:
        return None
    provider = _provider(f"{cls.__module__}.{class_name}".lower())
    model = _request_model(instance)
    attributes: dict[str, AttributeValue] = {OPERATION_NAME: operation, PROVIDER_NAME: provider}
    if model:
        attributes[REQUEST_MODEL] = model
    attributes.update(_server(instance))
    return GenAIOperation(operation, provider, model, attributes)


def result_of(operation: GenAIOperation, outputs: Mapping[str, Any], capture: content.ContentCapture) -> GenAIResult:
    """Response model, token usage and finish reasons from a component's outputs (and replies, if captured)."""
    attributes: dict[str, AttributeValue] = {}
    meta: Mapping[str, Any] = {}
    replies = outputs.get("replies")
    if isinstance(replies, list) and replies:
        first = replies[0]
        meta = _mapping(_read(first, "meta") or (outputs.get("meta") or [{}])[0])
        reasons = [str(r) for r in (_reply_meta(reply).get("finish_reason") for reply in replies) if r]
        if reasons:
            attributes[RESPONSE_FINISH_REASONS] = reasons
        if capture.enabled:
            _set_content(attributes, OUTPUT_MESSAGES, [_message_json(reply) for reply in replies], capture)
    else:
        meta = _mapping(outputs.get("meta"))
    model = meta.get("model")
    if isinstance(model, str) and model:
        attributes[RESPONSE_MODEL] = model
    usage = _mapping(meta.get("usage"))
    input_tokens = _tokens(usage, "prompt_tokens", "input_tokens")
    output_tokens = _tokens(usage, "completion_tokens", "output_tokens")
    if input_tokens is not None:
        attributes[INPUT_TOKENS] = input_tokens
    if output_tokens is not None:
        attributes[OUTPUT_TOKENS] = output_tokens
    return GenAIResult(attributes, input_tokens, output_tokens)


def input_attributes(operation: GenAIOperation, inputs: Mapping[str, Any], capture: content.ContentCapture) -> dict:
    """The prompt as `gen_ai.input.messages`, only when content capture is on."""
    if not capture.enabled or operation.operation not in (CHAT, TEXT_COMPLETION):
        return {}
    attributes: dict[str, AttributeValue] = {}
    if operation.operation == CHAT:
        messages = inputs.get("messages")
        if isinstance(messages, list):
            _set_content(attributes, INPUT_MESSAGES, [_message_json(message) for message in messages], capture)
    elif "prompt" in inputs:
        _set_content(attributes, INPUT_MESSAGES, [{"role": "user", "content": str(inputs["prompt"])}], capture)
    return attributes


def _provider(qualified_name: str) -> str:
    for needle, provider in _PROVIDERS:
        if needle in qualified_name:
            return provider
    top = qualified_name.split(".")
    # haystack_integrations.components.generators.<integration>...: the integration is the provider
    if top[0] == "haystack_integrations" and len(top) > 3:
        return top[3]
    return top[0]


def _request_model(instance: Any) -> str:
    for attribute in _MODEL_ATTRIBUTES:
        value = _read(instance, attribute)
        if isinstance(value, str) and value:
            # A model loaded from a local directory: its last two parts read like a hub id
            # ("sentence-transformers/all-MiniLM-L6-v2") and keep the label short.
            return "/".join(Path(value).parts[-2:]) if os.path.isabs(value) else value
    return ""


def _server(instance: Any) -> dict[str, AttributeValue]:
    url = _read(instance, "api_base_url") or _read(instance, "azure_endpoint")
    if not isinstance(url, str) or not url:
        return {}
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return {}
    attributes: dict[str, AttributeValue] = {}
    if parts.hostname:
        attributes[SERVER_ADDRESS] = parts.hostname
    if port is not None:
        attributes[SERVER_PORT] = port
    return attributes


def _read(thing: Any, attribute: str) -> Any:
    """`thing.attribute`, or None when reading it fails: a third-party component's property may
    raise anything (a setting not configured yet), and its run must not fail for telemetry."""
    try:
        return getattr(thing, attribute, None)
    except Exception:
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _reply_meta(reply: Any) -> Mapping[str, Any]:
    return _mapping(_read(reply, "meta"))


def _tokens(usage: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _message_json(message: Any) -> dict[str, str]:
    role = _read(message, "role")
    role_value = _read(role, "value")  # a ChatRole's value
    text = _read(message, "text")
    return {
        "role": str((role if role_value is None else role_value) or "assistant"),
        "content": text if isinstance(text, str) else str(message),
    }


def _set_content(
    attributes: dict[str, AttributeValue], key: str, value: list[dict[str, str]], capture: content.ContentCapture
) -> None:
    text = capture.attribute(key, json.dumps(value, ensure_ascii=False))
    if text is not None:
        attributes[key] = text
