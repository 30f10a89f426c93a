"""Against a real Prometheus: a live workload scraped, every dashboard query and recording rule answered,
exemplars that lead to received traces, and the blocked-loop alert firing.

Prometheus is Debian's `prometheus` package, started here on a free loopback port with its own
temporary storage; `.ci/run` installs it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from haystack import component
from haystack.dataclasses import ChatMessage
from prometheus_client import CollectorRegistry

from components import AsyncAdd, AsyncFail, SyncAdd
from hayscope import TracedAsyncPipeline, setup_telemetry
from hayscope.dashboards import build_dashboards, label_values_as_promql, panel_queries
from hayscope.testing import OtlpReceiver

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "collectors" / "rules").glob("*.yml"))
BLOCKED_LOOP_ALERT = "HaystackEventLoopBlocked"
DEADLINE = 90.0  # seconds the whole check may take before it reports what is still missing


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: apt-get install -y --no-install-recommends prometheus"
    return binary


def start_prometheus(binary: str, tmp_path: Path, target_port: int) -> tuple[subprocess.Popen[bytes], str]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULES],
        "scrape_configs": [{"job_name": "hayscope", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # wait for readiness: a condition, polled
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return process, base
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "prometheus.log").read_text()) from None
        time.sleep(0.1)


@component
class LoopBlocker:
    """An async component that blocks the event loop: the workload the alert must catch."""

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        time.sleep(0.15)
        return {"value": value}


@component
class CountingChat:
    """A chat generator (messages in, replies out) reporting token usage: feeds the GenAI panels."""

    model = "counting-chat"

    @component.output_types(replies=list[ChatMessage])
    def run(self, value: int, messages: list[ChatMessage] | None = None) -> dict[str, Any]:
        usage = {"prompt_tokens": 10 + value, "completion_tokens": 3}
        return {"replies": [ChatMessage.from_assistant(str(value), meta={"model": self.model, "usage": usage})]}


def workload_pipelines(**telemetry: Any) -> tuple[TracedAsyncPipeline, TracedAsyncPipeline]:
    rag = TracedAsyncPipeline(name="rag", **telemetry, max_workers=2)
    rag.add_component("embed", SyncAdd(1))
    rag.add_component("retrieve", AsyncAdd(1, delay=0.005))
    rag.add_component("blocker", LoopBlocker())
    rag.connect("embed.value", "retrieve.value")
    rag.connect("retrieve.value", "blocker.value")
    rag.add_component("llm", CountingChat())
    rag.connect("blocker.value", "llm.value")
    failing = TracedAsyncPipeline(name="failing", **telemetry)
    failing.add_component("start", AsyncAdd(1))
    failing.add_component("broken", AsyncFail("upstream down"))
    failing.connect("start.value", "broken.value")
    return rag, failing


def queries_to_check() -> dict[str, str]:
    """Every dashboard panel and variable query, and every recording rule, with variables filled in."""
    queries: dict[str, str] = {}
    for name, dashboard in build_dashboards().items():
        for query in panel_queries(dashboard):
            promql = label_values_as_promql(query) if "label_values(" in query else query
            promql = (
                promql.replace("$__rate_interval", "1m").replace("$pipeline", ".*").replace("$component", ".*")
            )
            queries[f"{name}: {query}"] = promql
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    queries[f"{path.name}: {rule['record']}"] = rule["record"]
    return queries


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


async def test_dashboards_rules_exemplars_and_alerts_work_on_a_live_workload(prometheus_binary, tmp_path, receiver):
    registry = CollectorRegistry()
    telemetry = setup_telemetry(
        "integration",
        otlp_protocol="grpc",
        otlp_endpoint=receiver.grpc_endpoint,
        registry=registry,
        metrics_port=0,
        monitor_event_loop=True,
        loop_lag_interval=0.05,
        set_global=False,
    )
    metrics_port = int(telemetry.metrics_url.rsplit(":", 1)[1].split("/")[0])
    process, base = start_prometheus(prometheus_binary, tmp_path, metrics_port)
    rag, failing = workload_pipelines(tracer_provider=telemetry.tracer_provider, registry=registry)
    pending = queries_to_check()
    started = time.time()
    alert_fired = False
    try:
        deadline = time.monotonic() + DEADLINE
        while (pending or not alert_fired) and time.monotonic() < deadline:
            # One round of the workload: concurrent runs mixing async and thread-offloaded
            # components, one failing run and a component blocking the loop.
            runs = [rag.run_async({"embed": {"value": i}}) for i in range(4)]
            outcomes = await asyncio.gather(*runs, failing.run_async({"start": {"value": 0}}), return_exceptions=True)
            assert [type(o).__name__ for o in outcomes] == ["dict"] * 4 + ["PipelineRuntimeError"]
            # Prometheus is asked from a thread: a blocking call on the loop would itself be a stall.
            for label, promql in list(pending.items()):
                if (await asyncio.to_thread(api, base, "/api/v1/query", query=promql))["result"]:
                    del pending[label]
            alerts = (await asyncio.to_thread(api, base, "/api/v1/alerts"))["alerts"]
            alert_fired = any(a["labels"]["alertname"] == BLOCKED_LOOP_ALERT and a["state"] == "firing" for a in alerts)
        telemetry.force_flush()

        assert not pending, f"queries with no series after {DEADLINE:.0f}s: {sorted(pending)}"
        assert alert_fired, f"{BLOCKED_LOOP_ALERT} did not fire: {api(base, '/api/v1/alerts')}"
        firing = [a for a in api(base, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == BLOCKED_LOOP_ALERT]
        # The blocking component is named, and no other component is ever blamed; a stall outside any
        # component (an import on the first run, a garbage collection) may add a "(none)" alert.
        blamed = {a["labels"].get("component") for a in firing}
        assert "blocker" in blamed and blamed <= {"blocker", "(none)"}, blamed
        exemplars = api(
            base,
            "/api/v1/query_exemplars",
            query='haystack_component_duration_seconds_bucket{pipeline="rag"}',
            start=str(started - 60),
            end=str(time.time() + 60),
        )
        trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
        received = {span.trace_id for span in receiver.spans()}
        assert trace_ids, "Prometheus stored no exemplars"
        assert trace_ids <= received, trace_ids - received
    finally:
        process.terminate()
        process.wait(timeout=30)
        telemetry.shutdown()
