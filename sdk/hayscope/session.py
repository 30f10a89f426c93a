"""One profiling session, shared by `hayscope demo` and `hayscope profile`.

Sets telemetry up for the process (spans kept in memory for the report, and also sent over OTLP
when OTEL_EXPORTER_OTLP_ENDPOINT is set; metrics served on 127.0.0.1; the loop monitor on), lets
the caller build its pipeline and inputs, runs the workload, and reports where the time went.
Ctrl-C stops the runs, flushes telemetry and still reports what finished.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from haystack import Pipeline
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from hayscope.loop import LoopLagMonitor
from hayscope.report import TimelineSampler, build_report, render_text, write_html, write_json
from hayscope.settings import HAYSCOPE_METRICS_PORT, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
from hayscope.telemetry import setup_telemetry
from hayscope.workload import Workload, WorkloadResult, summarize

# Given the keyword arguments for TracedAsyncPipeline (tracer_provider, registry), returns the
# pipeline to profile and the `data` of each run.
Prepare = Callable[[dict[str, Any]], Awaitable[tuple[Pipeline, list[dict[str, Any]]]]]


class SessionSetupError(Exception):
    """Telemetry could not be set up for the session, for the reason the message gives."""


@dataclass(frozen=True)
class SessionOptions:
    title: str
    service_name: str
    concurrency: int
    metrics_port: int | None = None
    show_partial: bool = False
    html: Path | None = None
    json: Path | None = None
    progress: bool = True
    forever: bool = False  # repeat the workload until interrupted (the compose stack's demo)


def run_session(options: SessionOptions, prepare: Prepare, out: TextIO | None = None) -> WorkloadResult:
    """Runs the session and prints its report to `out` (default stdout); returns the last workload's result."""
    out = out if out is not None else sys.stdout
    registry = CollectorRegistry()
    sends_otlp = bool(os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT))
    metrics_port = options.metrics_port
    if metrics_port is None and not os.environ.get(HAYSCOPE_METRICS_PORT):
        metrics_port = 0  # a free port, so a session never collides with a running service
    kept = InMemorySpanExporter()
    try:
        telemetry = setup_telemetry(
            options.service_name,
            traces_exporter=None if sends_otlp else "none",
            registry=registry,
            metrics_port=metrics_port,
            set_global=False,
        )
    except ValueError as error:  # a setting (a port taken, a bad variable): the message says which
        raise SessionSetupError(str(error)) from error
    with telemetry:
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(kept))
        pipeline_kwargs = {"tracer_provider": telemetry.tracer_provider, "registry": registry}
        print(f"metrics: {telemetry.metrics_url}   concurrency: {options.concurrency}", file=out, flush=True)
        state: dict[str, Any] = {}

        def on_partial(index: int, component_name: str, outputs: Any) -> None:
            print(f"[run {index}] {component_name}: {summarize(outputs)}", file=out, flush=True)

        async def main() -> None:
            pipeline, inputs = await prepare(pipeline_kwargs)
            pipeline.warm_up()  # model loading is set-up, not the workload's time
            async with LoopLagMonitor(registry=registry), TimelineSampler(registry) as timeline:
                state["timeline"] = timeline
                while True:
                    kept.clear()
                    workload = state["workload"] = Workload(
                        pipeline,
                        inputs,
                        options.concurrency,
                        on_partial=on_partial if options.show_partial else None,
                        progress=options.progress,
                    )
                    try:
                        await workload.run()
                    except asyncio.CancelledError:
                        state["interrupted"] = True
                        return  # report what finished; asyncio.run then returns normally
                    if not options.forever:
                        return

        try:
            asyncio.run(main())
        except KeyboardInterrupt:  # interrupted before the workload started
            state["interrupted"] = True
        telemetry.force_flush()
        workload = state.get("workload")
        if workload is None:
            print("stopped before any run; telemetry flushed", file=out)
            return WorkloadResult(outputs=[])
        result = workload.result
        if state.get("interrupted"):
            print(f"\ninterrupted: {result.runs - result.cancelled} of {result.runs} runs finished; telemetry flushed", file=out)
        report = build_report(
            kept.get_finished_spans(),
            registry,
            state["timeline"],
            wall_seconds=result.wall_seconds,
            title=options.title,
        )
        print(render_text(report), file=out)
        for error in result.errors:
            print(f"failed: {error}", file=out)
        if options.json is not None:
            write_json(report, options.json)
            print(f"json report: {options.json}", file=out)
        if options.html is not None:
            write_html(report, options.html)
            print(f"html report: {options.html}", file=out)
        return result
