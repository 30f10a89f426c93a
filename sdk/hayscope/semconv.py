"""Span names and attribute keys, in one place.

The `haystack.*` keys are the ones haystack's own tracer writes and that Datadog, Langfuse and
others key on; `thread.*` and `error.type` are OpenTelemetry semantic conventions.
"""

from __future__ import annotations

from typing import Final

PIPELINE_SPAN: Final = "haystack.pipeline.run"
COMPONENT_SPAN: Final = "haystack.component.run"

PIPELINE_NAME: Final = "haystack.pipeline.name"
PIPELINE_EXECUTION_MODE: Final = "haystack.pipeline.execution_mode"
PIPELINE_MAX_RUNS_PER_COMPONENT: Final = "haystack.pipeline.max_runs_per_component"
PIPELINE_CONCURRENCY_LIMIT: Final = "haystack.pipeline.concurrency_limit"

COMPONENT_NAME: Final = "haystack.component.name"
COMPONENT_TYPE: Final = "haystack.component.type"
COMPONENT_VISITS: Final = "haystack.component.visits"
# async (awaited run_async) | thread (sync run offloaded to a worker) | sync (the sync run() path)
COMPONENT_EXECUTION_MODE: Final = "haystack.component.execution_mode"

# ok | error | cancelled: the same value as the `status` metric label.
STATUS: Final = "hayscope.status"

THREAD_ID: Final = "thread.id"
THREAD_NAME: Final = "thread.name"
ERROR_TYPE: Final = "error.type"

# What haystack's own tracer records as content; it reaches a span only through content tracing.
HAYSTACK_CONTENT_TAGS: Final = frozenset(
    {
        "haystack.pipeline.input_data",
        "haystack.pipeline.output_data",
        "haystack.component.input",
        "haystack.component.output",
    }
)

MODE_ASYNC: Final = "async"
MODE_THREAD: Final = "thread"
MODE_SYNC: Final = "sync"

STATUS_OK: Final = "ok"
STATUS_ERROR: Final = "error"
STATUS_CANCELLED: Final = "cancelled"


def error_type(error: BaseException) -> str:
    """The `error.type` of an exception: the class of what actually failed.

    haystack wraps a component's exception in `PipelineRuntimeError ... from error`; the cause is
    what the reader of a span wants to see.
    """
    cause = error.__cause__ if error.__cause__ is not None else error
    cls = type(cause)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
