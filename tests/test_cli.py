"""`hayscope demo` runs offline and prints the slowest run's spans and the metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hayscope.cli import main


def test_demo_prints_a_waterfall_and_the_metrics(capsys, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    assert main(["demo", "--runs", "6", "--concurrency", "3"]) == 0

    out = capsys.readouterr().out
    assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics\s+runs: 6\s+concurrency: 3", out)
    waterfall = out.split("slowest run (offset, duration, span, mode):\n")[1].split("\n\n")[0].splitlines()
    names = [re.sub(r"^\s*[\d.]+ ms\s+[\d.]+ ms  ", "", line) for line in waterfall]
    # Long waits show as child spans of their component; the demo may or may not have had one.
    waits = ("    waiting for the concurrency limit", "    queued for a worker thread")
    assert [name for name in names if name not in waits] == [
        "haystack.pipeline.run wonders",
        "  haystack.component.run retriever async",
        "  haystack.component.run prompt_builder thread",
        "  haystack.component.run llm async",
    ]
    assert 'haystack_pipeline_runs_total{pipeline="wonders",status="ok"} 6.0' in out


@pytest.mark.parametrize("argv", [["demo", "--runs", "0"], ["demo", "--concurrency", "-2"]])
def test_demo_refuses_counts_below_one(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "is not a positive whole number: use 1 or more" in capsys.readouterr().err


def test_dashboards_check_passes_on_the_committed_files_and_fails_on_a_stale_copy(tmp_path, capsys):
    committed = Path(__file__).resolve().parent.parent / "dashboards"
    assert main(["dashboards", "--check", "--out", str(committed)]) == 0
    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    stale = tmp_path / "hayscope-pipelines.json"
    stale.write_text(stale.read_text().replace("hayscope /", "stale /"))

    assert main(["dashboards", "--check", "--out", str(tmp_path)]) == 1
    assert "out of date in" in capsys.readouterr().err
