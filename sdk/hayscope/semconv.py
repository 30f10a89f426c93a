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

# Where the time of one execution went, in seconds (see timing.py and the metric catalogue).
RUN_TIME: Final = "hayscope.component.run_time"
QUEUE_WAIT: Final = "hayscope.component.queue_wait"
LOOP_HELD: Final = "hayscope.component.loop_held"
SCHEDULE_WAIT: Final = "hayscope.component.schedule_wait"
# Child spans that make a long wait a named bar in a waterfall.
# Scheduled and not yet started: held back by concurrency_limit, or by an event loop busy elsewhere.
SCHEDULE_WAIT_SPAN: Final = "waiting to start"
QUEUE_WAIT_SPAN: Final = "queued for a worker thread"
# The span event a component's execution gets when its code blocked the event loop.
EVENT_LOOP_BLOCKED_EVENT: Final = "event_loop.blocked"
EVENT_LOOP_BLOCKED_SECONDS: Final = "event_loop.blocked.seconds"
EVENT_LOOP_BLOCKED_FRAMES: Final = "event_loop.blocked.frames"
# A garbage-collection pause that blocked the loop during a component's step (not the component's doing).
EVENT_LOOP_BLOCKED_BY_GC_EVENT: Final = "event_loop.blocked_by_gc"
GC_GENERATION: Final = "gc.generation"

# ok | error | cancelled: the same value as the `status` metric label.
STATUS: Final = "hayscope.status"

THREAD_ID: Final = "thread.id"
THREAD_NAME: Final = "thread.name"
ERROR_TYPE: Final = "error.type"

# Content: the keys haystack's own tracer uses, on spans only when content capture is on (content.py).
PIPELINE_INPUT_DATA: Final = "haystack.pipeline.input_data"
PIPELINE_OUTPUT_DATA: Final = "haystack.pipeline.output_data"
COMPONENT_INPUT: Final = "haystack.component.input"
COMPONENT_OUTPUT: Final = "haystack.component.output"
HAYSTACK_CONTENT_TAGS: Final = frozenset({PIPELINE_INPUT_DATA, PIPELINE_OUTPUT_DATA, COMPONENT_INPUT, COMPONENT_OUTPUT})

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
