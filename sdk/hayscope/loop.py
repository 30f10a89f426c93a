"""`LoopLagMonitor`: how late the event loop runs, and whose code held it when it stalled.

A heartbeat callback on the loop asks to run every `interval` seconds and records how late it ran
into `asyncio_event_loop_lag_seconds`. A watchdog thread samples the loop thread's stack once per
stall: as soon as a component's step has held the loop for more than `threshold` (timing.py says
since when), or else once the heartbeat is overdue by more than `threshold`. (The heartbeat alone
would notice a short stall late or not at all: a 0.15 s step that starts just after a beat makes the
next one 0.05 s late.) The stall is then attributed:
- to the component whose step held the loop (timing.timed_on_loop times every step, so the blocked
  seconds are exact): `hayscope_event_loop_blocked_seconds_total{pipeline,component}`, a span event
  `event_loop.blocked` with the sampled frames, one structlog warning;
- to the garbage collector for the time collections took in the late window (`component="(gc)"`,
  see gc_pauses.py), and to `(none)` for the rest, with the frames the watchdog saw.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import ClassVar

import structlog
from prometheus_client import CollectorRegistry

from hayscope import gc_pauses
from hayscope.gc_pauses import GcPauses
from hayscope.metrics import GC_COMPONENT, NO_COMPONENT, register_metrics
from hayscope.timing import DEFAULT_BLOCK_THRESHOLD, RUNNING_ON_THREAD, BlockingSettings

__all__ = ["LoopLagMonitor", "stack_summary"]

DEFAULT_INTERVAL = 0.1
DEFAULT_THRESHOLD = DEFAULT_BLOCK_THRESHOLD
MAX_FRAMES = 8
# How long after a step passes the threshold the watchdog looks at it (waking takes a moment)
SAMPLE_MARGIN = 0.002
NO_BLOCK = (0.0, None)

logger = structlog.get_logger("hayscope.loop")


def stack_summary(frame: FrameType | None, limit: int = MAX_FRAMES) -> list[str]:
    """The innermost `limit` frames as 'file:line function', innermost first.

    The frames are another thread's: they are read in one short loop that reads no source file
    (reading one lets that thread run on, and return from the frames being read: CPython 3.11 can
    crash reading a frame that has returned meanwhile).
    """
    seen: list[tuple[str, int | None, str]] = []
    while frame is not None and len(seen) < limit:
        code = frame.f_code
        seen.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    return [f"{filename}:{line} {name}" for filename, line, name in seen]


def check_interval(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problem = "is not a number of seconds"
    elif not 0.001 <= value <= 60:
        problem = "is out of range"
    else:
        return float(value)
    raise ValueError(f"{name}={value!r} {problem}: give seconds from 0.001 to 60, e.g. {name}=0.1.")


class LoopLagMonitor:
    """Measures event-loop lag with a heartbeat and names what blocked the loop.

    Start it on a running loop with `start()` (and `stop()`), or `async with LoopLagMonitor():`.
    """

    # (loop id, metrics id) -> the monitor started on that loop for that registry: one at a time
    _started: ClassVar[dict[tuple[int, int], LoopLagMonitor]] = {}

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        threshold: float = DEFAULT_THRESHOLD,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.interval = check_interval("interval", interval)
        self.threshold = check_interval("threshold", threshold)
        self._metrics = register_metrics(registry)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._expected = 0.0  # loop.time() at which the next heartbeat should run
        self._collecting_before = 0.0  # GcPauses.total when the next heartbeat was scheduled
        self._stall_frames: list[str] | None = None  # sampled during the current stall, if any

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start on `loop` (default: the running loop); call it from the loop's thread."""
        if self._loop is not None:
            raise RuntimeError("this LoopLagMonitor is already running: stop() it first, or use another one")
        running = asyncio._get_running_loop()
        if loop is None:
            loop = asyncio.get_running_loop()
        elif loop is not running and (loop.is_running() or running is not None):
            # Its watchdog would sample this thread's stack, not the loop's.
            raise RuntimeError(
                f"start({loop!r}) called from a thread that does not run that loop: call it on the loop's "
                "own thread, e.g. loop.call_soon_threadsafe(monitor.start)."
            )
        key = (id(loop), id(self._metrics))
        other = LoopLagMonitor._started.get(key)
        if other is not None and other._loop is loop:
            raise RuntimeError(
                "another LoopLagMonitor already watches this loop for the same registry, and every stall "
                "would be counted twice: use that one (setup_telemetry(monitor_event_loop=True) starts "
                "one), or stop it first."
            )
        LoopLagMonitor._started[key] = self
        for component in (NO_COMPONENT, GC_COMPONENT):  # at zero before the first stall, which rate() would miss
            self._metrics.event_loop_blocked.labels(NO_COMPONENT, component)
        self._loop = loop
        self._loop_thread = threading.get_ident()
        BlockingSettings.watch(self, self._loop_thread, self.threshold)
        gc_pauses.install()
        self._stopping.clear()
        self._schedule(self._loop.time())
        self._watchdog = threading.Thread(target=self._watch, name="hayscope-loop-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        """Stop the heartbeat and the watchdog; safe to call twice."""
        if self._loop is None:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._stopping.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join()
        BlockingSettings.watch(self, self._loop_thread, None)
        key = (id(self._loop), id(self._metrics))
        if LoopLagMonitor._started.get(key) is self:
            del LoopLagMonitor._started[key]
        self._loop = self._handle = self._watchdog = None

    async def __aenter__(self) -> LoopLagMonitor:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._expected = now + self.interval
        self._collecting_before = GcPauses.total
        self._handle = self._loop.call_at(self._expected, self._beat)

    def _beat(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        lag = max(0.0, now - self._expected)
        blocker = None
        if lag > self.threshold:
            # Component steps that ended inside this late window held the loop for their share of
            # it (the last one is the lag's exemplar); what they leave, past the threshold, no
            # component's code explains.
            explained = explained_collecting = 0.0
            for ended, held, collecting in BlockingSettings.recent_blocks.get(self._loop_thread, ()):
                if ended > self._expected:
                    share = min(held, ended - self._expected)
                    explained += share
                    explained_collecting += min(collecting, share)
            block_end, blamed = BlockingSettings.last_block.get(self._loop_thread, NO_BLOCK)
            if block_end >= self._expected:
                blocker = blamed
            if lag - explained > self.threshold:
                self._blocked_by_nobody(lag - explained, explained_collecting)
        self._metrics.event_loop_lag.observe(lag, blocker.exemplar() if blocker is not None else None)
        self._stall_frames = None
        self._schedule(now)

    def _blocked_by_nobody(self, seconds: float, counted_collecting: float = 0.0) -> None:
        # Collections since the heartbeat was scheduled, up to the lag, are the collector's share
        # (less those inside component steps, `counted_collecting`, counted with them); as for a
        # component's step, each share is blamed when it passes the threshold.
        collecting = min(seconds, max(0.0, GcPauses.total - self._collecting_before - counted_collecting))
        rest = seconds - collecting
        if collecting > 0 and (collecting > self.threshold or rest <= self.threshold):
            self._count(GC_COMPONENT, collecting, "event loop blocked by garbage collection", generation=GcPauses.last_generation)
        else:
            rest = seconds
        if rest > self.threshold:
            self._count(NO_COMPONENT, rest, "event loop blocked", frames=self._stall_frames or [])

    def _count(self, component: str, seconds: float, message: str, **facts: object) -> None:
        """A stall no component's step explains, counted under pipeline `(none)`, and its warning."""
        self._metrics.event_loop_blocked.labels(NO_COMPONENT, component).inc(seconds)
        logger.warning(message, pipeline=NO_COMPONENT, component=component, blocked_seconds=round(seconds, 6), **facts)

    def _watch(self) -> None:
        # One sample per stall and per step caught in it: several blocking steps can run back to
        # back before the heartbeat gets its turn.
        threshold = self.threshold
        check_every = threshold / 2
        timeout = check_every
        sampled: object = None  # what was sampled in this stall: self, or (execution, step start, held too long)
        while not self._stopping.wait(timeout):
            timeout = check_every
            overdue = time.monotonic() - self._expected > threshold
            execution = RUNNING_ON_THREAD.get(self._loop_thread)
            step = execution.step_started if execution is not None else 0.0
            held_too_long = execution is not None and time.perf_counter() - step > threshold
            if execution is not None and not held_too_long:
                # look again just as this step passes the threshold, if it is still running then
                timeout = min(check_every, step + threshold - time.perf_counter() + SAMPLE_MARGIN)
            if not (overdue or held_too_long):
                sampled = None
                continue
            caught = (execution, step, held_too_long) if execution is not None else self
            if caught == sampled:
                continue
            frames = stack_summary(sys._current_frames().get(self._loop_thread))
            if RUNNING_ON_THREAD.get(self._loop_thread) is not execution or (
                execution is not None and execution.step_started != step
            ):
                continue  # the loop moved on while we looked; look again next round
            if held_too_long:
                execution.stall_frames = frames  # type: ignore[union-attr]
            self._stall_frames = frames
            sampled = caught
