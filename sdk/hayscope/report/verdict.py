"""The one-line verdict: which component the time went to, and the one thing to change first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from hayscope import semconv

if TYPE_CHECKING:
    from hayscope.report.model import ComponentStats

# A thread component queued for a worker more than this share of its time: the pool is too small.
QUEUE_SHARE_LIMIT: Final = 0.20
# A component waited to start (concurrency_limit, or a busy loop) more than this share of its time.
SCHEDULE_SHARE_LIMIT: Final = 0.20
# Blocked-loop seconds past which a component is named: the loop monitor only counts stalls past its
# threshold (0.1 s by default), so any count is real; this skips a lone borderline stall.
BLOCKED_SECONDS_LIMIT: Final = 0.05
# A share-based cause that cost less than this share of all component time is not worth naming.
NOISE_SHARE: Final = 0.05

NOTHING_RECORDED: Final = "nothing recorded: no component execution was traced"


def percent(fraction: float) -> str:
    return f"{round(fraction * 100)}%"


def verdict(components: Sequence[ComponentStats], gc_blocked_seconds: float = 0.0) -> str:
    """The largest contributor and the most significant actionable cause, in one line.

    1. The head names the component with the largest `share_of_run_time`.
    2. The causes:
       - a component that blocked the event loop more than BLOCKED_SECONDS_LIMIT: move the blocking
         call to a thread or await an async API;
       - garbage collections that stopped the loop (`gc_blocked_seconds`, counted under `(gc)`) more
         than BLOCKED_SECONDS_LIMIT: freeze what startup made (`gc.freeze()`), which full
         collections then skip;
       - a thread component queued for a worker more than QUEUE_SHARE_LIMIT of its time: raise
         max_workers or give it its own executor;
       - a component that waited to start (held back by the concurrency limit, or by an event loop
         busy elsewhere) more than SCHEDULE_SHARE_LIMIT of its time: raise concurrency_limit, or
         check the loop lag.
       Share-based causes that cost less than NOISE_SHARE of all component time are noise.
    3. The most significant cause: a blocked loop comes first, the component (or the collector)
       that blocked it longest. While the loop is blocked nothing else on it runs, so a block also
       shows up as every other run's schedule wait; its true cost is its seconds times all that was
       in flight. Otherwise the queue or schedule wait that cost the most seconds in total.
    The verdict is "<head>; <cause>", the head and a note that nothing stands out, or
    NOTHING_RECORDED without executions.
    """
    measured = [c for c in components if c.executions > 0]
    if not measured:
        return NOTHING_RECORDED
    several_pipelines = len({c.pipeline for c in measured}) > 1

    def label(c: ComponentStats) -> str:
        return f"{c.pipeline}/{c.name}" if several_pipelines else c.name

    top = max(measured, key=lambda c: (c.share_of_run_time, c.total_seconds))
    head = f"{label(top)}: {percent(top.share_of_run_time)} of run time"
    floor = NOISE_SHARE * sum(c.total_seconds for c in measured)
    causes: list[tuple[int, float, str]] = []  # (precedence, seconds, text)
    if gc_blocked_seconds > BLOCKED_SECONDS_LIMIT:
        causes.append(
            (
                1,
                gc_blocked_seconds,
                f"garbage collection stopped the event loop for {gc_blocked_seconds:.2f} s: call gc.freeze() "
                "once startup is done (models loaded, pipelines built), so that full collections skip all it made",
            )
        )
    for c in measured:
        if c.blocked_seconds > BLOCKED_SECONDS_LIMIT:
            causes.append(
                (
                    1,
                    c.blocked_seconds,
                    f"{label(c)} blocked the event loop for {c.blocked_seconds:.2f} s: "
                    "move the blocking call to a thread or await an async API",
                )
            )
        if c.mode == semconv.MODE_THREAD and c.queued_share > QUEUE_SHARE_LIMIT and c.queue_wait_total_seconds >= floor:
            causes.append(
                (
                    0,
                    c.queue_wait_total_seconds,
                    f"{label(c)} waited {percent(c.queued_share)} of its time for a worker thread: "
                    "raise max_workers or give it its own executor",
                )
            )
        if c.schedule_wait_share > SCHEDULE_SHARE_LIMIT and c.schedule_wait_total_seconds >= floor:
            causes.append(
                (
                    0,
                    c.schedule_wait_total_seconds,
                    f"{label(c)} waited {percent(c.schedule_wait_share)} of its time to start: "
                    "raise concurrency_limit, or check the event loop lag",
                )
            )
    if not causes:
        return f"{head}; no waits or loop stalls stand out: speed up {label(top)} itself"
    return f"{head}; {max(causes, key=lambda cause: cause[:2])[2]}"
