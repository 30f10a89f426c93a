"""Several worker processes, as web servers run them: real processes, forked and spawned.

With PROMETHEUS_MULTIPROC_DIR set before Python starts, one scrape shows the sums over every worker;
a worker forked after `setup_telemetry()` exports its spans through an exporter of its own and
inherits no metrics server. prometheus_client chooses multiprocess mode when it is imported, so the
multiprocess tests run an application script in a fresh interpreter (the parent) that starts the
workers; the fork tests fork this test process itself.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import hayscope
from components import AsyncAdd, SyncAdd
from hayscope import telemetry as telemetry_module
from hayscope.testing import OtlpReceiver

TESTS = Path(__file__).resolve().parent
PROTOCOLS = ("grpc", "http/protobuf")

# The application: the parent sets telemetry up and serves the metrics; workers run pipelines.
APP = textwrap.dedent(
    """
    import asyncio, json, multiprocessing, os, signal, sys, types, urllib.request

    from components import AsyncAdd, Gate, SyncAdd
    from hayscope import TracedAsyncPipeline, setup_telemetry
    from hayscope.multiprocess import child_exit, mark_process_dead

    RUNS = (1, 2, 3)  # runs of each of the three workers


    def run(name, runs):
        async def main():
            pipeline = TracedAsyncPipeline(name=name)
            pipeline.add_component("add", AsyncAdd(1))
            pipeline.add_component("offload", SyncAdd(10))
            pipeline.connect("add.value", "offload.value")
            for i in range(runs):
                assert await pipeline.run_async({"add": {"value": i}}) == {"offload": {"value": i + 11}}
        asyncio.run(main())


    def forked(runs):
        run("forked", runs)  # the parent's telemetry, inherited


    def spawned(runs, port):
        # A fresh interpreter sets telemetry up itself, like a uvicorn worker; it serves the same port.
        setup_telemetry(traces_exporter="none", metrics_port=port)
        run("spawned", runs)


    def stuck(ready):
        async def main():
            pipeline = TracedAsyncPipeline(name="stuck")
            gate = Gate()
            pipeline.add_component("gate", gate)
            task = asyncio.ensure_future(pipeline.run_async({"gate": {"value": 0}}))
            await gate.entered.wait()
            ready.send("in flight")
            await task  # never: the parent kills this worker
        asyncio.run(main())


    def scrape(url):
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()


    if __name__ == "__main__":
        telemetry = setup_telemetry(traces_exporter="none", metrics_port=0)
        port = int(telemetry.metrics_url.rsplit(":", 1)[1].split("/")[0])
        run("forked", 1)  # the parent's own run, before any fork: no child may count it again
        pids = {}
        for method, target, extra in (("fork", forked, ()), ("spawn", spawned, (port,))):
            context = multiprocessing.get_context(method)
            workers = [context.Process(target=target, args=(runs, *extra)) for runs in RUNS]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
                assert worker.exitcode == 0, (method, worker.exitcode)
                mark_process_dead(worker.pid)
            pids[method] = [worker.pid for worker in workers]

        ours, theirs = multiprocessing.get_context("fork").Pipe()
        holder = multiprocessing.get_context("fork").Process(target=stuck, args=(theirs,))
        holder.start()
        assert ours.poll(60) and ours.recv() == "in flight"
        during = scrape(telemetry.metrics_url)
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(60)
        child_exit(None, types.SimpleNamespace(pid=holder.pid))  # as gunicorn calls it
        after = scrape(telemetry.metrics_url)

        print(json.dumps({
            "during": during,
            "after": after,
            "pids": pids,
            "holder": holder.pid,
            "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])),
        }))
        telemetry.shutdown()
    """
)


def run_app(tmp_path: Path, code: str = APP, multiproc_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(code)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]),
        "HAYSTACK_TELEMETRY_ENABLED": "False",
    }
    if multiproc_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
    )


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def app_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the application (several processes, ~10 s), shared by the tests that read what it saw."""
    tmp_path = tmp_path_factory.mktemp("multiprocess")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    result = run_app(tmp_path, multiproc_dir=metrics_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- one scrape, every worker ---------------------------------------------------------------------


@pytest.mark.parametrize(("pipeline", "runs"), [("forked", 1 + 1 + 2 + 3), ("spawned", 1 + 2 + 3)])
def test_one_scrape_sums_the_runs_of_every_worker(app_output: dict[str, Any], pipeline: str, runs: int) -> None:
    found = samples(app_output["after"])
    assert value(found, "haystack_pipeline_runs_total", pipeline=pipeline, status="ok") == runs
    assert value(found, "haystack_pipeline_run_duration_seconds_count", pipeline=pipeline, status="ok") == runs
    assert value(found, "haystack_pipeline_run_duration_seconds_bucket", pipeline=pipeline, status="ok", le="+Inf") == runs
    for component, component_type, mode in (("add", "AsyncAdd", "async"), ("offload", "SyncAdd", "thread")):
        labels = {"pipeline": pipeline, "component": component, "component_type": component_type, "mode": mode}
        assert value(found, "haystack_component_duration_seconds_count", **labels, status="ok") == runs
    # In-flight gauges sum over the live processes: nothing left in flight, and the series of a
    # pipeline whose processes all exited (and were marked dead) is gone with them.
    in_flight = value(found, "haystack_pipeline_runs_in_flight", pipeline=pipeline)
    assert in_flight == (0 if pipeline == "forked" else None)  # the parent ran "forked" too: it still lives


def test_a_worker_that_died_mid_run_is_in_flight_until_marked_dead(app_output: dict[str, Any]) -> None:
    assert value(samples(app_output["during"]), "haystack_pipeline_runs_in_flight", pipeline="stuck") == 1
    # Marked dead: its live gauges are gone, and so is the series no live process has.
    assert value(samples(app_output["after"]), "haystack_pipeline_runs_in_flight", pipeline="stuck") is None
    dead = [app_output["holder"], *app_output["pids"]["fork"], *app_output["pids"]["spawn"]]
    files = app_output["files"]
    assert not [name for name in files if name.startswith("gauge_livesum_") and int(name[14:-3]) in dead]
    # Counters and histograms of dead workers stay: a counter never goes down.
    assert all(f"counter_{pid}.db" in files for pid in app_output["pids"]["spawn"])


def test_what_multiprocess_mode_leaves_out(app_output: dict[str, Any]) -> None:
    exposition = app_output["after"]
    assert "hayscope_executor_workers_busy" not in exposition  # read at scrape time in one process
    assert "process_cpu_seconds_total" not in exposition
    assert "# {" not in exposition  # no exemplars
    assert 'pid="' not in exposition


# -- setting it up wrong --------------------------------------------------------------------------


@pytest.fixture
def no_active_telemetry() -> Iterator[None]:
    yield
    leaked = telemetry_module._active
    if leaked is not None:
        leaked.shutdown()


def test_a_missing_multiproc_dir_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_active_telemetry: None
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with pytest.raises(ValueError, match=rf"PROMETHEUS_MULTIPROC_DIR='{missing}' is not a directory: .*mkdir -p"):
        hayscope.setup_telemetry(traces_exporter="none", serve_metrics=False, set_global=False)


def test_a_multiproc_dir_set_after_import_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_active_telemetry: None
) -> None:
    # This test process imported prometheus_client long before: too late for multiprocess mode.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"was set after prometheus_client was imported.*before Python starts"):
        hayscope.setup_telemetry(traces_exporter="none", serve_metrics=False, set_global=False)


FORK_WHILE_A_SAMPLE_IS_WRITTEN = textwrap.dedent(
    """
    import os, signal, threading
    from prometheus_client import values
    import hayscope

    telemetry = hayscope.setup_telemetry(traces_exporter="none", serve_metrics=False, set_global=False)
    (lock,) = [cell.cell_contents for cell in values.ValueClass.inc.__closure__
               if isinstance(cell.cell_contents, type(threading.Lock()))]
    holding, done = threading.Event(), threading.Event()

    def write_a_sample():  # a thread of the parent, in the middle of writing a sample at the fork
        with lock:
            holding.set()
            done.wait()

    writer = threading.Thread(target=write_a_sample)
    writer.start()
    holding.wait()
    child = os.fork()
    if child == 0:
        signal.alarm(10)  # a child stuck on the lock dies of SIGALRM instead of hanging the test
        hayscope.register_metrics(telemetry.registry).pipeline_runs.labels("child", "ok").inc()
        os._exit(0)
    done.set()
    writer.join()
    _, status = os.waitpid(child, 0)
    print(os.waitstatus_to_exitcode(status))
    telemetry.shutdown()
    """
)


def test_a_child_forked_while_the_parent_writes_a_sample_can_write_its_own(tmp_path: Path) -> None:
    multiproc_dir = tmp_path / "metrics"
    multiproc_dir.mkdir()
    result = run_app(tmp_path, FORK_WHILE_A_SAMPLE_IS_WRITTEN, multiproc_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"  # (-14: killed by SIGALRM, stuck on the parent's lock)


# -- fork: spans and the metrics server -----------------------------------------------------------


def traced_runs(telemetry: hayscope.Telemetry, name: str, runs: int) -> None:
    async def main() -> None:
        pipeline = hayscope.TracedAsyncPipeline(
            name=name, tracer_provider=telemetry.tracer_provider, registry=telemetry.registry
        )
        pipeline.add_component("add", AsyncAdd(1))
        pipeline.add_component("offload", SyncAdd(10))
        pipeline.connect("add.value", "offload.value")
        for i in range(runs):
            assert await pipeline.run_async({"add": {"value": i}}) == {"offload": {"value": i + 11}}

    asyncio.run(main())


def forked_child(telemetry: hayscope.Telemetry, report: Connection) -> None:
    """Runs in the forked child: the parent's handle, used as a preloaded gunicorn worker would."""
    guarded = telemetry.span_processor.span_exporter  # type: ignore[union-attr]
    inherited = guarded._exporter
    traced_runs(telemetry, "child", 2)
    flushed = telemetry.force_flush(10_000)
    rebuilt = guarded._exporter is not inherited
    server = telemetry._metrics_server
    assert server is not None
    serving, port_closed = server.serving, server._server.socket.fileno() == -1
    started = time.monotonic()
    telemetry.shutdown(timeout=5)
    report.send(
        {
            "flushed": flushed,
            "rebuilt": rebuilt,
            "serving": serving,
            "port_closed": port_closed,
            "shutdown": time.monotonic() - started,
        }
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_forked_child_exports_through_its_own_exporter_and_inherits_no_metrics_server(
    protocol: str, no_active_telemetry: None
) -> None:
    with OtlpReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_base_endpoint
        telemetry = hayscope.setup_telemetry(
            otlp_protocol=protocol, otlp_endpoint=endpoint, metrics_port=0, set_global=False, registry=CollectorRegistry()
        )
        traced_runs(telemetry, "parent", 1)
        assert telemetry.force_flush()
        receiver.wait_for_spans(3)

        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        child = context.Process(target=forked_child, args=(telemetry, theirs))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        report = ours.recv()

        spans = receiver.wait_for_spans(3 + 6)  # the child flushed before it reported: no waiting on time
        with urllib.request.urlopen(telemetry.metrics_url, timeout=5) as response:  # the parent still serves
            exposition = response.read().decode()
        telemetry.shutdown()

    shutdown = report.pop("shutdown")
    assert report == {"flushed": True, "rebuilt": True, "serving": False, "port_closed": True}
    assert shutdown < 1.0  # no wait for a serving thread that fork did not copy
    names = sorted(span.name for span in spans)
    assert names.count("haystack.pipeline.run child") == 2
    assert names.count("haystack.pipeline.run parent") == 1
    assert 'haystack_pipeline_runs_total{pipeline="parent",status="ok"} 1.0' in exposition
