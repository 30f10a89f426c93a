"""What each variant leaves for the cyclic garbage collector, per component execution.

    python benchmarks/gc_pressure.py [--rounds N] [--runs K]

Spans wait in the `BatchSpanProcessor` queue until a batch is exported: long enough to be scanned
by young collections and promoted to the oldest generation, where they count towards the next full
collection (which stops the event loop for 100 ms and more in a large process). Two views, on the
8-async chain, for `bare`, `hayscope` and `otel-haystack` (see bench_overhead.py):

1. Objects the collector tracks that are still alive after 20 runs (collector off, nothing
   exported yet), per execution, by type.
2. Time spent collecting (`gc.callbacks`) and collections per generation over K sequential runs,
   per execution, in N rounds with the variants interleaved.
3. How long one full collection of this process takes, and how long after `gc.freeze()` (what the
   report's verdict suggests when collections block the event loop).
"""

import argparse
import asyncio
import collections
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_overhead as bench  # noqa: E402

WORKLOAD = bench.CHAIN_ASYNC


class CollectionTimer:
    """Seconds spent in collections, from gc.callbacks."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


def _variants() -> list[bench.Variant]:
    return [bench.Variant("bare"), bench.Variant("hayscope", hayscope=True), bench.Variant("otel-haystack", haystack_tracer=True)]


async def surviving_objects(runs: int = 20) -> None:
    print("### Tracked objects alive after the runs, per execution (collector off, nothing exported)\n")
    print("| variant | per execution | by type (per execution) |\n|---|---:|---|")
    for variant in _variants():
        pipeline = variant.build(WORKLOAD)
        with variant.active():
            await bench.run_sequential(pipeline, WORKLOAD, runs)
            variant.settle()
            gc.collect()
            gc.disable()
            try:
                before = collections.Counter(type(o).__name__ for o in gc.get_objects())
                await bench.run_sequential(pipeline, WORKLOAD, runs)
                after = collections.Counter(type(o).__name__ for o in gc.get_objects())
            finally:
                gc.enable()
        executions = runs * WORKLOAD.components
        grown = after - before
        kinds = ", ".join(f"{name} {count / executions:.2f}" for name, count in grown.most_common(8))
        print(f"| {variant.name} | {sum(grown.values()) / executions:.2f} | {kinds} |")
        variant.settle()
        variant.shutdown()


async def collection_time(rounds: int, runs: int) -> None:
    timer = CollectionTimer()
    variants = _variants()
    pipelines = {variant.name: variant.build(WORKLOAD) for variant in variants}
    per_execution: dict[str, list[float]] = collections.defaultdict(list)
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for round_index in range(rounds):
        for variant in bench.rotated(variants, round_index):
            with variant.active():
                await bench.run_sequential(pipelines[variant.name], WORKLOAD, 50)
                collecting, before = timer.total, [stats["collections"] for stats in gc.get_stats()]
                await bench.run_sequential(pipelines[variant.name], WORKLOAD, runs)
                after = [stats["collections"] for stats in gc.get_stats()]
            per_execution[variant.name].append((timer.total - collecting) / (runs * WORKLOAD.components) * 1e6)
            counts[variant.name] = [total + b - a for total, a, b in zip(counts[variant.name], before, after)]
            variant.settle()
    executions = rounds * runs * WORKLOAD.components
    print(f"\n### Collecting, {rounds} rounds x {runs} runs ({executions:,} executions per variant)\n")
    print("| variant | µs collecting per execution, median (min–max) | gen 0 / 1 / 2 collections per 10,000 executions |")
    print("|---|---:|---:|")
    for variant in variants:
        values = per_execution[variant.name]
        per_10k = " / ".join(f"{count * 10_000 / executions:.1f}" for count in counts[variant.name])
        print(f"| {variant.name} | {statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f}) | {per_10k} |")
    for variant in variants:
        variant.shutdown()


def _full_collection_ms() -> float:
    started = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - started) * 1e3


async def full_collection_and_freeze(runs: int = 500) -> None:
    variant = bench.Variant("hayscope", hayscope=True)
    pipeline = variant.build(WORKLOAD)
    await bench.run_sequential(pipeline, WORKLOAD, 200)
    variant.settle()
    tracked = len(gc.get_objects())
    rows = [("after startup and 200 runs", [_full_collection_ms() for _ in range(3)])]
    gc.freeze()
    try:
        rows.append(("right after gc.freeze()", [_full_collection_ms() for _ in range(3)]))
        await bench.run_sequential(pipeline, WORKLOAD, runs)
        variant.settle()
        rows.append((f"after {runs} more runs", [_full_collection_ms() for _ in range(3)]))
    finally:
        gc.unfreeze()
        variant.shutdown()
    print(f"\n### One full collection ({tracked:,} tracked objects after startup and 200 runs)\n")
    print("| when | ms per full collection, median of 3 |")
    print("|---|---:|")
    for when, times in rows:
        print(f"| {when} | {statistics.median(times):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=1500)
    args = parser.parse_args()
    asyncio.run(surviving_objects())
    asyncio.run(collection_time(args.rounds, args.runs))
    asyncio.run(full_collection_and_freeze())


if __name__ == "__main__":
    main()
