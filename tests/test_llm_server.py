"""The local OpenAI-compatible server, through real sockets and the real `openai` and haystack clients."""

from __future__ import annotations

import json
import random
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.dataclasses import ChatMessage, StreamingChunk
from haystack.utils import Secret

from hayscope.llm_server import (
    DEFAULT_MODEL,
    NO_CONTEXT_ANSWER,
    NOT_IN_CONTEXT_ANSWER,
    LatencyModel,
    LocalLLMServer,
    PortInUseError,
    compose_answer,
    count_tokens,
    response_model,
)

API_KEY = "sk-hayscope-test-0123456789abcdef"
DOCUMENTS = (
    "The Lighthouse of Alexandria stood on the island of Pharos. It guided ships into the harbour.",
    "At about 100 metres tall, the Lighthouse of Alexandria was among the tallest buildings of the ancient world.",
    "The Colossus of Rhodes was a bronze statue of the sun god Helios.",
)
TALL = DOCUMENTS[1]


def rag_prompt(question: str, documents: tuple[str, ...] = DOCUMENTS) -> str:
    """The demo's prompt, as its ChatPromptBuilder renders it."""
    context = "\n".join(f"    {document}\n" for document in documents)
    return (
        f"Given the following information, answer the question.\n\nContext:\n{context}\nQuestion: {question}\nAnswer:"
    )


PROMPT = rag_prompt("How tall was the Lighthouse of Alexandria?")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer(latency=LatencyModel.instant()) as running:
        yield running


@pytest.fixture
def client(server: LocalLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as sync_client:
        yield sync_client


def generator(server: LocalLLMServer, **kwargs: Any) -> OpenAIChatGenerator:
    return OpenAIChatGenerator(
        model="gpt-4o-mini", api_key=Secret.from_token(API_KEY), api_base_url=server.base_url, max_retries=0, **kwargs
    )


def post(server: LocalLLMServer, path: str, content: bytes | str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}{path}", content=content, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )


# --- answers -------------------------------------------------------------------------------------------


def test_answer_is_the_context_sentences_sharing_most_words_with_the_question() -> None:
    answer = compose_answer(PROMPT)
    assert answer.startswith(TALL)
    # The runner-up shares "lighthouse" and "alexandria": one or two sentences, best first.
    assert answer == f"{TALL} The Lighthouse of Alexandria stood on the island of Pharos."
    assert compose_answer(PROMPT) == answer
    # Case and stop words do not count; plurals meet singulars.
    assert compose_answer(rag_prompt("WHAT WAS THE BRONZE STATUE?")) == DOCUMENTS[2]
    assert compose_answer(rag_prompt("Which statues were bronze?")) == DOCUMENTS[2]


def test_answer_without_context_or_without_overlap() -> None:
    assert compose_answer("Hello there") == NO_CONTEXT_ANSWER
    assert compose_answer(rag_prompt("Who was the architect?", documents=())) == NO_CONTEXT_ANSWER
    assert compose_answer(rag_prompt("Who painted the Mona Lisa?")) == NOT_IN_CONTEXT_ANSWER


def test_token_count_is_words_and_punctuation() -> None:
    assert count_tokens("At about 100 metres, it was tall.") == 9
    assert count_tokens("") == 0
    assert response_model("gpt-4o-mini") == "gpt-4o-mini-local"
    assert response_model("gpt-4o-mini-local") == "gpt-4o-mini-local"


# --- the openai client ---------------------------------------------------------------------------------


def test_openai_client_without_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini-local"
    assert abs(completion.created - time.time()) < 60
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == compose_answer(PROMPT)
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens(PROMPT)
    assert completion.usage.completion_tokens == count_tokens(choice.message.content)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_openai_client_streaming_token_by_token(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert {chunk.model for chunk in chunks} == {"gpt-4o-mini-local"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [chunk.choices[0].delta.content for chunk in chunks[1:-2]]
    answer = compose_answer(PROMPT)
    assert "".join(pieces) == answer
    assert len(pieces) == count_tokens(answer)  # one chunk per token
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == count_tokens("Be brief.") + count_tokens(PROMPT)
    assert chunks[-1].usage.completion_tokens == len(pieces)


def test_streaming_wire_format(server: LocalLLMServer) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    response = post(server, "/chat/completions", json.dumps(body))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    # No usage asked for: no usage chunk, and no "usage" key on the chunks.
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in payload for payload in payloads)


async def test_async_openai_client(server: LocalLLMServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}]
        )
        assert completion.choices[0].message.content == compose_answer(PROMPT)
        assert completion.model == "gpt-4o-local"
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
        assert "".join(pieces) == compose_answer(PROMPT)


def test_content_as_a_list_of_parts(client: openai.OpenAI) -> None:
    head, tail = PROMPT.split("Question:")
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": head},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": f"Question:{tail}"},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == compose_answer(PROMPT)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens(PROMPT)


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_token_limit_cuts_the_answer(client: openai.OpenAI, limit: str) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], **{limit: 4}
    )
    assert completion.choices[0].message.content == "At about 100 metres"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True, **{limit: 4}
    )
    chunks = list(stream)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "At about 100 metres"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_models_lists_the_models_asked_for() -> None:
    with LocalLLMServer(latency=LatencyModel.instant()) as server:
        with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
            assert [model.id for model in client.models.list()] == [DEFAULT_MODEL]
            for name in ("my-model", "gpt-4o", "my-model"):
                client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
            assert [model.id for model in client.models.list()] == ["my-model", "gpt-4o"]


# --- haystack's OpenAIChatGenerator --------------------------------------------------------------------


def test_haystack_generator_run(server: LocalLLMServer) -> None:
    result = generator(server).run(messages=[ChatMessage.from_user(PROMPT)])
    reply = result["replies"][0]
    assert TALL in reply.text
    assert reply.meta["model"] == "gpt-4o-mini-local"
    assert reply.meta["finish_reason"] == "stop"
    assert reply.meta["usage"]["prompt_tokens"] == count_tokens(PROMPT)
    assert reply.meta["usage"]["completion_tokens"] == count_tokens(reply.text)


async def test_haystack_generator_run_async(server: LocalLLMServer) -> None:
    result = await generator(server).run_async(messages=[ChatMessage.from_user(PROMPT)])
    reply = result["replies"][0]
    assert TALL in reply.text
    assert reply.meta["model"] == "gpt-4o-mini-local"
    assert reply.meta["usage"]["prompt_tokens"] == count_tokens(PROMPT)
    assert reply.meta["usage"]["completion_tokens"] == count_tokens(reply.text)


def test_haystack_generator_streaming_callback(server: LocalLLMServer) -> None:
    chunks: list[StreamingChunk] = []
    llm = generator(server, generation_kwargs={"stream_options": {"include_usage": True}})
    reply = llm.run(messages=[ChatMessage.from_user(PROMPT)], streaming_callback=chunks.append)["replies"][0]
    assert TALL in reply.text
    assert "".join(chunk.content for chunk in chunks) == reply.text
    assert sum(1 for chunk in chunks if chunk.content) == count_tokens(reply.text)
    assert reply.meta["model"] == "gpt-4o-mini-local"
    assert reply.meta["usage"]["prompt_tokens"] == count_tokens(PROMPT)
    assert reply.meta["usage"]["completion_tokens"] == count_tokens(reply.text)


async def test_haystack_generator_async_streaming_callback(server: LocalLLMServer) -> None:
    chunks: list[StreamingChunk] = []

    async def collect(chunk: StreamingChunk) -> None:
        chunks.append(chunk)

    llm = generator(server, generation_kwargs={"stream_options": {"include_usage": True}})
    result = await llm.run_async(messages=[ChatMessage.from_user(PROMPT)], streaming_callback=collect)
    reply = result["replies"][0]
    assert TALL in reply.text
    assert "".join(chunk.content for chunk in chunks) == reply.text
    assert reply.meta["usage"]["completion_tokens"] == count_tokens(reply.text)


def test_haystack_generator_max_tokens(server: LocalLLMServer) -> None:
    llm = generator(server, generation_kwargs={"max_completion_tokens": 4})
    reply = llm.run(messages=[ChatMessage.from_user(PROMPT)])["replies"][0]
    assert reply.text == "At about 100 metres"
    assert reply.meta["finish_reason"] == "length"
    assert reply.meta["usage"]["completion_tokens"] == 4


async def test_the_server_never_runs_on_the_callers_loop(server: LocalLLMServer) -> None:
    # A blocking client call inside a coroutine holds this loop until the reply comes: it can only
    # come because the server answers from its own thread and loop.
    assert threading.current_thread() is threading.main_thread()
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    assert completion.choices[0].message.content == compose_answer(PROMPT)


# --- errors --------------------------------------------------------------------------------------------


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"", None, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
        (b"[1, 2]", None, "the request body is a JSON array"),
        (b'{"model": "gpt-4o-mini"}', "messages", "'messages' is missing"),
        (b'{"model": "gpt-4o-mini", "messages": []}', "messages", "'messages' is empty"),
        (b'{"model": "gpt-4o-mini", "messages": "hello"}', "messages", "'messages' is a JSON string"),
        (b'{"model": "gpt-4o-mini", "messages": {"role": "user"}}', "messages", "'messages' is a JSON object"),
        (b'{"messages": ["hello"]}', "messages[0]", "messages[0] must be an object with a 'role' string"),
        (
            b'{"messages": [{"role": "user", "content": 3}]}',
            "messages[0].content",
            "messages[0].content is a JSON number",
        ),
        (
            b'{"messages": [{"role": "user", "content": ["hi"]}]}',
            "messages[0].content[0]",
            "give content parts as objects",
        ),
        (b'{"messages": [{"role": "user", "content": "hi"}], "model": ""}', "model", "give a model name"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens", "1 or more"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream", "give true or false"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', "n", "set n=1"),
    ],
)
def test_bad_requests_get_400_in_the_openai_shape(
    server: LocalLLMServer, body: bytes, param: str | None, fragment: str
) -> None:
    response = post(server, "/chat/completions", body)
    assert response.status_code == 400
    error = error_of(response)
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_openai_client_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert raised.value.status_code == 400
    assert "'messages' is empty" in raised.value.message


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("POST", "/completions", 404), ("GET", "/chat/completions", 405)],
)
def test_unknown_paths(server: LocalLLMServer, method: str, path: str, status: int) -> None:
    response = httpx.request(method, f"{server.base_url}{path}?key={API_KEY}", timeout=10)
    assert response.status_code == status
    error = error_of(response)
    assert f"{method} /v1{path};" in error["message"]
    assert "POST /v1/chat/completions" in error["message"]
    assert API_KEY not in response.text


def test_openai_client_raises_not_found(server: LocalLLMServer) -> None:
    with openai.OpenAI(base_url=f"{server.base_url}/elsewhere", api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_the_api_key_is_never_echoed_or_logged(
    server: LocalLLMServer, client: openai.OpenAI, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG")
    texts = [post(server, "/chat/completions", body).text for body in (b"{", b"{}", b'{"messages": 1}')]
    texts.append(httpx.get(f"{server.base_url}/unknown", headers={"Authorization": f"Bearer {API_KEY}"}).text)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    out, err = capfd.readouterr()
    for text in (*texts, caplog.text, out, err):
        assert API_KEY not in text
        assert "Bearer" not in text


# --- latency -------------------------------------------------------------------------------------------


def test_latency_sampling_matches_median_and_p95() -> None:
    model = LatencyModel(median_seconds=0.35, p95_seconds=1.2, per_token_seconds=0.012)
    rng = random.Random(20240718)
    draws = [model.first_token_seconds(rng) for _ in range(20_000)]
    assert statistics.median(draws) == pytest.approx(0.35, rel=0.03)
    assert statistics.quantiles(draws, n=20)[18] == pytest.approx(1.2, rel=0.05)
    assert min(draws) > 0
    # Seeded: the same seed draws the same times.
    again = random.Random(20240718)
    assert [model.first_token_seconds(again) for _ in range(5)] == draws[:5]


def test_constant_and_instant_latency() -> None:
    rng = random.Random(1)
    assert LatencyModel(median_seconds=0.2, p95_seconds=0.2).first_token_seconds(rng) == pytest.approx(0.2)
    state = rng.getstate()
    assert LatencyModel.instant().first_token_seconds(rng) == 0.0
    assert rng.getstate() == state
    assert LatencyModel.instant() == LatencyModel(0, 0, 0)


def test_a_request_takes_at_least_the_drawn_latency() -> None:
    latency = LatencyModel(median_seconds=0.05, p95_seconds=0.15, per_token_seconds=0.004)
    expected = random.Random(7)  # the server draws from random.Random(seed), one draw per request
    answer = compose_answer(PROMPT)
    tokens = count_tokens(answer)
    with LocalLLMServer(latency=latency, seed=7) as server:
        with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
            first_token = latency.first_token_seconds(expected)
            started = time.perf_counter()
            completion = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
            )
            elapsed = time.perf_counter() - started
            assert completion.choices[0].message.content == answer
            assert elapsed >= first_token + latency.per_token_seconds * (tokens - 1)

            first_token = latency.first_token_seconds(expected)
            started = time.perf_counter()
            arrivals = []
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.perf_counter() - started)
            assert len(arrivals) == tokens
            assert arrivals[0] >= first_token
            assert arrivals[-1] >= first_token + latency.per_token_seconds * (tokens - 1)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"median_seconds": -0.1}, ["median_seconds=-0.1 is negative", "0 or more"]),
        ({"per_token_seconds": -1}, ["per_token_seconds=-1 is negative"]),
        ({"p95_seconds": float("nan")}, ["p95_seconds=nan is not a number", "finite"]),
        ({"median_seconds": float("inf")}, ["median_seconds=inf is not a number"]),
        ({"median_seconds": "0.3"}, ["median_seconds='0.3' is not a number"]),
        ({"median_seconds": True}, ["median_seconds=True is not a number"]),
        (
            {"median_seconds": 0.5, "p95_seconds": 0.2},
            ["p95_seconds=0.2 is below median_seconds=0.5", "p95_seconds >= 0.5"],
        ),
        ({"median_seconds": 0, "p95_seconds": 1.2}, ["median_seconds=0 with p95_seconds=1.2", "median_seconds > 0"]),
    ],
)
def test_latency_model_validation(kwargs: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ValueError) as raised:
        LatencyModel(**kwargs)
    for fragment in fragments:
        assert fragment in str(raised.value)


# --- lifecycle -----------------------------------------------------------------------------------------


def test_port_in_use_names_the_port_and_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError) as raised:
            LocalLLMServer(port=port).start()
    assert f"port {port} on 127.0.0.1 is already in use" in str(raised.value)
    assert "port=0" in str(raised.value)
    assert isinstance(raised.value, OSError)


def test_a_second_server_on_the_same_port() -> None:
    with LocalLLMServer(latency=LatencyModel.instant()) as first:
        with pytest.raises(PortInUseError, match=f"port {first.port} "):
            LocalLLMServer(port=first.port).start()


def test_stop_is_idempotent_and_frees_the_port() -> None:
    threads_before = set(threading.enumerate())
    server = LocalLLMServer(latency=LatencyModel.instant())
    server.stop()  # never started: nothing to do
    assert server.start() is server
    assert server.start() is server  # already running: nothing to do
    port = server.port
    assert server.base_url == f"http://127.0.0.1:{port}/v1"
    assert httpx.get(f"{server.base_url}/models", timeout=10).status_code == 200
    server.stop()
    server.stop()
    assert set(threading.enumerate()) <= threads_before  # the server's thread has ended
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    with LocalLLMServer(port=port, latency=LatencyModel.instant()) as again:
        assert again.port == port


def test_stop_during_an_answer_ends_it_promptly() -> None:
    # One token a minute: once the first token has arrived, the server is certainly mid-answer.
    server = LocalLLMServer(latency=LatencyModel(median_seconds=0.001, p95_seconds=0.001, per_token_seconds=60))
    with server, openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        chunks = iter(
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPT}], stream=True)
        )
        assert next(chunks).choices[0].delta.role == "assistant"
        assert next(chunks).choices[0].delta.content == "At"
        started = time.perf_counter()
        server.stop()
        assert time.perf_counter() - started < 5
        with pytest.raises(openai.APIConnectionError):
            list(chunks)


def test_context_manager_and_restart() -> None:
    server = LocalLLMServer(latency=LatencyModel.instant())
    with server as running:
        assert running is server
        assert httpx.get(f"{server.base_url}/models", timeout=10).status_code == 200
    with pytest.raises(RuntimeError, match="call start"):
        _ = server.base_url
    with server:
        assert httpx.get(f"{server.base_url}/models", timeout=10).status_code == 200


@pytest.mark.parametrize("port", [-1, 65536, 1.5, True])
def test_bad_port(port: Any) -> None:
    with pytest.raises(ValueError, match="is not a TCP port: give 1 to 65535, or 0 for a free one"):
        LocalLLMServer(port=port)
