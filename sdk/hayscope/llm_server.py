"""A local OpenAI-compatible chat server, so that `hayscope demo` runs with no API key and no network.

`LocalLLMServer` serves `POST /v1/chat/completions` (a JSON reply, or server-sent events with
`"stream": true`) and `GET /v1/models` on a loopback port. It runs in a daemon thread with its own
event loop: the caller's loop, whose lag the demo measures, never runs the server's work. Point
haystack's `OpenAIChatGenerator` or the `openai` client at `server.base_url`.

Answers are extractive and deterministic: from the last user message's "Context:" section, the one
or two sentences sharing most words with its "Question:" (case and stop words ignored). Timing
follows a `LatencyModel`: a lognormal time to first token, then a fixed delay per further token.

Conventions, chosen to stay simple and deterministic:
- token counts come from a regex tokenizer (each run of word characters, and each punctuation mark,
  is one token). It approximates a real model's tokenizer; `usage` and the streamed chunks agree
  with it exactly (one content chunk per token);
- the response's `model` is the requested name with `-local` appended (`gpt-4o-mini` ->
  `gpt-4o-mini-local`): like the real API it differs from the requested alias, and spans and
  metrics show that the local server answered.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import random
import re
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import structlog
from aiohttp import web

__all__ = [
    "DEFAULT_MODEL",
    "LatencyModel",
    "LocalLLMServer",
    "NOT_IN_CONTEXT_ANSWER",
    "NO_CONTEXT_ANSWER",
    "PortInUseError",
    "compose_answer",
    "count_tokens",
    "response_model",
]

DEFAULT_MODEL: Final = "gpt-4o-mini"
NO_CONTEXT_ANSWER: Final = "The prompt gives no context to answer from."
NOT_IN_CONTEXT_ANSWER: Final = "The context does not say."

# A lognormal's 95th percentile lies this many standard deviations (of its log) above its median.
_Z95: Final = statistics.NormalDist().inv_cdf(0.95)
_TOKEN = re.compile(r"\w+|[^\w\s]")
# A token with the whitespace before it: the pieces of a text join back into the text.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
# Greedy up to the last "Question:", so a document that happens to contain the word does not cut the context.
_PROMPT = re.compile(
    r"\bcontext:(?P<context>.*)\bquestion:(?P<question>.*?)(?:\banswer:|\Z)", re.IGNORECASE | re.DOTALL
)
_STOP_WORDS: Final = frozenset(
    """a about an and any are as at be been but by can could did do does for from had has have how i if in
    into is it its me my no not of on or our so than that the their them then there these they this those
    to us was we were what when where which who whom whose why will with would you your""".split()
)
_BODY_EXAMPLE: Final = f'{{"model": "{DEFAULT_MODEL}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
_JSON_TYPES: Final = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}

logger = structlog.get_logger("hayscope.llm_server")


@dataclass(frozen=True)
class LatencyModel:
    """How long an answer takes: a time to first token, then `per_token_seconds` per further token.

    The time to first token is lognormal, as with hosted models (most answers start quickly, a long
    tail starts slowly), fixed by its median and 95th percentile. `p95_seconds == median_seconds`
    makes it constant; `LatencyModel.instant()` makes the server answer at once.
    """

    median_seconds: float = 0.35
    p95_seconds: float = 1.2
    per_token_seconds: float = 0.012

    def __post_init__(self) -> None:
        for name in ("median_seconds", "p95_seconds", "per_token_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
                raise ValueError(f"{name}={value!r} is not a number of seconds: give a finite number, e.g. {name}=0.5")
            if value < 0:
                raise ValueError(f"{name}={value!r} is negative: give 0 or more seconds, e.g. {name}=0.5")
        if self.p95_seconds < self.median_seconds:
            raise ValueError(
                f"p95_seconds={self.p95_seconds!r} is below median_seconds={self.median_seconds!r}: "
                f"a 95th percentile cannot be under the median; give p95_seconds >= {self.median_seconds!r}"
            )
        if self.median_seconds == 0 and self.p95_seconds > 0:
            raise ValueError(
                f"median_seconds=0 with p95_seconds={self.p95_seconds!r}: a lognormal time needs a median above 0; "
                "give median_seconds > 0, or p95_seconds=0 as well for no wait"
            )

    @classmethod
    def instant(cls) -> LatencyModel:
        """No wait at all: for tests."""
        return cls(median_seconds=0.0, p95_seconds=0.0, per_token_seconds=0.0)

    def first_token_seconds(self, rng: random.Random) -> float:
        """One draw of the time to first token. Takes nothing from `rng` when the median is 0."""
        if self.median_seconds == 0:
            return 0.0
        sigma = math.log(self.p95_seconds / self.median_seconds) / _Z95
        return rng.lognormvariate(math.log(self.median_seconds), sigma)


def count_tokens(text: str) -> int:
    """Tokens in `text` by the server's approximate tokenizer: word runs and punctuation marks."""
    return len(_TOKEN.findall(text))


def response_model(model: str) -> str:
    """The `model` a reply names for a requested model: `gpt-4o-mini` -> `gpt-4o-mini-local`."""
    return model if model.endswith("-local") else f"{model}-local"


def _content_words(text: str) -> set[str]:
    words = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 2 or word in _STOP_WORDS:
            continue
        # A crude plural fold, so that "columns" in a question meets "column" in the context.
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.add(word)
    return words


def compose_answer(prompt: str) -> str:
    """The answer the server gives to `prompt`, the text of the last user message.

    With a "Context: ... Question: ..." prompt: the one or two context sentences sharing most words
    with the question, best first (ties: the earlier sentence). Otherwise a short fixed sentence.
    """
    sections = _PROMPT.search(prompt)
    if sections is None:
        return NO_CONTEXT_ANSWER
    sentences = [
        sentence
        for line in sections["context"].splitlines()
        for sentence in _SENTENCE_BREAK.split(line.strip())
        if sentence
    ]
    if not sentences:
        return NO_CONTEXT_ANSWER
    wanted = _content_words(sections["question"])
    scores = [len(wanted & _content_words(sentence)) for sentence in sentences]
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    chosen = [sentences[i] for i in ranked[:2] if scores[i] > 0]
    return " ".join(chosen) if chosen else NOT_IN_CONTEXT_ANSWER


class PortInUseError(OSError):
    """The port asked for is taken by another listener."""


class _RequestError(Exception):
    """A request the server refuses, answered in the OpenAI error shape."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def _error_response(
    status: int, message: str, *, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


@web.middleware
async def _openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure answers in the OpenAI error shape, which clients turn into typed exceptions."""
    try:
        return await handler(request)
    except _RequestError as error:
        return _error_response(error.status, error.message, param=error.param, code=error.code)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        # Only the method and path: the query string or headers could carry a credential.
        message = (
            f"{error.reason}: {request.method} {request.path}; "
            "this server serves POST /v1/chat/completions and GET /v1/models"
        )
        return _error_response(error.status, message, code="unknown_url" if error.status == 404 else None)
    except Exception:
        logger.exception("local LLM server: request failed", method=request.method, path=request.path)
        return _error_response(
            500, "the local LLM server failed on this request; its log has the details", kind="server_error"
        )


@dataclass(frozen=True)
class _ChatRequest:
    model: str
    prompt: str
    prompt_tokens: int
    stream: bool
    include_usage: bool
    max_tokens: int | None


def _message_text(index: int, message: Any) -> str:
    where = f"messages[{index}]"
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise _RequestError(
            f'{where} must be an object with a \'role\' string, e.g. {{"role": "user", "content": "Hello"}}',
            param=where,
        )
    content = message.get("content")
    if content is None:  # e.g. an assistant turn that only called tools
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for number, part in enumerate(content):
            if not isinstance(part, dict):
                raise _RequestError(
                    f"{where}.content[{number}] is a JSON {_json_type(part)}: give content parts as objects, "
                    'e.g. {"type": "text", "text": "Hello"}',
                    param=f"{where}.content[{number}]",
                )
            if part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise _RequestError(
                        f"{where}.content[{number}] is a text part without a 'text' string: add one, "
                        'e.g. {"type": "text", "text": "Hello"}',
                        param=f"{where}.content[{number}].text",
                    )
                texts.append(part["text"])
        # Other parts (images, audio) carry no text to answer from.
        return "\n".join(texts)
    raise _RequestError(
        f"{where}.content is a JSON {_json_type(content)}: give a string or an array of content parts",
        param=f"{where}.content",
    )


def _read_chat_request(body: Any) -> _ChatRequest:
    if not isinstance(body, dict):
        raise _RequestError(f"the request body is a JSON {_json_type(body)}: send an object, e.g. {_BODY_EXAMPLE}")
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model.strip():
        raise _RequestError(
            f"'model' is {json.dumps(model)}: give a model name, e.g. \"{DEFAULT_MODEL}\"", param="model"
        )
    messages = body.get("messages")
    example = '[{"role": "user", "content": "Hello"}]'
    if messages is None:
        raise _RequestError(
            f"'messages' is missing: send a non-empty array of messages, e.g. {example}",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise _RequestError(
            f"'messages' is a JSON {_json_type(messages)}: send a non-empty array of messages, e.g. {example}",
            param="messages",
        )
    if not messages:
        raise _RequestError(f"'messages' is empty: send at least one message, e.g. {example}", param="messages")
    texts = [_message_text(index, message) for index, message in enumerate(messages)]
    user_texts = [text for message, text in zip(messages, texts, strict=True) if message["role"] == "user"]
    prompt = user_texts[-1] if user_texts else texts[-1]

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _RequestError(f"'stream' is {json.dumps(stream)}: give true or false", param="stream")
    options = body.get("stream_options")
    include_usage = bool(stream) and isinstance(options, dict) and options.get("include_usage") is True
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise _RequestError(
            f"'n' is {json.dumps(n)}: this server gives one choice per request; set n=1 or leave it out", param="n"
        )
    limits = []
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _RequestError(f"'{name}' is {json.dumps(value)}: give a whole number of 1 or more", param=name)
        limits.append(value)
    return _ChatRequest(
        model=model,
        prompt=prompt,
        prompt_tokens=sum(count_tokens(text) for text in texts),
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=min(limits) if limits else None,
    )


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class LocalLLMServer:
    """An OpenAI-compatible chat server on a loopback port, in a thread of its own.

    `start()` (or `with LocalLLMServer() as server:`) binds and serves; `stop()` shuts it down.
    `latency=None` means `LatencyModel()`, a realistic default; `seed` makes the drawn times to
    first token repeat: the n-th request after `start()` waits the n-th draw of `random.Random(seed)`.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, latency: LatencyModel | None = None, seed: int | None = None
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port={port!r} is not a TCP port: give 1 to 65535, or 0 for a free one")
        self.host = host
        self.latency = latency if latency is not None else LatencyModel()
        self.seed = seed
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._rng = random.Random(seed)
        self._models: list[str] = []  # requested names, first seen first; touched only by the server's thread
        self._started_at = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(
                "the local LLM server is not running: call start() first, or use `with LocalLLMServer() as server:`"
            )
        return self._port

    @property
    def base_url(self) -> str:
        """What `OpenAIChatGenerator(api_base_url=...)` and `openai.OpenAI(base_url=...)` take."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # a wildcard is reached through loopback
        host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> Self:
        """Binds and serves; returns once the server accepts connections. Does nothing if already running."""
        if self._thread is not None:
            return self
        self._rng = random.Random(self.seed)
        ready = threading.Event()
        failure: list[Exception] = []
        thread = threading.Thread(target=self._run, args=(ready, failure), name="hayscope-llm-server", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            error = failure[0]
            if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {self._requested_port} on {self.host} is already in use: stop what listens there, "
                    "or pass port=0 to pick a free port"
                ) from error
            raise error
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stops serving, frees the port and joins the thread. Safe to call more than once."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop_requested is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop_requested.set)
            except RuntimeError:  # the loop has already ended
                pass
        thread.join()
        self._loop = self._stop_requested = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[Exception]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except Exception as error:
            if ready.is_set():
                logger.exception("local LLM server: stopped with an error")
            else:  # start() is waiting: it raises the error in the caller's thread
                failure.append(error)
        finally:
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(middlewares=[_openai_errors])
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        # No access log: the demo's output stays clean, and no request detail is ever written out.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port).start()
            self._port = runner.addresses[0][1]
            self._loop = asyncio.get_running_loop()
            self._stop_requested = asyncio.Event()
            self._started_at = int(time.time())
            ready.set()
            await self._stop_requested.wait()
        finally:
            await runner.cleanup()

    async def _list_models(self, request: web.Request) -> web.Response:
        names = self._models or [DEFAULT_MODEL]
        data = [{"id": name, "object": "model", "created": self._started_at, "owned_by": "hayscope"} for name in names]
        return web.json_response({"object": "list", "data": data})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError as error:
            detail = (
                f"{error.msg} at line {error.lineno} column {error.colno}"
                if isinstance(error, json.JSONDecodeError)
                else "not UTF-8"
            )
            raise _RequestError(
                f"the request body is not valid JSON ({detail}): send a JSON object, e.g. {_BODY_EXAMPLE}"
            ) from None
        chat = _read_chat_request(body)
        if chat.model not in self._models:
            self._models.append(chat.model)

        pieces = _PIECE.findall(compose_answer(chat.prompt))
        finish_reason = "stop"
        if chat.max_tokens is not None and len(pieces) > chat.max_tokens:
            pieces, finish_reason = pieces[: chat.max_tokens], "length"
        usage = {
            "prompt_tokens": chat.prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": chat.prompt_tokens + len(pieces),
        }
        first_token = self.latency.first_token_seconds(self._rng)
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": response_model(chat.model),
        }
        if chat.stream:
            return await self._stream(
                request, head, pieces, finish_reason, usage if chat.include_usage else None, first_token
            )

        # Without streaming the whole answer arrives at once, when its last token would have.
        await asyncio.sleep(first_token + self.latency.per_token_seconds * max(len(pieces) - 1, 0))
        message = {"role": "assistant", "content": "".join(pieces), "refusal": None}
        return web.json_response(
            {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage,
            }
        )

    async def _stream(
        self,
        request: web.Request,
        head: dict[str, Any],
        pieces: list[str],
        finish_reason: str,
        usage: dict[str, int] | None,
        first_token: float,
    ) -> web.StreamResponse:
        # As the real API does when usage is asked for: "usage": null on every chunk but the last.
        extra: dict[str, Any] = {"usage": None} if usage is not None else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})

        await asyncio.sleep(first_token)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            await response.write(chunk({"role": "assistant", "content": ""}))
            for number, piece in enumerate(pieces):
                if number:
                    await asyncio.sleep(self.latency.per_token_seconds)
                await response.write(chunk({"content": piece}))
            await response.write(chunk({}, finish_reason))
            if usage is not None:
                await response.write(_sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:  # the client left mid-answer: nothing more to send
            pass
        return response
