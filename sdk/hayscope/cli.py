"""The `hayscope` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _whole_number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number: use 1 or more")
    return value


def _port(text: str) -> int:
    value = _whole_number(text)
    if value is None or not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: use 1 to 65535, or 0 for a free one")
    return value


def _run_session(command: str, options: Any, prepare: Any) -> Any:
    """`run_session`, or None (said on stderr) when telemetry cannot be set up."""
    from hayscope.session import SessionSetupError, run_session

    try:
        return run_session(options, prepare)
    except SessionSetupError as error:
        hint = " (--metrics-port N sets the port; 0 for a free one)" if "METRICS_PORT" in str(error).upper() else ""
        print(f"hayscope {command}: {error}{hint}", file=sys.stderr)
        return None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 600, e.g. 0.4")
    return value


def _quiet_model_loading() -> None:
    """The embedding model loads from disk: no hub lookups, no progress bars in the demo's output."""
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(name, value)


def _session_options(args: argparse.Namespace, title: str, service_name: str, forever: bool = False) -> Any:
    from hayscope.session import SessionOptions

    return SessionOptions(
        title=title,
        service_name=service_name,
        concurrency=args.concurrency,
        metrics_port=args.metrics_port,
        show_partial=args.show_partial,
        html=args.html,
        json=args.json,
        forever=forever,
    )


def demo(args: argparse.Namespace) -> int:
    _quiet_model_loading()
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.utils import Secret
    from prometheus_client import CollectorRegistry

    from hayscope.demo import rag
    from hayscope.demo.corpus import QUESTIONS
    from hayscope.llm_server import LatencyModel, LocalLLMServer

    if args.llm == "openai" and not os.environ.get("OPENAI_API_KEY"):
        print(
            "hayscope demo: --llm openai needs OPENAI_API_KEY set: export it, or leave --llm out for the local server",
            file=sys.stderr,
        )
        return 2
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.runs)]
    server = None
    if args.llm == "local":
        p95 = max(args.llm_latency_p95, args.llm_latency) if args.llm_latency > 0 else 0.0
        latency = LatencyModel(median_seconds=args.llm_latency, p95_seconds=p95)
        server = LocalLLMServer(latency=latency).start()
        print(f"llm: local OpenAI-compatible server at {server.base_url} (no API key, no network)")
    else:
        print(f"llm: the OpenAI API, model {args.model}")

    async def prepare(pipeline_kwargs: dict) -> tuple:
        store = InMemoryDocumentStore()
        # Indexing is set-up: traced, but counted in a registry of its own so the report covers the questions.
        await rag.index_corpus(store, tracer_provider=pipeline_kwargs["tracer_provider"], registry=CollectorRegistry())
        if server is not None:
            generator = rag.chat_generator(base_url=server.base_url, api_key=Secret.from_token("local"), model=args.model)
        else:
            generator = rag.chat_generator(base_url=None, api_key=Secret.from_env_var("OPENAI_API_KEY"), model=args.model)
        pipeline = rag.build_rag_pipeline(store, generator, max_workers=args.max_workers, **pipeline_kwargs)
        return pipeline, [rag.question_data(question) for question in questions]

    options = _session_options(
        args, f"hayscope demo: {args.runs} questions, concurrency {args.concurrency}", "hayscope-demo", args.forever
    )
    try:
        result = _run_session("demo", options, prepare)
    finally:
        if server is not None:
            server.stop()
    if result is None:
        return 2
    answers = [outputs["llm"]["replies"][0].text for outputs in result.outputs if outputs and "llm" in outputs]
    if answers:
        print(f"\nfirst answer: {questions[0]!r} -> {answers[0]!r}")
    return 0 if result.failed == 0 else 1


def profile(args: argparse.Namespace) -> int:
    from hayscope.profiling import ProfileError, cycle_inputs, load_pipeline, read_inputs

    async def prepare(pipeline_kwargs: dict) -> tuple:
        extra = {"max_workers": args.max_workers} if args.max_workers else {}
        pipeline = load_pipeline(args.pipeline, **pipeline_kwargs, **extra)
        inputs = read_inputs(args.inputs, pipeline)
        return pipeline, cycle_inputs(inputs, args.runs or len(inputs))

    options = _session_options(
        args, f"hayscope profile {args.pipeline}: concurrency {args.concurrency}", "hayscope-profile"
    )
    try:
        result = _run_session("profile", options, prepare)
    except ProfileError as error:
        print(f"hayscope profile: {error}", file=sys.stderr)
        return 2
    if result is None:
        return 2
    return 0 if result.failed == 0 else 1


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


def _session_flags(parser: argparse.ArgumentParser, runs_help: str) -> None:
    parser.add_argument("--concurrency", type=_positive, default=8, help="runs at a time (default 8)")
    parser.add_argument("--runs", type=_positive, default=None, help=runs_help)
    parser.add_argument("--max-workers", type=_positive, default=None, help="worker threads for sync components")
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve metrics on this port while running (default: $HAYSCOPE_METRICS_PORT, else a free port)",
    )
    parser.add_argument("--show-partial", action="store_true", help="print each component's outputs as they arrive")
    parser.add_argument("--html", type=Path, default=None, help="also write a self-contained HTML report here")
    parser.add_argument("--json", type=Path, default=None, help="also write the report's numbers as JSON here")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hayscope", description="Observability for Haystack async pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="run the instrumented RAG demo offline and report where the time went"
    )
    _session_flags(demo_parser, "questions to ask (default 24)")
    demo_parser.add_argument(
        "--llm",
        choices=("local", "openai"),
        default="local",
        help="local: an OpenAI-compatible server the demo starts on loopback (default); openai: the real API, "
        "needs OPENAI_API_KEY",
    )
    demo_parser.add_argument("--model", default="gpt-4o-mini", help="chat model name (default gpt-4o-mini)")
    demo_parser.add_argument(
        "--llm-latency", type=_seconds, default=0.4, help="local server: median seconds to the first token (default 0.4)"
    )
    demo_parser.add_argument(
        "--llm-latency-p95", type=_seconds, default=1.2, help="local server: p95 seconds to the first token (default 1.2)"
    )
    demo_parser.add_argument("--forever", action="store_true", help="repeat the runs until interrupted (Ctrl-C)")
    profile_parser = commands.add_parser(
        "profile", help="run your own pipeline over inputs at a concurrency and report where the time went"
    )
    profile_parser.add_argument("pipeline", help="a haystack YAML file, or module:factory returning a pipeline")
    profile_parser.add_argument(
        "--inputs", required=True, type=Path, help="JSON Lines file: each line is the data of one run"
    )
    _session_flags(profile_parser, "runs in all, cycling through the inputs (default: one per line)")
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
        args.runs = args.runs or 24
        return demo(args)
    if args.command == "profile":
        return profile(args)
    if args.command == "dashboards":
        return dashboards(args.out, args.check)
    return 2


if __name__ == "__main__":
    sys.exit(main())
