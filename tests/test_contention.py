"""Where each component's time went, and who blocked the event loop.

Sleeps and CPU loops inside the components are the workload; the tests wait on results and events.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from haystack import Pipeline, SuperComponent, component
from haystack.components.joiners import ListJoiner
from haystack.core.component.types import GreedyVariadic
from prometheus_client import CollectorRegistry, generate_latest

from hayscope import LoopLagMonitor, TracedAsyncPipeline
from hayscope.executor import default_max_workers, executor_state
from hayscope.metrics import NO_COMPONENT

BLOCKING_LINE = "time.sleep(self.seconds)  # blocks the loop"


@component
class BlockingAsync:
    """A coroutine that blocks the loop with time.sleep: the bug hayscope must point at."""

    def __init__(self, seconds: float, about_to_block: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.about_to_block = about_to_block

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        if self.about_to_block is not None:
            self.about_to_block.set()
        time.sleep(self.seconds)  # blocks the loop
        return {"value": value}


@component
class AwaitingAsync:
    """A well-behaved coroutine: it only awaits."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        await asyncio.sleep(self.seconds)
        return {"value": value}


@component
class SleepingSync:
    """Sync only, so thread-offloaded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {"value": value}


@component
class Computing:
    """Sync only, CPU-bound for `seconds` in its worker thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        deadline = time.perf_counter() + self.seconds
        total = 0
        while time.perf_counter() < deadline:
            total += sum(range(200))
        return {"value": value + (total > 0)}


def attribute(span, key: str) -> float:
    return span.attributes[key]


async def test_the_blocking_coroutine_is_named_and_no_other_component_is_blamed(capture):
    pipeline = capture.pipeline(name="blocky")
    pipeline.add_component("fetch", AwaitingAsync(0.05))
    pipeline.add_component("parse", BlockingAsync(0.3))
    pipeline.add_component("store", AwaitingAsync(0.05))
    pipeline.connect("fetch.value", "parse.value")
    pipeline.connect("parse.value", "store.value")

    async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.1):
        results = await asyncio.gather(*(pipeline.run_async({"fetch": {"value": i}}) for i in range(3)))

    assert results == [{"store": {"value": i}} for i in range(3)]
    blocked = capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="blocky", component="parse")
    assert blocked >= 3 * 0.25
    for other in ("fetch", "store"):
        assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="blocky", component=other)
    # The loop-lag histogram saw the stall.
    lag_total = capture.sample("asyncio_event_loop_lag_seconds_count")
    assert capture.sample("asyncio_event_loop_lag_seconds_bucket", le="0.25") < lag_total
    for span in capture.spans_named("haystack.component.run parse"):
        (event,) = [e for e in span.events if e.name == "event_loop.blocked"]
        assert event.attributes["event_loop.blocked.seconds"] >= 0.25
        assert attribute(span, "hayscope.component.loop_held") >= 0.25
        frames = event.attributes["event_loop.blocked.frames"]
        assert frames, "the watchdog sampled the loop thread during the stall"
        assert frames[0].startswith(f"{__file__}:") and frames[0].endswith(" run_async")
        line = int(frames[0].split(":")[1].split(" ")[0])
        assert BLOCKING_LINE in open(__file__).read().splitlines()[line - 1]
    for name in ("fetch", "store"):
        for span in capture.spans_named(f"haystack.component.run {name}"):
            assert not [e for e in span.events if e.name == "event_loop.blocked"]
            assert attribute(span, "hayscope.component.loop_held") < 0.05


async def test_a_component_blocking_inside_a_super_component_is_named_not_the_super_component(capture):
    inner = capture.pipeline(name="inner")
    inner.add_component("parse", BlockingAsync(0.3))
    outer = capture.pipeline(name="outer")
    outer.add_component("fetch", AwaitingAsync(0.05))
    outer.add_component("wrapped", SuperComponent(pipeline=inner))
    outer.connect("fetch.value", "wrapped.value")

    async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.1):
        assert await outer.run_async({"fetch": {"value": 1}}) == {"wrapped": {"value": 1}}

    assert capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="inner", component="parse") >= 0.25
    assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="outer", component="wrapped")
    (parse,) = capture.spans_named("haystack.component.run parse")
    (event,) = [e for e in parse.events if e.name == "event_loop.blocked"]
    frames = event.attributes["event_loop.blocked.frames"]
    assert frames and frames[0].startswith(f"{__file__}:") and frames[0].endswith(" run_async")
    (wrapped,) = capture.spans_named("haystack.component.run wrapped")
    assert not [e for e in wrapped.events if e.name == "event_loop.blocked"]


@component
class BlockingSync:
    """Sync only: on the `run()` path it runs on the caller's thread, the loop's if called from a coroutine."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        time.sleep(self.seconds)  # blocks the loop
        return {"value": value}


@component
class CallingRun:
    """A coroutine that calls a sync pipeline's run(): what blocks the loop is that pipeline's component."""

    def __init__(self, inner: Pipeline) -> None:
        self.inner = inner

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        return {"value": self.inner.run({"parse": {"value": value}})["parse"]["value"]}


def only_blocked_event(span) -> Any:
    (event,) = [e for e in span.events if e.name == "event_loop.blocked"]
    frames = event.attributes["event_loop.blocked.frames"]
    assert frames and frames[0].startswith(f"{__file__}:"), frames
    line = int(frames[0].split(":")[1].split(" ")[0])
    assert BLOCKING_LINE in open(__file__).read().splitlines()[line - 1]
    return event


async def test_a_block_just_past_the_threshold_is_sampled_with_its_frames(capture):
    # With the default settings, a 0.2 s step often leaves the next heartbeat less than 0.1 s late:
    # the watchdog samples the step itself once it has held the loop past the threshold.
    pipeline = capture.pipeline(name="short")
    pipeline.add_component("parse", BlockingAsync(0.2))

    async with LoopLagMonitor(registry=capture.registry):
        for i in range(5):
            assert await pipeline.run_async({"parse": {"value": i}}) == {"parse": {"value": i}}

    spans = capture.spans_named("haystack.component.run parse")
    assert len(spans) == 5
    for span in spans:
        assert only_blocked_event(span).attributes["event_loop.blocked.seconds"] >= 0.19
    assert capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="short", component="parse") >= 5 * 0.19


@component
class BlocksThenWakes:
    """Blocks the loop, then wakes whatever waits on `done` (it runs right after, before any timer)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.done = asyncio.Event()

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        time.sleep(self.seconds)
        self.done.set()
        return {"value": value}


async def test_a_stall_right_after_a_blocking_component_is_counted_under_none(capture):
    # One late heartbeat (due 0.5 s after the monitor starts), two stalls across it: the component's
    # 0.6 s, then 0.4 s of code that is no component. The lag is 0.1 s of the one, 0.4 s of the other.
    blocker = BlocksThenWakes(0.6)
    pipeline = capture.pipeline(name="then")
    pipeline.add_component("parse", blocker)

    async def outside_any_component() -> None:
        await blocker.done.wait()
        time.sleep(0.4)

    async with LoopLagMonitor(registry=capture.registry, interval=0.5, threshold=0.1):
        await asyncio.gather(pipeline.run_async({"parse": {"value": 1}}), outside_any_component())
        await asyncio.sleep(0.6)  # (the next heartbeat's turn)

    blocked = "hayscope_event_loop_blocked_seconds_total"
    assert 0.59 <= capture.sample(blocked, pipeline="then", component="parse") < 0.7
    assert 0.35 <= capture.sample(blocked, pipeline="(none)", component="(none)") < 0.5


class SlowToCopy:
    """An input whose deep copy (haystack copies a component's inputs on the loop) takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __deepcopy__(self, memo: dict) -> SlowToCopy:
        time.sleep(self.seconds)
        return SlowToCopy(self.seconds)


@component
class TakesAnything:
    """Sync only: runs in a worker thread."""

    @component.output_types(value=int)
    def run(self, data: Any) -> dict[str, Any]:
        return {"value": 1}


async def test_haystacks_work_on_the_loop_for_a_thread_mode_component_blames_that_component(capture):
    pipeline = capture.pipeline(name="copies")
    pipeline.add_component("rank", TakesAnything())

    async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.1):
        assert await pipeline.run_async({"rank": {"data": SlowToCopy(0.3)}}) == {"rank": {"value": 1}}
        await asyncio.sleep(0.1)  # (the heartbeat's turn)

    # haystack copies the data twice: for the run (no component's: the lag it leaves, less the
    # heartbeat's interval) and for the component's inputs (the whole step)
    blocked = "hayscope_event_loop_blocked_seconds_total"
    assert 0.29 <= capture.sample(blocked, pipeline="copies", component="rank") < 0.45
    assert 0.2 <= capture.sample(blocked, pipeline="(none)", component="(none)") < 0.45
    (span,) = capture.spans_named("haystack.component.run rank")
    assert span.attributes["haystack.component.execution_mode"] == "thread"
    (event,) = [e for e in span.events if e.name == "event_loop.blocked"]
    assert event.attributes["event_loop.blocked.frames"][0].endswith(" __deepcopy__")  # the copy, named


async def test_a_sync_run_called_on_the_loop_blames_its_component(capture):
    pipeline = capture.pipeline(name="legacy")
    pipeline.add_component("slow", BlockingSync(0.3))

    async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.1):
        assert pipeline.run({"slow": {"value": 1}}) == {"slow": {"value": 1}}  # on the loop's thread
        await asyncio.sleep(0.1)  # a heartbeat after the stall

    assert capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="legacy", component="slow") >= 0.25
    assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline=NO_COMPONENT, component=NO_COMPONENT)
    (span,) = capture.spans_named("haystack.component.run slow")
    assert span.attributes["haystack.component.execution_mode"] == "sync"
    only_blocked_event(span)


def test_a_sync_run_off_any_loop_blocks_nothing(capture):
    pipeline = capture.pipeline(name="plain")
    pipeline.add_component("slow", BlockingSync(0.15))

    assert pipeline.run({"slow": {"value": 1}}) == {"slow": {"value": 1}}

    assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="plain", component="slow")
    (span,) = capture.spans_named("haystack.component.run slow")
    assert not span.events


async def test_a_component_blocking_in_a_run_called_by_another_is_blamed_not_the_caller(capture):
    inner = capture.pipeline(name="inner")
    inner.add_component("parse", BlockingSync(0.3))
    outer = capture.pipeline(name="outer")
    outer.add_component("caller", CallingRun(inner))

    async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.1):
        assert await outer.run_async({"caller": {"value": 3}}) == {"caller": {"value": 3}}
        await asyncio.sleep(0.1)

    assert capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="inner", component="parse") >= 0.25
    assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="outer", component="caller")
    assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline=NO_COMPONENT, component=NO_COMPONENT)
    (parse,) = capture.spans_named("haystack.component.run parse")
    only_blocked_event(parse)
    (caller,) = capture.spans_named("haystack.component.run caller")
    assert not caller.events
    assert attribute(caller, "hayscope.component.loop_held") >= 0.25  # it did hold the loop, through parse


async def test_each_loop_has_its_own_threshold_and_its_own_blocks(capture):
    # Loop B, in a thread, watched with a 0.1 s threshold, runs a component that blocks it 0.3 s.
    # Meanwhile this loop, watched with 0.5 s, is blocked 0.4 s by code that is no component: under
    # B's threshold, B's block and B's component are not this loop's.
    b_blocking = threading.Event()
    b_pipeline = capture.pipeline(name="loop_b")
    b_pipeline.add_component("parse", BlockingAsync(0.3, about_to_block=b_blocking))

    async def on_loop_b() -> None:
        async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.1):
            await b_pipeline.run_async({"parse": {"value": 1}})
            await asyncio.sleep(0.1)

    loop_b = threading.Thread(target=asyncio.run, args=(on_loop_b(),))
    async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.5):
        a_pipeline = capture.pipeline(name="loop_a")
        a_pipeline.add_component("quick", BlockingAsync(0.3))  # under this loop's threshold
        await a_pipeline.run_async({"quick": {"value": 1}})
        loop_b.start()
        await asyncio.to_thread(b_blocking.wait)
        time.sleep(0.6)  # this loop, blocked by no component, while B's component blocks B
        await asyncio.sleep(0.1)
    loop_b.join()

    assert capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="loop_b", component="parse") >= 0.25
    assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="loop_a", component="quick")
    assert capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline=NO_COMPONENT, component=NO_COMPONENT) >= 0.5


async def test_a_thread_pool_too_small_shows_as_queue_wait_not_as_slow_components(capture):
    pipeline = capture.pipeline(name="sized", max_workers=6)
    pipeline.add_component("embed", SleepingSync(0.2))
    busy_seen: list[float] = []

    async def watch_busy_workers() -> None:  # a scrape every 20 ms, as a dashboard would see it
        while True:
            busy_seen.append(capture.sample("hayscope_executor_workers_busy", executor="sized") or 0)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_busy_workers())
    try:
        await asyncio.gather(*(pipeline.run_async({"embed": {"value": i}}) for i in range(18)))
    finally:
        watcher.cancel()

    spans = capture.spans_named("haystack.component.run embed")
    assert len(spans) == 18
    queue_waits = [attribute(s, "hayscope.component.queue_wait") for s in spans]
    run_times = [attribute(s, "hayscope.component.run_time") for s in spans]
    assert statistics.median(queue_waits) >= 0.1, queue_waits
    assert all(0.19 <= r < 0.4 for r in run_times), run_times
    assert max(busy_seen) == 6
    assert capture.sample("hayscope_executor_workers_max", executor="sized") == 6
    assert capture.sample("hayscope_executor_workers_busy", executor="sized") == 0
    assert capture.sample("hayscope_executor_queue_depth", executor="sized") == 0
    labels = {"pipeline": "sized", "component": "embed", "component_type": "SleepingSync", "mode": "thread"}
    assert capture.sample("haystack_component_queue_wait_seconds_count", **labels, status="ok") == 18
    assert capture.sample("haystack_component_queue_wait_seconds_bucket", **labels, status="ok", le="0.1") <= 9
    # The long waits are named bars in the waterfall.
    queued = capture.spans_named("queued for a worker thread")
    assert len(queued) >= 9
    assert {s.parent.span_id for s in queued} <= {s.context.span_id for s in spans}


@component
class Held:
    """Sync only: holds its worker thread until released."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        self.release.wait()
        return {"value": value}


async def until(condition, what: str) -> None:
    """Waits (on the loop, briefly yielding) until `condition()` holds; fails after 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"still not {what}"
        await asyncio.sleep(0.01)


def executor_gauges(capture, executor: str) -> tuple[float | None, float | None, float | None]:
    return tuple(
        capture.sample(f"hayscope_executor_{gauge}", executor=executor)
        for gauge in ("workers_busy", "queue_depth", "workers_max")
    )


@pytest.mark.parametrize(
    ("prefix", "names", "label"),
    [("", ("rag", "ingest"), "rag"), ("embedders", ("answer", "index"), "embedders")],
    ids=["labelled with the first pipeline", "labelled with its threads' name"],
)
async def test_a_pool_shared_by_pipelines_is_one_executor_in_the_metrics(capture, prefix, names, label):
    release = threading.Event()
    pool = ThreadPoolExecutor(2, thread_name_prefix=prefix)
    pipelines = [capture.pipeline(name=name, executor=pool) for name in names]
    for pipeline in pipelines:
        pipeline.add_component("embed", Held(release))

    runs = asyncio.gather(*(p.run_async({"embed": {"value": i}}) for p in pipelines for i in range(2)))
    try:
        await until(lambda: executor_gauges(capture, label) == (2, 2, 2), "2 busy and 2 queued in one pool of 2")
        for other in set(names) - {label}:
            assert executor_gauges(capture, other) == (None, None, None)
    finally:
        release.set()
        await runs
        pool.shutdown()
    assert executor_gauges(capture, label) == (0, 0, 2)


@pytest.mark.parametrize(
    ("prefix", "label"),
    [("embedders", "embedders"), ("", "rag"), ("default", "rag"), ("ThreadPoolExecutor-7", "rag")],
    ids=["chosen", "none", "the loops' default executors' label", "like the numbered one"],
)
def test_a_pool_is_labelled_with_its_threads_name_only_when_one_was_chosen(prefix, label):
    pool = ThreadPoolExecutor(1, thread_name_prefix=prefix)
    try:
        assert executor_state(pool, name="rag").name == label
    finally:
        pool.shutdown()


@component
class NamesItsThread:
    @component.output_types(thread=str)
    def run(self, value: int) -> dict[str, Any]:
        return {"thread": threading.current_thread().name}


async def test_by_default_sync_components_run_in_the_loops_default_executor_as_haystack_runs_them(capture):
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="appdefault")
    loop.set_default_executor(pool)  # e.g. to run thread-unsafe components one at a time
    pipeline = capture.pipeline(name="default_pool")
    pipeline.add_component("where", NamesItsThread())

    results = await asyncio.gather(*(pipeline.run_async({"where": {"value": i}}) for i in range(3)))

    assert results == [{"where": {"thread": "appdefault_0"}}] * 3
    for span in capture.spans_named("haystack.component.run where"):
        assert span.attributes["thread.name"] == "appdefault_0"
    assert executor_gauges(capture, "default") == (0, 0, 1)


async def test_cancelled_runs_leave_the_default_executor_gauges_where_they_were(capture):
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
    release = threading.Event()
    pipeline = capture.pipeline(name="cancelled_default")
    pipeline.add_component("embed", Held(release))

    runs = [asyncio.ensure_future(pipeline.run_async({"embed": {"value": i}})) for i in range(3)]
    try:
        await until(lambda: executor_gauges(capture, "default") == (1, 2, 1), "1 busy and 2 queued")
        for run in runs:
            run.cancel()
        await until(lambda: executor_gauges(capture, "default") == (1, 0, 1), "the queued ones forgotten")
    finally:
        release.set()
    await until(lambda: executor_gauges(capture, "default") == (0, 0, 1), "the running one done")
    assert all(run.cancelled() for run in runs)


async def test_a_cancelled_execution_splits_its_time_into_the_wait_and_the_run_it_had(capture):
    release = threading.Event()
    pipeline = capture.pipeline(name="cancelled_parts", max_workers=1)
    pipeline.add_component("embed", Held(release))

    runs = [asyncio.ensure_future(pipeline.run_async({"embed": {"value": i}})) for i in range(3)]
    try:
        await until(lambda: executor_gauges(capture, "cancelled_parts") == (1, 2, 1), "1 busy and 2 queued")
        await asyncio.sleep(0.05)  # (the workload: a wait and a run long enough to tell apart)
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
    finally:
        release.set()

    spans = capture.spans_named("haystack.component.run embed")
    parts = [
        {key: span.attributes[f"hayscope.component.{key}"] for key in ("schedule_wait", "queue_wait", "run_time")}
        for span in spans
    ]
    ran = [p for p in parts if p["run_time"] > 0]
    assert len(spans) == 3 and len(ran) == 1  # the queued two never ran
    for span, part in zip(spans, parts):
        duration = (span.end_time - span.start_time) / 1e9
        assert sum(part.values()) == pytest.approx(duration, abs=0.005)  # each second counted once
        assert span.attributes["hayscope.status"] == "cancelled"
    assert ran[0]["run_time"] >= 0.05 and ran[0]["queue_wait"] < 0.05
    assert all(p["queue_wait"] >= 0.05 for p in parts if p["run_time"] == 0)
    labels = dict(pipeline="cancelled_parts", component="embed", component_type="Held", mode="thread", status="cancelled")
    assert capture.sample("haystack_component_queue_wait_seconds_count", **labels) == 3


@component
class RunsALoopOfItsOwn:
    """Sync: runs a whole pipeline in an event loop of its own, as code calling asyncio.run() does."""

    def __init__(self, inner: Pipeline) -> None:
        self.inner = inner

    @component.output_types(thread=str)
    def run(self, value: int) -> dict[str, Any]:
        return asyncio.run(self.inner.run_async({"where": {"value": value}}))["where"]


async def test_a_loop_started_inside_a_component_does_not_wait_for_the_workers_of_the_loop_running_it(capture):
    # Each loop has its own default executor: the inner runs' sync components never queue behind the
    # outer components that wait for them (which a pool shared by all loops would deadlock on).
    inner = capture.pipeline(name="inner_loop")
    inner.add_component("where", NamesItsThread())
    outer = capture.pipeline(name="outer_loop")
    outer.add_component("nested", RunsALoopOfItsOwn(inner))
    runs = 2 * default_max_workers()

    results = await asyncio.wait_for(
        asyncio.gather(*(outer.run_async({"nested": {"value": i}}) for i in range(runs))), timeout=60
    )

    assert results == [{"nested": {"thread": "asyncio_0"}}] * runs


def test_a_loop_that_is_gone_leaves_no_executor_state_behind(capture):
    pipeline = capture.pipeline(name="many_loops")
    pipeline.add_component("where", NamesItsThread())
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def run_once() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert await pipeline.run_async({"where": {"value": 1}}) == {"where": {"thread": "asyncio_0"}}

    for _ in range(5):
        asyncio.run(run_once())
    gc.collect()

    assert [loop() for loop in loops] == [None] * 5
    assert executor_gauges(capture, "default") == (None, None, None)


class UnhashablePool(ThreadPoolExecutor):
    """An executor that compares by value, so it cannot be a dict key."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnhashablePool)

    __hash__ = None  # type: ignore[assignment]


async def test_your_executors_are_let_go_with_their_pipelines_and_need_not_be_hashable(capture):
    pool = UnhashablePool(1)
    pool_left = weakref.ref(pool)
    pipeline = capture.pipeline(name="yours_let_go", executor=pool)
    pipeline.add_component("where", NamesItsThread())
    assert (await pipeline.run_async({"where": {"value": 1}}))["where"]["thread"].startswith("ThreadPoolExecutor")
    assert executor_gauges(capture, "yours_let_go") == (0, 0, 1)
    pool.shutdown()
    del pipeline, pool
    gc.collect()

    assert pool_left() is None
    assert executor_gauges(capture, "yours_let_go") == (None, None, None)


async def test_pools_of_pipelines_of_one_name_are_summed_in_one_series(capture):
    release = threading.Event()
    twins = [capture.pipeline(name="twin", max_workers=1) for _ in range(2)]
    for pipeline in twins:
        pipeline.add_component("embed", Held(release))

    runs = asyncio.gather(*(p.run_async({"embed": {"value": 1}}) for p in twins))
    try:
        await until(lambda: executor_gauges(capture, "twin") == (2, 0, 2), "both pools busy")
        exposition = generate_latest(capture.registry).decode()
        assert exposition.count('hayscope_executor_workers_busy{executor="twin"}') == 1
    finally:
        release.set()
        await runs


async def test_concurrency_limit_throttling_shows_as_schedule_wait(capture):
    pipeline = capture.pipeline(name="fan")
    pipeline.add_component("source", AwaitingAsync(0))
    pipeline.add_component("join", ListJoiner(list_type_=list[int]))
    for i in range(6):
        pipeline.add_component(f"branch{i}", AwaitingAsync(0.2))
        pipeline.add_component(f"wrap{i}", Wrap())
        pipeline.connect("source.value", f"branch{i}.value")
        pipeline.connect(f"branch{i}.value", f"wrap{i}.value")
        pipeline.connect(f"wrap{i}.values", "join.values")

    await pipeline.run_async({"source": {"value": 1}}, concurrency_limit=2)

    waits = sorted(
        attribute(s, "hayscope.component.schedule_wait")
        for s in capture.spans()
        if s.name.startswith("haystack.component.run branch")
    )
    assert len(waits) == 6
    assert waits[1] < 0.1  # two start at once
    assert waits[2] >= 0.15 and waits[4] >= 0.3  # the rest wait their turn, two by two
    assert len([s for s in capture.spans() if s.name == "waiting to start"]) >= 4


@component
class PassOn:
    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value}


class InputsSeen(Pipeline):
    """A user's mixin that follows TracedAsyncPipeline in the MRO and sees every component's inputs taken."""

    def _consume_component_inputs(
        self, component_name: str, component: dict[str, Any], inputs: Any, *, is_resume: bool = False
    ) -> dict[str, Any]:
        self.consumed.append(component_name)
        return super()._consume_component_inputs(component_name, component, inputs, is_resume=is_resume)


@pytest.mark.parametrize("path", ["run", "run_async"])
async def test_the_schedule_hook_calls_what_follows_it_in_the_mro(capture, path):
    class Mixed(TracedAsyncPipeline, InputsSeen):
        pass

    pipeline = Mixed(name="mixed", **capture.pipeline_kwargs)
    pipeline.consumed = []
    pipeline.add_component("first", PassOn())
    pipeline.add_component("second", PassOn())
    pipeline.connect("first.value", "second.value")

    data = {"first": {"value": 7}}
    result = pipeline.run(data) if path == "run" else await pipeline.run_async(data)

    assert result == {"second": {"value": 7}}
    assert pipeline.consumed == ["first", "second"]
    spans = [s for s in capture.spans() if s.name.startswith("haystack.component.run")]
    assert sorted(s.attributes["haystack.component.name"] for s in spans) == ["first", "second"]
    waits = [s.attributes.get("hayscope.component.schedule_wait") for s in spans]
    if path == "run":  # haystack runs each component as soon as it picks it: no wait to measure
        assert waits == [None, None]
    else:
        assert all(0 <= wait < 0.1 for wait in waits)


@component
class Wrap:
    @component.output_types(values=list[int])
    def run(self, value: int) -> dict[str, Any]:
        return {"values": [value]}

    @component.output_types(values=list[int])
    async def run_async(self, value: int) -> dict[str, Any]:
        return {"values": [value]}


async def test_cpu_work_in_a_thread_is_never_blamed_for_blocking_the_loop(capture):
    pipeline = capture.pipeline(name="cpu")
    pipeline.add_component("compute", Computing(0.3))
    pipeline.add_component("after", AwaitingAsync(0.01))
    pipeline.connect("compute.value", "after.value")

    async with LoopLagMonitor(registry=capture.registry, interval=0.05, threshold=0.1):
        await asyncio.gather(*(pipeline.run_async({"compute": {"value": i}}) for i in range(2)))

    assert not capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline="cpu", component="compute")
    for span in capture.spans_named("haystack.component.run compute"):
        assert not span.events
        assert "hayscope.component.loop_held" not in span.attributes
        assert attribute(span, "hayscope.component.run_time") >= 0.3
    for span in capture.spans_named("haystack.component.run after"):
        assert attribute(span, "hayscope.component.loop_held") < 0.05


async def test_a_stall_outside_any_component_is_counted_under_none(capture):
    async with LoopLagMonitor(registry=capture.registry, interval=0.02, threshold=0.05) as monitor:
        await asyncio.sleep(0.03)  # let a heartbeat get scheduled
        time.sleep(0.2)  # the loop is blocked by code that is no component
        beat = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(monitor.interval * 2, beat.set_result, None)
        await beat

    assert capture.sample("hayscope_event_loop_blocked_seconds_total", pipeline=NO_COMPONENT, component=NO_COMPONENT) >= 0.1


async def test_the_monitor_starts_and_stops_symmetrically(capture):
    monitor = LoopLagMonitor(registry=capture.registry)
    monitor.start()
    assert monitor.running
    with pytest.raises(RuntimeError, match="already running"):
        monitor.start()
    watchdog = monitor._watchdog
    monitor.stop()
    monitor.stop()
    assert not monitor.running and not watchdog.is_alive()


async def test_every_blocked_series_exists_at_zero_before_its_first_stall(capture):
    # (rate() and increase() take a series' first sample as its start: a first stall would be missed)
    pipeline = capture.pipeline(name="calm")
    pipeline.add_component("wait", AwaitingAsync(0.01))
    async with LoopLagMonitor(registry=capture.registry):
        await pipeline.run_async({"wait": {"value": 1}})

    blocked = "hayscope_event_loop_blocked_seconds_total"
    for labels in (("(none)", "(none)"), ("(none)", "(gc)"), ("calm", "(gc)"), ("calm", "wait")):
        assert capture.sample(blocked, pipeline=labels[0], component=labels[1]) == 0, labels


async def test_a_second_monitor_on_the_same_loop_and_registry_is_refused(capture):
    async with LoopLagMonitor(registry=capture.registry):
        with pytest.raises(RuntimeError, match="another LoopLagMonitor already watches this loop for the same registry"):
            LoopLagMonitor(registry=capture.registry).start()
        async with LoopLagMonitor(registry=CollectorRegistry()):  # another registry's: its own counts
            pass
    async with LoopLagMonitor(registry=capture.registry):  # once the first stopped
        pass


def test_a_monitor_started_off_the_loops_thread_is_refused(capture):
    loop = asyncio.new_event_loop()
    running = threading.Thread(target=loop.run_forever)
    running.start()
    try:
        with pytest.raises(RuntimeError, match=r"called from a thread that does not run that loop: call it on"):
            LoopLagMonitor(registry=capture.registry).start(loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        running.join()
        loop.close()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"interval": 0}, "is out of range"),
        ({"threshold": -1}, "is out of range"),
        ({"interval": "fast"}, "is not a number of seconds"),
        ({"threshold": "1"}, "is not a number of seconds"),
        ({"threshold": 120}, "is out of range"),
    ],
)
def test_bad_monitor_settings_are_refused(capture, kwargs, problem):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"{name}={value!r} {problem}: give seconds from 0.001 to 60"):
        LoopLagMonitor(registry=capture.registry, **kwargs)


@component
class GreedySum:
    """A greedy-variadic socket: haystack runs it alone, once every running component has finished."""

    def __init__(self) -> None:
        # Declared at run time: this module's postponed annotations would hide the socket's kind.
        component.set_input_types(self, values=GreedyVariadic[int])

    @component.output_types(value=int)
    def run(self, **inputs: Any) -> dict[str, Any]:
        return {"value": sum(inputs["values"])}


async def test_a_greedy_variadic_component_waits_for_running_ones_and_that_is_its_schedule_wait(capture):
    from components import AsyncAdd

    pipeline = capture.pipeline(name="greedy")
    pipeline.add_component("src", AsyncAdd(0))
    pipeline.add_component("fast", AsyncAdd(1))
    pipeline.add_component("slow", AsyncAdd(2, delay=0.2))
    pipeline.add_component("sum", GreedySum())
    pipeline.connect("src.value", "fast.value")
    pipeline.connect("src.value", "slow.value")
    pipeline.connect("fast.value", "sum.values")
    pipeline.connect("slow.value", "sum.values")

    await pipeline.run_async({"src": {"value": 1}})

    (summed,) = capture.spans_named("haystack.component.run sum")
    (slow,) = capture.spans_named("haystack.component.run slow")
    # Chosen once `fast` delivered, it started only after `slow` (still running) had finished.
    assert summed.attributes["hayscope.component.schedule_wait"] >= 0.15
    assert summed.start_time < slow.end_time <= summed.start_time + int(summed.attributes[
        "hayscope.component.schedule_wait"] * 1e9) + 5_000_000
    waits = [s for s in capture.spans_named("waiting to start") if s.parent.span_id == summed.context.span_id]
    assert len(waits) == 1


async def test_an_executor_that_refuses_work_leaves_no_queued_count(capture):
    from concurrent.futures import ThreadPoolExecutor

    from components import SyncAdd

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="closed")
    executor.shutdown()
    pipeline = capture.pipeline(name="closed", executor=executor)
    pipeline.add_component("add", SyncAdd(1))
    with pytest.raises(Exception, match="cannot schedule new futures after shutdown"):
        await pipeline.run_async({"add": {"value": 1}})
    assert capture.sample("hayscope_executor_queue_depth", executor="closed") == 0
    assert capture.sample("haystack_components_in_flight", pipeline="closed", component="add", mode="thread") == 0
    assert capture.sample("haystack_pipeline_runs_total", pipeline="closed", status="error") == 1


def test_the_stand_in_for_a_sync_component_can_be_copied():
    # haystack is handed a stand-in whose run_async runs `run` in hayscope's executor; a hook that
    # copies what haystack holds must not recurse into the stand-in's forwarding.
    import copy

    from components import SyncAdd
    from hayscope.offload import offloaded

    instance = SyncAdd(1)
    stand_in = offloaded({"instance": instance}, execution=None, executor=None)["instance"]  # type: ignore[arg-type]
    assert isinstance(stand_in, SyncAdd) and type(stand_in).__name__ == "SyncAdd"
    assert copy.copy(stand_in).__class__ is SyncAdd


def test_the_stand_in_has_the_components_sockets_and_forwards_the_rest():
    from components import SyncAdd
    from hayscope.offload import offloaded

    instance = SyncAdd(1)
    instance.extra = "an attribute of the instance"
    stand_in = offloaded({"instance": instance}, execution=None, executor=None)["instance"]  # type: ignore[arg-type]
    # haystack reads the sockets for every execution's span tags: the component's own objects
    assert stand_in.__haystack_input__ is instance.__haystack_input__
    assert stand_in.__haystack_output__ is instance.__haystack_output__
    assert stand_in.extra == "an attribute of the instance"
    with pytest.raises(AttributeError, match="no_such_attribute"):
        stand_in.no_such_attribute  # noqa: B018
