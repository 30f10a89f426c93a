"""TracedAsyncPipeline is a drop-in haystack.Pipeline: same results, same errors, on every run path.

Every topology is a `build(new)` function: `new(**pipeline_kwargs)` makes either a plain
`haystack.Pipeline` or a `TracedAsyncPipeline`, and `build` adds the same real components to it.
Each case runs through `run`, `run_async`, `run_async_generator` (every partial output, in order) and
`stream` (every chunk, then `handle.result`) on both, and the outcomes, results or raised errors,
must be equal. For the traced run, the component spans must match the component executions haystack
itself reports (counted with a recording haystack tracer on the reference run).
"""

import asyncio
import contextlib
import copy
import dataclasses
import gc
import inspect
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from haystack import Document, Pipeline, component, tracing
from haystack.components.builders import ChatPromptBuilder, PromptBuilder
from haystack.components.joiners import BranchJoiner, DocumentJoiner, ListJoiner, StringJoiner
from haystack.components.routers import ConditionalRouter
from haystack.core.component.types import GreedyVariadic
from haystack.core.errors import (
    BreakpointException,
    DeserializationError,
    PipelineMaxComponentRuns,
    PipelineRuntimeError,
)
from haystack.core.super_component import SuperComponent
from haystack.dataclasses import ChatMessage, StreamingCallbackT, StreamingChunk
from haystack.dataclasses.breakpoints import Breakpoint, PipelineSnapshot
from haystack.utils.base_serialization import _deserialize_value_with_schema, _serialize_value_with_schema

from hayscope import TracedAsyncPipeline
from hayscope.haystack_bridge import HaystackTracerBridge
from hayscope.testing import TelemetryCapture

# Components below are serialized as f"{__name__}.<Class>"; haystack only deserializes allowed modules.
ALLOWED_MODULES = [__name__]
PIPELINE_SPAN = "haystack.pipeline.run"
COMPONENT_SPAN = "haystack.component.run"
TRACED_NAME = "dropin"
METADATA = {"owner": "test_dropin"}


# --------------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------------


@component
class Add:
    """Sync only: `run_async` offloads it to a worker thread."""

    def __init__(self, amount: int = 1, delay: float = 0.0) -> None:
        self.amount = amount
        self.delay = delay

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        if self.delay:
            time.sleep(self.delay)
        return {"value": value + self.amount}


@component
class AsyncAdd:
    """Has `run_async`: awaited on the loop."""

    def __init__(self, amount: int = 1, delay: float = 0.0) -> None:
        self.amount = amount
        self.delay = delay

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value + self.amount}

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        return {"value": value + self.amount}


@component
class Render:
    """Sync only: int -> str."""

    def __init__(self, label: str = "v") -> None:
        self.label = label

    @component.output_types(text=str)
    def run(self, value: int) -> dict[str, Any]:
        return {"text": f"{self.label}={value}"}


@component
class Shout:
    """Async: upper-cases its text after `delay` seconds."""

    def __init__(self, delay: float = 0.0, suffix: str = "") -> None:
        self.delay = delay
        self.suffix = suffix

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        return {"text": text.upper() + self.suffix}

    @component.output_types(text=str)
    async def run_async(self, text: str) -> dict[str, Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        return {"text": text.upper() + self.suffix}


@component
class SlowTag:
    """Sync only: appends `suffix` after blocking `delay` seconds."""

    def __init__(self, delay: float = 0.0, suffix: str = "") -> None:
        self.delay = delay
        self.suffix = suffix

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        if self.delay:
            time.sleep(self.delay)
        return {"text": text + self.suffix}


@component
class Retrieve:
    """Sync only: two scored documents for the query."""

    def __init__(self, label: str, score: float, delay: float = 0.0) -> None:
        self.label = label
        self.score = score
        self.delay = delay

    def _documents(self, query: str) -> dict[str, Any]:
        return {
            "documents": [
                Document(content=f"{self.label}: {query} #{i}", score=self.score - i / 10, meta={"by": self.label})
                for i in range(2)
            ]
        }

    @component.output_types(documents=list[Document])
    def run(self, query: str) -> dict[str, Any]:
        if self.delay:
            time.sleep(self.delay)
        return self._documents(query)


@component
class AsyncRetrieve(Retrieve):
    @component.output_types(documents=list[Document])
    async def run_async(self, query: str) -> dict[str, Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._documents(query)


@component
class Wrap:
    """Sync only: puts its value in a one-element list (for ListJoiner)."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    @component.output_types(values=list[str])
    def run(self, text: str) -> dict[str, Any]:
        return {"values": [self.tag + text]}


@component
class SumAll:
    """A greedy-variadic socket: runs as soon as any sender delivered."""

    @component.output_types(value=int, seen=list[int])
    def run(self, values: GreedyVariadic[int]) -> dict[str, Any]:
        seen = list(values)
        return {"value": sum(seen), "seen": seen}


@component
class Fail:
    """Sync only: raises ValueError(message)."""

    def __init__(self, message: str = "boom") -> None:
        self.message = message

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise ValueError(self.message)


@component
class AsyncFail(Fail):
    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        raise ValueError(self.message)


@component
class FailText:
    """Async: raises RuntimeError(message) on a str input (a failing fan-out branch)."""

    def __init__(self, message: str = "branch failed") -> None:
        self.message = message

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        raise RuntimeError(self.message)

    @component.output_types(text=str)
    async def run_async(self, text: str) -> dict[str, Any]:
        raise RuntimeError(self.message)


@component
class NotADict:
    """Sync only: returns a list instead of a dict."""

    @component.output_types(value=int)
    def run(self, value: int) -> Any:
        return [value]


@component
class AsyncNotADict(NotADict):
    @component.output_types(value=int)
    async def run_async(self, value: int) -> Any:
        return [value]


@component
class WrongKey:
    """Sync only: returns a key it never declared."""

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value, "undeclared": 1}


@component
class Streamer:
    """A fake chat model: streams each word of the last message as a `StreamingChunk`, then replies."""

    def __init__(self, prefix: str = "echo:") -> None:
        self.prefix = prefix

    def _chunks(self, messages: list[ChatMessage]) -> list[StreamingChunk]:
        words = [self.prefix, *(messages[-1].text or "").split()]
        return [
            StreamingChunk(content=word if i == 0 else " " + word, index=0, start=i == 0, meta={"i": i})
            for i, word in enumerate(words)
        ]

    def _reply(self, chunks: list[StreamingChunk]) -> dict[str, Any]:
        return {"replies": [ChatMessage.from_assistant("".join(c.content for c in chunks))]}

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage], streaming_callback: StreamingCallbackT | None = None) -> dict[str, Any]:
        chunks = self._chunks(messages)
        for chunk in chunks:
            if streaming_callback is not None:
                streaming_callback(chunk)
        return self._reply(chunks)

    @component.output_types(replies=list[ChatMessage])
    async def run_async(
        self, messages: list[ChatMessage], streaming_callback: StreamingCallbackT | None = None
    ) -> dict[str, Any]:
        chunks = self._chunks(messages)
        for chunk in chunks:
            await asyncio.sleep(0)
            if streaming_callback is not None:
                result = streaming_callback(chunk)
                if inspect.isawaitable(result):
                    await result
        return self._reply(chunks)


# --------------------------------------------------------------------------------------------------
# Topologies: build(new) -> pipeline, where new(**kwargs) makes a Pipeline of the class under test.
# --------------------------------------------------------------------------------------------------


NewPipeline = Callable[..., Pipeline]


def linear(new: NewPipeline) -> Pipeline:
    p = new(metadata=METADATA)
    p.add_component("start", AsyncAdd(1))
    p.add_component("mid", Add(10))
    p.add_component("render", Render("total"))
    p.add_component("prompt", PromptBuilder(template="Result: {{ text }}!", required_variables=["text"]))
    p.add_component("shout", Shout())
    p.connect("start.value", "mid.value")
    p.connect("mid.value", "render.value")
    p.connect("render.text", "prompt.text")
    p.connect("prompt.prompt", "shout.text")
    return p


def fanout_documents(new: NewPipeline) -> Pipeline:
    """One query fanned out to three retrievers (sync and async), joined on a Variadic socket."""
    p = new(metadata=METADATA)
    p.add_component("query", PromptBuilder(template="about {{ topic }}", required_variables=["topic"]))
    p.add_component("r_a", Retrieve("a", 0.9))
    p.add_component("r_b", AsyncRetrieve("b", 0.75, delay=0.05))
    p.add_component("r_c", Retrieve("c", 0.5, delay=0.1))
    p.add_component("join", DocumentJoiner())
    for name in ("r_a", "r_b", "r_c"):
        p.connect("query.prompt", f"{name}.query")
        p.connect(f"{name}.documents", "join.documents")
    return p


def fanout_strings(new: NewPipeline) -> Pipeline:
    """Fan-out to three branches joined by StringJoiner: the joined order is the order they finish in."""
    p = new(metadata=METADATA)
    p.add_component("source", Render("n"))
    p.add_component("b1", Shout(delay=0.1, suffix="-1"))
    p.add_component("b2", SlowTag(delay=0.05, suffix="-2"))
    p.add_component("b3", Shout(delay=0.0, suffix="-3"))
    p.add_component("join", StringJoiner())
    for name in ("b1", "b2", "b3"):
        p.connect("source.text", f"{name}.text")
        p.connect(f"{name}.text", "join.strings")
    return p


def fanout_lists(new: NewPipeline) -> Pipeline:
    """Fan-out to three branches, each wrapped in a list and joined by ListJoiner."""
    p = new(metadata=METADATA)
    p.add_component("source", Render("n"))
    p.add_component("b1", Shout(delay=0.1, suffix="-1"))
    p.add_component("b2", SlowTag(delay=0.0, suffix="-2"))
    p.add_component("b3", Shout(delay=0.05, suffix="-3"))
    p.add_component("join", ListJoiner(list[str]))
    for name in ("b1", "b2", "b3"):
        p.add_component(f"w{name}", Wrap(tag=name + ":"))
        p.connect("source.text", f"{name}.text")
        p.connect(f"{name}.text", f"w{name}.text")
        p.connect(f"w{name}.values", "join.values")
    return p


LOOP_ROUTES = [
    {"condition": "{{ value < limit }}", "output": "{{ value }}", "output_name": "again", "output_type": int},
    {"condition": "{{ value >= limit }}", "output": "{{ value }}", "output_name": "done", "output_type": int},
]


def loop(new: NewPipeline, max_runs: int = 100) -> Pipeline:
    """joiner -> inc -> router, routed back to the joiner until value >= limit."""
    p = new(metadata=METADATA, max_runs_per_component=max_runs)
    p.add_component("joiner", BranchJoiner(int))
    p.add_component("inc", AsyncAdd(1))
    p.add_component("router", ConditionalRouter(routes=LOOP_ROUTES))
    p.add_component("after", Add(1000))
    p.connect("joiner.value", "inc.value")
    p.connect("inc.value", "router.value")
    p.connect("router.again", "joiner.value")
    p.connect("router.done", "after.value")
    return p


def loop_limited(new: NewPipeline) -> Pipeline:
    return loop(new, max_runs=3)


def greedy(new: NewPipeline) -> Pipeline:
    """Two senders into a GreedyVariadic socket: it runs as soon as one of them delivered."""
    p = new(metadata=METADATA)
    p.add_component("src", Add(0))
    p.add_component("fast", AsyncAdd(1))
    p.add_component("slow", AsyncAdd(2, delay=0.1))
    p.add_component("sum", SumAll())
    p.add_component("tail", Add(100))
    p.connect("src.value", "fast.value")
    p.connect("src.value", "slow.value")
    p.connect("fast.value", "sum.values")
    p.connect("slow.value", "sum.values")
    p.connect("sum.value", "tail.value")
    return p


def _inner(new: NewPipeline) -> Pipeline:
    inner = new(name="inner")
    inner.add_component("inner_prompt", PromptBuilder(template="Q: {{ query }}", required_variables=["query"]))
    inner.add_component("inner_shout", Shout(suffix="?"))
    inner.connect("inner_prompt.prompt", "inner_shout.text")
    return inner


def _with_super_component(new: NewPipeline, inner: Pipeline) -> Pipeline:
    p = new(metadata=METADATA)
    p.add_component("pre", Render("topic"))
    p.add_component(
        "sc",
        SuperComponent(
            pipeline=inner,
            input_mapping={"query": ["inner_prompt.query"]},
            output_mapping={"inner_shout.text": "text", "inner_prompt.prompt": "prompt"},
        ),
    )
    p.add_component("post", SlowTag(suffix="!"))
    p.connect("pre.text", "sc.query")
    p.connect("sc.text", "post.text")
    return p


def super_component(new: NewPipeline) -> Pipeline:
    """A SuperComponent wrapping a plain haystack Pipeline, inside the pipeline under test."""
    return _with_super_component(new, _inner(_haystack_new))


def nested_traced(new: NewPipeline) -> Pipeline:
    """The same, the inner pipeline being of the class under test too (a traced run inside a traced run)."""
    return _with_super_component(new, _inner(new))


def fail_sync(new: NewPipeline) -> Pipeline:
    p = new()
    p.add_component("start", AsyncAdd(1))
    p.add_component("boom", Fail("sync component exploded"))
    p.add_component("after", Add(1))
    p.connect("start.value", "boom.value")
    p.connect("boom.value", "after.value")
    return p


def fail_async(new: NewPipeline) -> Pipeline:
    p = new()
    p.add_component("start", Add(1))
    p.add_component("boom", AsyncFail("async component exploded"))
    p.add_component("after", Add(1))
    p.connect("start.value", "boom.value")
    p.connect("boom.value", "after.value")
    return p


def fail_in_fanout(new: NewPipeline) -> Pipeline:
    """A branch fails while its siblings (one in a thread, one awaited) are still running."""
    p = new()
    p.add_component("source", Render("n"))
    p.add_component("b1", SlowTag(delay=0.05, suffix="-1"))
    p.add_component("b2", FailText("second branch failed"))
    p.add_component("b3", Shout(delay=0.05, suffix="-3"))
    p.add_component("join", StringJoiner())
    for name in ("b1", "b2", "b3"):
        p.connect("source.text", f"{name}.text")
        p.connect(f"{name}.text", "join.strings")
    return p


def invalid_output_sync(new: NewPipeline) -> Pipeline:
    p = new()
    p.add_component("start", AsyncAdd(1))
    p.add_component("bad", NotADict())
    p.connect("start.value", "bad.value")
    return p


def invalid_output_async(new: NewPipeline) -> Pipeline:
    p = new()
    p.add_component("start", Add(1))
    p.add_component("bad", AsyncNotADict())
    p.connect("start.value", "bad.value")
    return p


def undeclared_output(new: NewPipeline) -> Pipeline:
    p = new()
    p.add_component("start", Add(1))
    p.add_component("bad", WrongKey())
    p.connect("start.value", "bad.value")
    return p


def streaming(new: NewPipeline) -> Pipeline:
    p = new(metadata=METADATA)
    p.add_component("prompt", ChatPromptBuilder(template=[ChatMessage.from_user("Tell me about {{ topic }}")]))
    p.add_component("llm", Streamer())
    p.add_component("post", ListJoiner(list[ChatMessage]))
    p.connect("prompt.prompt", "llm.messages")
    p.connect("llm.replies", "post.values")
    return p


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


PATHS = ("run", "run_async", "run_async_generator", "stream")
ASYNC_PATHS = PATHS[1:]


def _value(sink: list[Any]) -> dict[str, Any]:
    return {"start": {"value": 1}}


def _sync_sink(sink: list[Any]) -> Callable[[StreamingChunk], None]:
    def callback(chunk: StreamingChunk) -> None:
        sink.append(chunk)

    return callback


def _async_sink(sink: list[Any]) -> Callable[[StreamingChunk], Any]:
    async def callback(chunk: StreamingChunk) -> None:
        sink.append(chunk)

    return callback


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[NewPipeline], Pipeline]
    data: Callable[[list[Any]], dict[str, Any]]  # gets the list a user streaming callback appends to
    include_outputs_from: frozenset[str] | None = None
    concurrency_limit: int = 4
    paths: tuple[str, ...] = PATHS
    visits: dict[str, int] = field(default_factory=dict)  # executions the topology must reach, where known
    serializable: bool = True


CASES = [
    Case("linear", linear, _value, visits={"start": 1, "mid": 1, "render": 1, "prompt": 1, "shout": 1}),
    Case(
        "linear-include-outputs-from",
        linear,
        _value,
        include_outputs_from=frozenset({"start", "render", "prompt", "shout"}),
    ),
    Case("linear-flat-inputs", linear, lambda sink: {"value": 5}),
    Case("fanout-documents", fanout_documents, lambda sink: {"query": {"topic": "otters"}}),
    Case(
        "fanout-documents-include",
        fanout_documents,
        lambda sink: {"query": {"topic": "otters"}},
        include_outputs_from=frozenset({"r_a", "r_b", "r_c", "query"}),
    ),
    Case("fanout-strings", fanout_strings, lambda sink: {"source": {"value": 7}}),
    Case("fanout-strings-concurrency-1", fanout_strings, lambda sink: {"source": {"value": 7}}, concurrency_limit=1),
    Case("fanout-strings-concurrency-3", fanout_strings, lambda sink: {"source": {"value": 7}}, concurrency_limit=3),
    Case("fanout-lists-concurrency-1", fanout_lists, lambda sink: {"source": {"value": 3}}, concurrency_limit=1),
    Case("fanout-lists-concurrency-3", fanout_lists, lambda sink: {"source": {"value": 3}}, concurrency_limit=3),
    Case(
        "loop",
        loop,
        lambda sink: {"joiner": {"value": 0}, "router": {"limit": 5}},
        include_outputs_from=frozenset({"inc"}),
        visits={"joiner": 5, "inc": 5, "router": 5, "after": 1},
    ),
    Case("loop-exceeds-max-runs", loop_limited, lambda sink: {"joiner": {"value": 0}, "router": {"limit": 10}}),
    Case("greedy-variadic", greedy, lambda sink: {"src": {"value": 1}}, include_outputs_from=frozenset({"sum"})),
    Case(
        "super-component",
        super_component,
        lambda sink: {"pre": {"value": 42}},
        include_outputs_from=frozenset({"sc"}),
        visits={"pre": 1, "sc": 1, "post": 1},
    ),
    Case(
        "super-component-nested-traced",
        nested_traced,
        lambda sink: {"pre": {"value": 42}},
        include_outputs_from=frozenset({"sc"}),
        serializable=False,
    ),
    Case("raises-sync", fail_sync, _value),
    Case("raises-async", fail_async, _value),
    Case("raises-in-fanout", fail_in_fanout, lambda sink: {"source": {"value": 1}}),
    Case("invalid-output-sync", invalid_output_sync, _value),
    Case("invalid-output-async", invalid_output_async, _value),
    Case("undeclared-output-key", undeclared_output, _value),
    Case("invalid-input-unknown-component", linear, lambda sink: {"nope": {"value": 1}}),
    Case("invalid-input-unknown-socket", linear, lambda sink: {"start": {"valu": 1}}),
    Case("invalid-input-wrong-shape", linear, lambda sink: {"start": 1}),
    Case("concurrency-limit-0", fanout_strings, lambda sink: {"source": {"value": 1}}, concurrency_limit=0),
    Case("streaming", streaming, lambda sink: {"prompt": {"topic": "otters"}}, visits={"llm": 1}),
    Case(
        "streaming-user-callback",
        streaming,
        lambda sink: {"prompt": {"topic": "Italy"}, "llm": {"streaming_callback": _sync_sink(sink)}},
        include_outputs_from=frozenset({"llm"}),
    ),
    Case(
        "streaming-async-user-callback",
        streaming,
        lambda sink: {"prompt": {"topic": "Rome"}, "llm": {"streaming_callback": _async_sink(sink)}},
        paths=ASYNC_PATHS,  # the sync path cannot await an async callback
    ),
]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _haystack_new(**kwargs: Any) -> Pipeline:
    kwargs.pop("name", None)
    return Pipeline(**kwargs)


def _traced_new(capture: TelemetryCapture) -> NewPipeline:
    def new(name: str = TRACED_NAME, **kwargs: Any) -> Pipeline:
        return TracedAsyncPipeline(name=name, **capture.pipeline_kwargs, **kwargs)

    return new


@dataclass
class Outcome:
    result: Any = None
    partials: list[dict[str, Any]] | None = None  # run_async_generator only
    chunks: list[StreamingChunk] | None = None  # stream only: what the handle yielded
    callback_chunks: list[Any] = field(default_factory=list)  # what the user's streaming callback received
    error: dict[str, Any] | None = None


def describe_error(error: BaseException) -> dict[str, Any]:
    described: dict[str, Any] = {"type": type(error), "str": str(error)}
    cause = error.__cause__
    if cause is not None:
        described["cause"] = (type(cause), str(cause))
    if isinstance(error, PipelineRuntimeError):
        described["component_name"] = error.component_name
        described["component_type"] = error.component_type
    if isinstance(error, BreakpointException):
        described["component"] = error.component
        described["break_point"] = error.break_point
    snapshot = getattr(error, "pipeline_snapshot", None)  # attached by the sync run path
    if snapshot is not None:
        described["snapshot"] = (
            snapshot.break_point,
            snapshot.pipeline_state,
            snapshot.ordered_component_names,
            snapshot.include_outputs_from,
            snapshot.original_input_data,
        )
    return described


def run_through(path: str, pipeline: Pipeline, case: Case) -> Outcome:
    """Runs `case` through one run path; returns what it returned (and yielded) or what it raised."""
    sink: list[Any] = []
    data = case.data(sink)
    include = set(case.include_outputs_from) if case.include_outputs_from is not None else None
    outcome = Outcome(callback_chunks=sink)
    limit = case.concurrency_limit

    async def generator() -> None:
        outcome.partials = []
        async for partial in pipeline.run_async_generator(data, include_outputs_from=include, concurrency_limit=limit):
            outcome.partials.append(partial)

    async def stream() -> dict[str, Any]:
        outcome.chunks = []
        handle = pipeline.stream(data, include_outputs_from=include, concurrency_limit=limit)
        async for chunk in handle:
            outcome.chunks.append(chunk)
        return handle.result

    # Several cases order concurrent branches by their delays (50 ms apart). A full collection in this
    # process takes ~100 ms and stalls the event loop mid-scheduling, which reorders them; keep it out.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if path == "run":
            outcome.result = pipeline.run(data, include_outputs_from=include)
        elif path == "run_async":
            outcome.result = asyncio.run(
                pipeline.run_async(data, include_outputs_from=include, concurrency_limit=limit)
            )
        elif path == "run_async_generator":
            asyncio.run(generator())
        elif path == "stream":
            outcome.result = asyncio.run(stream())
        else:
            raise AssertionError(path)
    except Exception as error:
        outcome.error = describe_error(error)
    finally:
        if gc_was_enabled:
            gc.enable()
    return outcome


class _RecordedSpan(tracing.Span):
    def __init__(self, operation_name: str, tags: dict[str, Any], parent: tracing.Span | None) -> None:
        self.operation_name = operation_name
        self.tags = dict(tags)
        self.parent = parent

    def set_tag(self, key: str, value: Any) -> None:
        self.tags[key] = value


class _ExecutionRecorder(tracing.Tracer):
    """A haystack tracer that remembers the spans haystack opens: one `haystack.component.run` per execution."""

    def __init__(self) -> None:
        self.spans: list[_RecordedSpan] = []

    @contextlib.contextmanager
    def trace(
        self, operation_name: str, tags: dict[str, Any] | None = None, parent_span: tracing.Span | None = None
    ) -> Iterator[tracing.Span]:
        span = _RecordedSpan(operation_name, tags or {}, parent_span)
        self.spans.append(span)
        yield span

    def current_span(self) -> tracing.Span | None:
        return None

    def executions(self) -> Counter[str]:
        """Component executions of the outermost pipeline run, by component name."""
        runs = [span for span in self.spans if span.operation_name == PIPELINE_SPAN]
        if not runs:
            return Counter()
        return Counter(
            span.tags["haystack.component.name"]
            for span in self.spans
            if span.operation_name == COMPONENT_SPAN and span.parent is runs[0]
        )


@contextlib.contextmanager
def recording_haystack_tracer() -> Iterator[_ExecutionRecorder]:
    recorder = _ExecutionRecorder()
    previous = tracing.tracer.actual_tracer
    tracing.tracer.actual_tracer = recorder
    try:
        yield recorder
    finally:
        tracing.tracer.actual_tracer = previous


def traced_executions(capture: TelemetryCapture, pipeline: Pipeline) -> Counter[str]:
    """Component spans of the one traced run, by component name; checks they all hang off its pipeline span."""
    spans = capture.spans()
    roots = [span for span in spans if span.name == f"{PIPELINE_SPAN} {TRACED_NAME}"]
    assert len(roots) == 1, [span.name for span in spans]
    root = roots[0]
    assert root.parent is None
    names = set(pipeline.graph.nodes)
    mine = [
        span
        for span in spans
        if span.name.startswith(COMPONENT_SPAN + " ") and span.name.removeprefix(COMPONENT_SPAN + " ") in names
    ]
    assert all(span.parent is not None and span.parent.span_id == root.context.span_id for span in mine), [
        (span.name, span.parent) for span in mine
    ]
    assert all(span.context.trace_id == root.context.trace_id for span in spans)
    return Counter(span.name.removeprefix(COMPONENT_SPAN + " ") for span in mine)


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


CASE_PATHS = [
    pytest.param(case, path, id=f"{case.id}-{path}") for case in CASES for path in PATHS if path in case.paths
]


def _reference(case: Case, path: str) -> tuple[Outcome, Counter[str]]:
    """What a plain haystack Pipeline does, and the component executions haystack's own tracer saw."""
    reference = case.build(_haystack_new)
    assert type(reference) is Pipeline
    with recording_haystack_tracer() as recorder:
        expected = run_through(path, reference, case)
    return expected, recorder.executions()


@pytest.mark.parametrize(("case", "path"), CASE_PATHS)
def test_same_outcome_as_haystack(case: Case, path: str, capture: TelemetryCapture) -> None:
    expected, executions = _reference(case, path)

    traced = case.build(_traced_new(capture))
    assert type(traced) is TracedAsyncPipeline
    capture.clear()
    actual = run_through(path, traced, case)

    assert actual == expected
    assert traced_executions(capture, traced) == executions
    for name, visits in case.visits.items():
        assert executions[name] == visits, (name, executions)


@pytest.mark.parametrize(("case", "path"), CASE_PATHS)
def test_same_outcome_with_haystack_tracing_enabled(case: Case, path: str, capture: TelemetryCapture) -> None:
    """With a real haystack tracer enabled (hayscope then bridges it), nothing changes for the caller either."""
    expected, executions = _reference(case, path)

    traced = case.build(_traced_new(capture))
    capture.clear()
    with recording_haystack_tracer() as recorder:
        actual = run_through(path, traced, case)
        assert isinstance(tracing.tracer.actual_tracer, HaystackTracerBridge)

    assert actual == expected
    assert traced_executions(capture, traced) == executions
    # hayscope's spans stood in for haystack's own pipeline and component spans of this run.
    outer = set(traced.graph.nodes)
    assert [
        span.tags.get("haystack.component.name")
        for span in recorder.spans
        if span.operation_name == COMPONENT_SPAN and span.tags.get("haystack.component.name") in outer
    ] == []


def test_cases_cover_what_they_claim() -> None:
    """Guards the table against silently turning into happy paths."""

    def outcome(case_id: str, path: str = "run_async") -> Outcome:
        case = next(case for case in CASES if case.id == case_id)
        return run_through(path, case.build(_haystack_new), case)

    assert outcome("loop").result == {"after": {"value": 1005}, "inc": {"value": 5}}
    assert len(outcome("loop", "run_async_generator").partials) == 7
    assert outcome("loop-exceeds-max-runs").error["type"] is PipelineMaxComponentRuns
    assert outcome("raises-sync").error["component_name"] == "boom"
    assert outcome("raises-async").error["cause"] == (ValueError, "async component exploded")
    assert outcome("raises-in-fanout").error["component_name"] == "b2"
    assert outcome("raises-sync", "run").error["snapshot"] is not None
    assert "invalid output" in outcome("invalid-output-async").error["str"]
    for case_id in ("invalid-input-unknown-component", "invalid-input-unknown-socket", "concurrency-limit-0"):
        assert outcome(case_id).error["type"] is ValueError, case_id
    # Concurrency changes the joined order (completion order), so the cases compare scheduling, not just values.
    assert outcome("fanout-strings-concurrency-1").result == {"join": {"strings": ["N=7-1", "n=7-2", "N=7-3"]}}
    assert outcome("fanout-strings-concurrency-3").result == {"join": {"strings": ["N=7-3", "n=7-2", "N=7-1"]}}
    assert outcome("fanout-lists-concurrency-3").result == {"join": {"values": ["b2:n=3-2", "b3:N=3-3", "b1:N=3-1"]}}
    assert outcome("greedy-variadic").result["sum"] == {"value": 3, "seen": [3]}
    streamed = outcome("streaming-user-callback", "stream")
    assert streamed.chunks == streamed.callback_chunks
    assert "".join(c.content for c in streamed.chunks) == "echo: Tell me about Italy"
    assert len(outcome("streaming", "stream").chunks) == 5
    assert outcome("super-component").result == {
        "sc": {"text": "Q: TOPIC=42?", "prompt": "Q: topic=42"},
        "post": {"text": "Q: TOPIC=42?!"},
    }


@pytest.mark.parametrize("path", PATHS)
def test_nested_traced_run_nests_under_its_component_span(path: str, capture: TelemetryCapture) -> None:
    case = next(case for case in CASES if case.id == "super-component-nested-traced")
    traced = case.build(_traced_new(capture))
    assert run_through(path, traced, case).error is None
    spans = {span.name: span for span in capture.spans()}
    inner_root = spans[f"{PIPELINE_SPAN} inner"]
    assert inner_root.parent.span_id == spans[f"{COMPONENT_SPAN} sc"].context.span_id
    for name in ("inner_prompt", "inner_shout"):
        assert spans[f"{COMPONENT_SPAN} {name}"].parent.span_id == inner_root.context.span_id


def _loop_to_breakpoint(pipeline: Pipeline) -> Outcome:
    """The sync run path with a breakpoint on the second visit of `inc` (only `run` takes break_point)."""
    outcome = Outcome()
    try:
        outcome.result = pipeline.run(
            {"joiner": {"value": 0}, "router": {"limit": 5}}, break_point=Breakpoint("inc", visit_count=2)
        )
    except Exception as error:
        outcome.error = describe_error(error)
    return outcome


def test_breakpoint_same_as_haystack(capture: TelemetryCapture) -> None:
    reference = loop(_haystack_new)
    with recording_haystack_tracer() as recorder:
        expected = _loop_to_breakpoint(reference)
    actual = _loop_to_breakpoint(loop(_traced_new(capture)))

    assert actual == expected
    assert expected.error["type"] is BreakpointException
    assert expected.error["snapshot"][1].component_visits == {"after": 0, "inc": 2, "joiner": 3, "router": 2}
    # haystack raises the breakpoint before it opens the component's span: `inc` ran twice.
    assert recorder.executions() == {"joiner": 3, "inc": 2, "router": 2}


def test_breakpoint_opens_no_component_span(capture: TelemetryCapture) -> None:
    with recording_haystack_tracer() as recorder:
        _loop_to_breakpoint(loop(_haystack_new))
    traced = loop(_traced_new(capture))
    _loop_to_breakpoint(traced)

    assert traced_executions(capture, traced) == recorder.executions()


def test_resuming_from_a_breakpoint_snapshot_same_as_haystack(capture: TelemetryCapture) -> None:
    def stop(pipeline: Pipeline) -> PipelineSnapshot:
        with pytest.raises(BreakpointException) as stopped:
            pipeline.run({"joiner": {"value": 0}, "router": {"limit": 5}}, break_point=Breakpoint("inc", visit_count=2))
        return stopped.value.pipeline_snapshot

    reference = loop(_haystack_new)
    snapshot = stop(reference)
    with recording_haystack_tracer() as recorder:
        expected = reference.run({}, pipeline_snapshot=snapshot)
    traced = loop(_traced_new(capture))
    snapshot = stop(traced)
    capture.clear()
    actual = traced.run({}, pipeline_snapshot=snapshot)

    assert actual == expected
    # the resumed run is a run of its own, with a span for each execution after the breakpoint
    assert traced_executions(capture, traced) == recorder.executions()
    assert recorder.executions()["inc"] >= 1


def _wrapped_and_joined(new: NewPipeline) -> Pipeline:
    p = new()
    p.add_component("join", ListJoiner(list[str]))
    for name in ("a", "b"):
        p.add_component(name, Wrap(tag=name + ":"))
        p.connect(f"{name}.values", "join.values")
    return p


def _in_the_legacy_format(snapshot: PipelineSnapshot) -> PipelineSnapshot:
    """The same snapshot as older haystack versions wrote it: inputs by socket, without their senders
    (`inputs_format` None), which haystack resumes through `_consume_component_inputs(is_resume=True)`."""
    state = snapshot.pipeline_state
    inputs = {
        name: {socket: [entry["value"] for entry in entries] for socket, entries in sockets.items()}
        for name, sockets in _deserialize_value_with_schema(state.inputs).items()
    }
    legacy = dataclasses.replace(state, inputs=_serialize_value_with_schema(inputs), inputs_format=None)
    return dataclasses.replace(snapshot, pipeline_state=legacy)


def test_resuming_from_a_legacy_snapshot_same_as_haystack(capture: TelemetryCapture) -> None:
    def resumed(pipeline: Pipeline) -> Any:
        with pytest.raises(BreakpointException) as stopped:
            pipeline.run({"a": {"text": "x"}, "b": {"text": "y"}}, break_point=Breakpoint("join", visit_count=0))
        return pipeline.run({}, pipeline_snapshot=_in_the_legacy_format(stopped.value.pipeline_snapshot))

    expected = resumed(_wrapped_and_joined(_haystack_new))
    assert expected == {"join": {"values": ["a:x", "b:y"]}}
    assert resumed(_wrapped_and_joined(_traced_new(capture))) == expected


@component
class RaiseStopIteration:
    """Sync only: raises StopIteration, which asyncio cannot put into a Future."""

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise StopIteration("stopped early")


@pytest.mark.xfail(
    strict=True,
    reason=(
        "haystack.Pipeline.run_async never finishes when a sync-only component raises StopIteration: "
        "asyncio.to_thread cannot set StopIteration on the awaiting Future (TypeError in the loop's "
        "callback), so the task waits forever. hayscope's worker passes it on as a RuntimeError with "
        "the same message, and the run raises PipelineRuntimeError."
    ),
)
def test_sync_component_raising_stop_iteration(capture: TelemetryCapture) -> None:
    def outcome(pipeline: Pipeline) -> Any:
        pipeline.add_component("stop", RaiseStopIteration())

        async def main() -> Any:
            return await asyncio.wait_for(pipeline.run_async({"stop": {"value": 1}}), timeout=1.0)

        try:
            return asyncio.run(main())
        except BaseException as error:  # noqa: BLE001 - TimeoutError on one side, PipelineRuntimeError on the other
            return describe_error(error)

    assert outcome(_traced_new(capture)()) == outcome(Pipeline())


def _canonical(serialized: dict[str, Any]) -> dict[str, Any]:
    """`to_dict()` without the order of components and connections, which YAML (sort_keys) does not keep."""
    return {
        **serialized,
        "components": dict(sorted(serialized["components"].items())),
        "connections": sorted(serialized["connections"], key=lambda c: (c["sender"], c["receiver"])),
    }


@pytest.mark.parametrize("case", [case for case in CASES if case.serializable], ids=lambda case: case.id)
def test_serialization_round_trip(case: Case, capture: TelemetryCapture) -> None:
    reference = case.build(_haystack_new)
    traced = case.build(_traced_new(capture))

    assert traced.to_dict() == reference.to_dict()
    assert traced.dumps() == reference.dumps()

    loaded = TracedAsyncPipeline.loads(traced.dumps(), allowed_modules=ALLOWED_MODULES)
    assert type(loaded) is TracedAsyncPipeline
    assert _canonical(loaded.to_dict()) == _canonical(traced.to_dict())
    # haystack's __eq__ compares to_dict() including the order of connections, which dumps() (sorted YAML keys)
    # does not keep: equal exactly when a plain haystack Pipeline is equal to its own loads(dumps()).
    haystack_equal = Pipeline.loads(reference.dumps(), allowed_modules=ALLOWED_MODULES) == reference
    assert (loaded == traced) is haystack_equal
    assert (traced == loaded) is haystack_equal
    # Loading again from what was loaded is a fixed point, and equal by haystack's __eq__.
    assert TracedAsyncPipeline.loads(loaded.dumps(), allowed_modules=ALLOWED_MODULES) == loaded

    from_reference = TracedAsyncPipeline.from_dict(reference.to_dict(), allowed_modules=ALLOWED_MODULES)
    assert type(from_reference) is TracedAsyncPipeline
    assert from_reference == traced
    assert traced == from_reference

    back = Pipeline.from_dict(traced.to_dict(), allowed_modules=ALLOWED_MODULES)
    assert type(back) is Pipeline
    assert back == reference


def test_round_trip_is_exactly_equal_when_haystack_is(capture: TelemetryCapture) -> None:
    """`TracedAsyncPipeline.loads(p.dumps()) == p` for a pipeline whose plain twin round-trips exactly."""
    reference = fanout_documents(_haystack_new)  # components added in sorted order: haystack round-trips it
    assert Pipeline.loads(reference.dumps(), allowed_modules=ALLOWED_MODULES) == reference
    traced = fanout_documents(_traced_new(capture))
    loaded = TracedAsyncPipeline.loads(traced.dumps(), allowed_modules=ALLOWED_MODULES)
    assert type(loaded) is TracedAsyncPipeline
    assert loaded == traced


def test_serialization_needs_the_module_allowed(capture: TelemetryCapture) -> None:
    traced = linear(_traced_new(capture))
    with pytest.raises(DeserializationError, match=__name__):
        TracedAsyncPipeline.loads(traced.dumps())


def test_loaded_pipeline_runs_like_haystack(capture: TelemetryCapture) -> None:
    """A TracedAsyncPipeline loaded from haystack YAML returns what haystack returns."""
    case = next(case for case in CASES if case.id == "loop")
    reference = case.build(_haystack_new)
    loaded = TracedAsyncPipeline.loads(reference.dumps(), allowed_modules=ALLOWED_MODULES)
    # from_dict passes only haystack's own constructor arguments: name, provider and registry come after.
    loaded.configure_telemetry(name=TRACED_NAME, **capture.pipeline_kwargs)
    for path in PATHS:
        capture.clear()
        assert run_through(path, loaded, case) == run_through(path, reference, case), path
        assert traced_executions(capture, loaded)["joiner"] == 5


def test_concurrent_runs_of_one_instance(capture: TelemetryCapture) -> None:
    """Several run_async calls on the same instance at once return what haystack returns for each."""
    reference = fanout_strings(_haystack_new)
    traced = fanout_strings(_traced_new(capture))

    async def many(pipeline: Pipeline) -> list[dict[str, Any]]:
        limits = (1, 3, 4)
        return await asyncio.gather(
            *(pipeline.run_async({"source": {"value": i}}, concurrency_limit=limit) for i, limit in enumerate(limits))
        )

    gc.disable()  # see run_through
    try:
        assert asyncio.run(many(traced)) == asyncio.run(many(reference))
    finally:
        gc.enable()
    roots = capture.spans_named(f"{PIPELINE_SPAN} {TRACED_NAME}")
    assert len(roots) == 3
    by_root = Counter(
        span.parent.span_id for span in capture.spans() if span.name.startswith(COMPONENT_SPAN + " ") and span.parent
    )
    assert by_root == {root.context.span_id: 5 for root in roots}


@pytest.mark.parametrize("ran_before", [False, True])
def test_a_deep_copy_runs_like_its_original_and_reports_to_the_same_places(capture, ran_before) -> None:
    original = capture.pipeline(name="copied")
    original.add_component("first", AsyncAdd(1))
    original.add_component("second", Add(10))
    original.connect("first.value", "second.value")
    if ran_before:
        assert original.run({"first": {"value": 0}}) == {"second": {"value": 11}}

    copied = copy.deepcopy(original)

    assert copied is not original and copied == original
    assert copied.get_component("first") is not original.get_component("first")
    capture.clear()
    assert asyncio.run(copied.run_async({"first": {"value": 1}})) == {"second": {"value": 12}}
    assert sorted(span.name for span in capture.spans()) == [
        "haystack.component.run first",
        "haystack.component.run second",
        "haystack.pipeline.run copied",
    ]
    assert copy.copy(original).run({"first": {"value": 2}}) == {"second": {"value": 13}}


def test_copies_and_a_reconfigured_pipeline_share_the_pool_max_workers_made(capture) -> None:
    original = capture.pipeline(name="pooled", max_workers=1)
    original.add_component("slow", Add(1))
    copied = copy.deepcopy(original)

    async def both() -> list[Any]:
        return await asyncio.gather(
            original.run_async({"slow": {"value": 0}}), copied.run_async({"slow": {"value": 1}})
        )

    assert asyncio.run(both()) == [{"slow": {"value": 1}}, {"slow": {"value": 2}}]
    original.configure_telemetry(name="renamed")  # new telemetry, the same pool
    assert asyncio.run(original.run_async({"slow": {"value": 2}})) == {"slow": {"value": 3}}

    spans = capture.spans_named("haystack.component.run slow")
    assert len(spans) == 3 and len({span.attributes["thread.id"] for span in spans}) == 1  # one worker for all
    assert spans[0].attributes["thread.name"].startswith("hayscope-pooled")
    assert capture.sample("hayscope_executor_workers_max", executor="pooled") == 1


def test_a_loaded_pipeline_gets_its_pool_back_through_configure_telemetry(capture) -> None:
    original = capture.pipeline(name="loaded", max_workers=3)
    original.add_component("slow", Add(1))

    loaded = TracedAsyncPipeline.loads(original.dumps(), allowed_modules=ALLOWED_MODULES).configure_telemetry(
        name="loaded", max_workers=2, **capture.pipeline_kwargs
    )

    assert asyncio.run(loaded.run_async({"slow": {"value": 1}})) == {"slow": {"value": 2}}
    assert capture.sample("hayscope_executor_workers_max", executor="loaded") == 2
    (span,) = capture.spans_named("haystack.component.run slow")
    assert span.attributes["thread.name"].startswith("hayscope-loaded")
    with pytest.raises(ValueError, match="pass executor= or max_workers=, not both"):
        loaded.configure_telemetry(name="renamed", executor=ThreadPoolExecutor(1), max_workers=2)
    assert loaded.name == "loaded"  # a refused call changes nothing


def test_a_pickled_pipeline_runs_like_its_original(capture) -> None:
    original = capture.pipeline(name="pickled", max_workers=2)
    original.add_component("first", AsyncAdd(1))
    original.add_component("second", Add(10))
    original.connect("first.value", "second.value")
    assert asyncio.run(original.run_async({"first": {"value": 0}})) == {"second": {"value": 11}}

    loaded = pickle.loads(pickle.dumps(original))

    assert loaded == original and loaded.name == "pickled"
    capture.clear()
    loaded.configure_telemetry(**capture.pipeline_kwargs)  # the live objects telemetry goes to stay behind
    assert asyncio.run(loaded.run_async({"first": {"value": 1}})) == {"second": {"value": 12}}
    assert len(capture.spans_named("haystack.pipeline.run pickled")) == 1
    assert capture.sample("hayscope_executor_workers_max", executor="pickled") == 4  # two pools of 2
