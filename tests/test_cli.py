"""The `hayscope` command: demo, profile and dashboards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from haystack import Pipeline
from haystack.components.builders import PromptBuilder

from hayscope.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--runs", "0"], "'0' is not a positive whole number: use 1 or more"),
        (["demo", "--concurrency", "-2"], "'-2' is not a positive whole number: use 1 or more"),
        (["demo", "--concurrency", "abc"], "--concurrency: 'abc' is not a positive whole number"),
        (["demo", "--metrics-port", "x"], "--metrics-port: 'x' is not a TCP port: use 1 to 65535, or 0"),
    ],
)
def test_demo_refuses_bad_numbers_naming_them(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_dashboards_check_passes_on_the_committed_files_and_fails_on_a_stale_copy(tmp_path, capsys):
    committed = Path(__file__).resolve().parent.parent / "dashboards"
    assert main(["dashboards", "--check", "--out", str(committed)]) == 0
    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    stale = tmp_path / "hayscope-pipelines.json"
    stale.write_text(stale.read_text().replace("hayscope /", "stale /"))

    assert main(["dashboards", "--check", "--out", str(tmp_path)]) == 1
    assert "out of date in" in capsys.readouterr().err


FACTORY = """
import asyncio
import time
from haystack import Pipeline, component


@component
class Embed:
    @component.output_types(value=int)
    def run(self, value: int):
        time.sleep(0.01)
        return {"value": value + 1}


@component
class Answer:
    @component.output_types(value=int)
    def run(self, value: int):
        return {"value": value}

    @component.output_types(value=int)
    async def run_async(self, value: int):
        await asyncio.sleep(DELAY)
        if value < 0:
            raise ValueError("negative")
        return {"value": value * 2}


def build():
    pipeline = Pipeline()
    pipeline.add_component("embed", Embed())
    pipeline.add_component("answer", Answer())
    pipeline.connect("embed.value", "answer.value")
    return pipeline
"""


@pytest.fixture
def factory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "shop.py").write_text(FACTORY.replace("DELAY", "0.005"))
    (tmp_path / "inputs.jsonl").write_text('{"embed": {"value": 1}}\n{"value": 2}\n{"value": -5}\n')
    return tmp_path


def test_profile_runs_a_factory_pipeline_and_reports_every_component(factory, capsys):
    report_path = factory / "report.json"

    code = main(
        ["profile", "shop:build", "--inputs", "inputs.jsonl", "--runs", "9", "--concurrency", "3",
         "--json", str(report_path), "--html", str(factory / "report.html")]
    )

    out = capsys.readouterr().out
    assert code == 1  # three of the runs failed (value -5), and the command says so
    report = json.loads(report_path.read_text())
    assert (report["runs"], report["runs_ok"], report["runs_error"]) == (9, 6, 3)
    components = {c["name"]: c for c in report["components"]}
    assert set(components) == {"embed", "answer"}
    assert (components["embed"]["mode"], components["embed"]["executions"]) == ("thread", 9)
    assert (components["answer"]["mode"], components["answer"]["errors"]) == ("async", 3)
    assert components["embed"]["p50_seconds"] >= 0.01
    assert "verdict:" in out and "failed: run 2: ValueError: negative" in out
    assert (factory / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_profile_runs_a_yaml_pipeline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pipeline = Pipeline()
    pipeline.add_component("prompt", PromptBuilder(template="Q: {{ question }}", required_variables="*"))
    (tmp_path / "p.yaml").write_text(pipeline.dumps())
    (tmp_path / "q.jsonl").write_text('{"question": "why?"}\n')

    assert main(["profile", "p.yaml", "--inputs", "q.jsonl", "--runs", "4", "--json", "r.json"]) == 0

    report = json.loads((tmp_path / "r.json").read_text())
    assert [(c["name"], c["executions"], c["mode"]) for c in report["components"]] == [("prompt", 4, "thread")]
    assert [p["name"] for p in report["pipelines"]] == ["p"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "nowhere.yaml", "--inputs", "inputs.jsonl"], "pipeline file 'nowhere.yaml' does not exist"),
        (["profile", "shop:missing", "--inputs", "inputs.jsonl"], "module 'shop' ("),
        (["profile", "shop:build", "--inputs", "none.jsonl"], "inputs file 'none.jsonl' does not exist"),
    ],
)
def test_profile_errors_name_the_problem_and_exit_2(factory, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_profile_says_when_its_metrics_port_cannot_be_used_and_exits_2(factory, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["profile", "shop:build", "--inputs", "inputs.jsonl", "--metrics-port", str(port)]) == 2
    assert f"hayscope profile: cannot serve metrics on 127.0.0.1:{port}" in capsys.readouterr().err
    monkeypatch.setenv("HAYSCOPE_METRICS_PORT", "abc")
    assert main(["profile", "shop:build", "--inputs", "inputs.jsonl"]) == 2
    assert "HAYSCOPE_METRICS_PORT='abc' is not a TCP port" in capsys.readouterr().err


def test_profile_input_lines_that_do_not_fit_the_pipeline_are_named(factory, capsys):
    (factory / "bad.jsonl").write_text('{"value": 1}\n{"embed": {"valu": 1}}\n')

    assert main(["profile", "shop:build", "--inputs", "bad.jsonl"]) == 2
    assert "bad.jsonl:2: input 'valu' of component 'embed' does not exist" in capsys.readouterr().err


def test_ctrl_c_stops_the_runs_flushes_and_still_reports(factory):
    (factory / "shop.py").write_text(FACTORY.replace("DELAY", "0.2"))
    process = subprocess.Popen(
        [sys.executable, "-m", "hayscope.cli", "profile", "shop:build", "--inputs", "inputs.jsonl",
         "--runs", "400", "--concurrency", "4", "--show-partial"],
        cwd=factory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        # A shell that starts the test suite in the background ignores SIGINT, and the child would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait until runs are under way
        if line.startswith("[run ") and " answer: " in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert "interrupted:" in out and "of 400 runs finished; telemetry flushed" in out
    assert "components (durations in ms" in out and "Traceback" not in err
