"""The `hayscope` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number: use 1 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: use 1 to 65535, or 0 for a free one")
    return value


def demo(runs: int, concurrency: int, metrics_port: int | None, forever: bool) -> int:
    from hayscope import LoopLagMonitor, example, setup_telemetry
    from hayscope.settings import HAYSCOPE_METRICS_PORT, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT

    registry = CollectorRegistry()
    # Spans are kept in process for the printout; they also go over OTLP when an endpoint is configured.
    sends_otlp = bool(os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT))
    if metrics_port is None and not os.environ.get(HAYSCOPE_METRICS_PORT):
        metrics_port = 0  # a free port, so the demo never collides with a running service
    kept = InMemorySpanExporter()
    with setup_telemetry(
        "hayscope-demo",
        traces_exporter=None if sends_otlp else "none",
        registry=registry,
        metrics_port=metrics_port,
        set_global=False,
    ) as telemetry:
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(kept))
        pipeline = example.build_pipeline(tracer_provider=telemetry.tracer_provider, registry=registry)
        print(f"metrics: {telemetry.metrics_url}   runs: {runs}   concurrency: {concurrency}", flush=True)

        async def ask_batches() -> list[str]:
            async with LoopLagMonitor(registry=registry):
                answers = await example.ask_all(pipeline, runs, concurrency)
                while forever:  # for the compose stack: a steady workload until stopped
                    kept.clear()
                    answers = await example.ask_all(pipeline, runs, concurrency)
                return answers

        try:
            answers = asyncio.run(ask_batches())
        except KeyboardInterrupt:
            print("\nstopped; telemetry flushed")
            return 0
        telemetry.force_flush()
        print(f"\nfirst answer: {answers[0]}\n\nslowest run (offset, duration, span, mode):")
        print("\n".join(example.waterfall(kept.get_finished_spans())))
        print("\nmetrics (OpenMetrics, buckets left out):")
        print("\n".join(example.metric_lines(registry)))
    return 0


def dashboards(out: str, check: bool) -> int:
    from hayscope.dashboards import check_dashboards, write_dashboards

    try:
        if check:
            outdated = check_dashboards(out)
            if outdated:
                print(
                    f"out of date in {out}: {', '.join(outdated)}; regenerate with `hayscope dashboards --out {out}`",
                    file=sys.stderr,
                )
                return 1
            print(f"{out}: every dashboard is up to date")
            return 0
        for path in write_dashboards(out):
            print(path)
        return 0
    except ImportError as error:  # grafana-foundation-sdk missing: the message names the extra to install
        print(f"hayscope dashboards: {error}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hayscope", description="Observability for Haystack async pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run an instrumented example pipeline offline and print its telemetry")
    demo_parser.add_argument("--runs", type=_positive, default=24, help="questions to ask (default 24)")
    demo_parser.add_argument("--concurrency", type=_positive, default=8, help="runs at a time (default 8)")
    demo_parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve metrics on this port (default: $HAYSCOPE_METRICS_PORT, else a free port)",
    )
    demo_parser.add_argument("--forever", action="store_true", help="repeat the runs until interrupted (Ctrl-C)")
    dashboards_parser = commands.add_parser(
        "dashboards", help="write the Grafana dashboards generated from the metric catalogue"
    )
    dashboards_parser.add_argument("--out", default="dashboards", help="directory (default: dashboards)")
    dashboards_parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the files differ from the generated ones"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no usage pings from a demo
    if args.command == "demo":
        return demo(args.runs, args.concurrency, args.metrics_port, args.forever)
    if args.command == "dashboards":
        return dashboards(args.out, args.check)
    return 2


if __name__ == "__main__":
    sys.exit(main())
