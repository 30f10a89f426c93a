"""Pipeline latency while the collector is in trouble, against a healthy collector.

    python benchmarks/bench_faults.py [--rounds N] [--runs K]

Variants, for gRPC and for HTTP/protobuf: `healthy` (hayscope.testing's OtlpReceiver), `refusing` (a
port that refuses connections), `hanging` (accepts, never answers), `failing` (answers every export
with UNAVAILABLE / 503), `slow` (answers after 0.5 s). The collectors run in a process of their own,
so that only the exporter's side of an export shares the pipeline's process. Each round times every variant once, in an order
that rotates from round to round: `setup_telemetry()` against that collector, K sequential
`run_async` of a three-component pipeline (each run timed), then `shutdown(timeout=0.5)` outside the
timing. The span queue is small (128 spans, batches of 32), so that a block fills it when exports
stall: the block runs where spans are dropped, not only where they queue. A variant's figure for a
round is the median run of its block; its ratio is that over the same round's `healthy` figure for
the same protocol. Reported: median (min–max) over rounds. `healthy-again` is the healthy collector
timed twice per round: its ratio is the noise floor, what a fault's ratio must be read against.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import os
import resource
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

import structlog  # noqa: E402
from haystack import Pipeline, component  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import hayscope  # noqa: E402
from hayscope.metrics import DROP_REASONS  # noqa: E402
from hayscope.testing import HangingCollector, OtlpReceiver, refusing_endpoint  # noqa: E402

PROTOCOLS = ("grpc", "http/protobuf")
# `healthy-again` is `healthy` timed a second time each round: its ratio shows what noise alone does.
FAULTS = ("healthy", "healthy-again", "refusing", "hanging", "failing", "slow")
SLOW_DELAY = 0.5
EXPORT_TIMEOUT = 2.0  # otlp_timeout: what a hanging collector costs one export


@component
class AsyncAdd:
    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value + 1}

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        return {"value": value + 1}


@component
class SyncAdd:
    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value + 10}


def pipeline(telemetry: hayscope.Telemetry) -> Pipeline:
    traced = hayscope.TracedAsyncPipeline(
        name="bench", tracer_provider=telemetry.tracer_provider, registry=telemetry.registry
    )
    traced.add_component("first", AsyncAdd())
    traced.add_component("second", SyncAdd())
    traced.add_component("third", AsyncAdd())
    traced.connect("first.value", "second.value")
    traced.connect("second.value", "third.value")
    return traced


def serve_collectors(connection: Connection) -> None:
    """In a process of its own: every collector, their endpoints sent back, until told to stop."""
    with (
        OtlpReceiver() as healthy,
        OtlpReceiver(fail=True) as failing,
        OtlpReceiver(delay=SLOW_DELAY) as slow,
        HangingCollector() as hanging,
        refusing_endpoint() as refusing,
    ):
        endpoints = {}
        for protocol in PROTOCOLS:
            receivers = {"healthy": healthy, "healthy-again": healthy, "failing": failing, "slow": slow}
            for fault, receiver in receivers.items():
                endpoints[fault, protocol] = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_base_endpoint
            endpoints["hanging", protocol] = hanging.endpoint
            endpoints["refusing", protocol] = refusing
        connection.send(endpoints)
        connection.recv()  # until the benchmark is done
        connection.send(len(healthy.spans()))


@contextmanager
def collectors() -> Iterator[tuple[dict[tuple[str, str], str], list[int]]]:
    """The endpoint of every variant, by (fault, protocol), served by another process for the whole benchmark.

    Out of process, so that the healthy collector's own work (decoding, keeping spans) does not
    compete with the pipeline for this process's GIL: only the exporter's side of an export does.
    """
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=serve_collectors, args=(theirs,), daemon=True)
    process.start()
    received: list[int] = []
    try:
        yield ours.recv(), received
        ours.send("stop")
        received.append(ours.recv())
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


class Variant:
    def __init__(self, fault: str, protocol: str, endpoint: str) -> None:
        self.fault, self.protocol, self.endpoint = fault, protocol, endpoint
        self.medians: list[float] = []
        self.ratios: list[float] = []
        self.dropped = dict.fromkeys(DROP_REASONS, 0.0)
        self.shutdown_seconds: list[float] = []

    @property
    def name(self) -> str:
        return f"{self.fault} {self.protocol}"

    async def block(self, runs: int) -> float:
        """The median run of `runs` sequential runs against this variant's collector, in seconds."""
        telemetry = hayscope.setup_telemetry(
            "bench-faults",
            otlp_protocol=self.protocol,
            otlp_endpoint=self.endpoint,
            otlp_timeout=EXPORT_TIMEOUT,
            serve_metrics=False,
            set_global=False,
            registry=CollectorRegistry(),
        )
        traced = pipeline(telemetry)
        await traced.run_async({"first": {"value": 0}})  # warm: the exporter's first connection attempt
        gc.collect()
        times = []
        for i in range(runs):
            started = time.perf_counter()
            result = await traced.run_async({"first": {"value": i}})
            times.append(time.perf_counter() - started)
            assert result == {"third": {"value": i + 12}}, result
        started = time.perf_counter()
        telemetry.shutdown(timeout=0.5)
        self.shutdown_seconds.append(time.perf_counter() - started)
        for reason in DROP_REASONS:
            self.dropped[reason] += telemetry.registry.get_sample_value("hayscope_spans_dropped_total", {"reason": reason}) or 0.0
        return statistics.median(times)


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    return f"{statistics.median(values) * scale:.{digits}f} ({min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f})"


async def main(rounds: int, runs: int) -> None:
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = "128"
    os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "32"
    # The benchmark's output is its table: the warnings it provokes go nowhere.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    started = time.monotonic()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with collectors() as (endpoints, received):
        variants = [Variant(fault, protocol, endpoints[fault, protocol]) for protocol in PROTOCOLS for fault in FAULTS]
        for variant in variants:  # warm-up block, not recorded
            await variant.block(runs // 4)
            variant.dropped = dict.fromkeys(DROP_REASONS, 0.0)
            variant.shutdown_seconds.clear()
        for round_number in range(rounds):
            shift = round_number % len(variants)
            figures = {}
            for variant in variants[shift:] + variants[:shift]:
                figures[variant.fault, variant.protocol] = median = await variant.block(runs)
                variant.medians.append(median)
            for variant in variants:
                variant.ratios.append(figures[variant.fault, variant.protocol] / figures["healthy", variant.protocol])
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    elapsed = time.monotonic() - started

    print(f"{rounds} rounds x {runs} runs per variant, 4 spans per run; {elapsed:.0f} s in all")
    print()
    print("| collector | protocol | µs/run, median (min–max) | × healthy | spans dropped (queue_full / export_failed / shutdown) | shutdown(0.5) s, max |")
    print("|---|---|---:|---:|---:|---:|")
    for variant in variants:
        drops = " / ".join(f"{variant.dropped[reason]:.0f}" for reason in DROP_REASONS)
        ratio = "1" if variant.fault == "healthy" else spread(variant.ratios)
        print(
            f"| {variant.fault} | {variant.protocol} | {spread(variant.medians, 1e6, 1)} | {ratio} | {drops} "
            f"| {max(variant.shutdown_seconds):.2f} |"
        )
    print()
    print(f"The healthy collector received {received[0]} spans.")
    print(f"Peak RSS: {rss_before / 1024:.0f} MB before the rounds, {rss_after / 1024:.0f} MB after.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.runs))
