"""collectors/: Prometheus config, recording rules and alerts, checked by Debian's promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hayscope.metrics import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
COLLECTORS = ROOT / "collectors"
RULE_FILES = sorted((COLLECTORS / "rules").glob("*.yml"))
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: apt-get install -y --no-install-recommends prometheus"
    return binary


def run(promtool: str, *args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_prometheus_config_is_valid_and_loads_every_rule_file(promtool):
    output = run(promtool, "check", "config", "prometheus.yml", cwd=COLLECTORS)
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output


def test_every_rule_file_is_valid(promtool):
    output = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert output.count("SUCCESS") == len(RULE_FILES)


def test_the_alerts_fire_when_they_should_and_only_then(promtool):
    output = run(promtool, "test", "rules", "collectors/rules/tests/alerts_test.yml")
    assert "SUCCESS" in output


def rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def test_rules_only_use_metrics_from_the_catalogue():
    known = set()
    for spec in CATALOGUE:
        known.add(spec.name)
        if spec.kind == "histogram":
            known.update(spec.name + suffix for suffix in HISTOGRAM_SUFFIXES)
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        names = set(re.findall(r"\b((?:haystack|hayscope|asyncio)_[a-z_]+)\b", rule["expr"]))
        assert names, rule
        assert names <= known | recorded, names - known


def test_every_alert_says_how_bad_what_happened_and_where_to_look():
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {a["alert"] for a in alerts} == {
        "HaystackEventLoopBlocked",
        "HaystackExecutorSaturated",
        "HaystackPipelineErrorRatioHigh",
        "HaystackPipelineLatencySLO",
        "HaystackSpansDropped",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        assert alert["annotations"]["summary"]
        assert len(alert["annotations"]["description"]) > 100


def test_grafanas_minimum_interval_is_prometheus_scrape_interval():
    # ($__rate_interval is four of Grafana's intervals: a longer one than the scrape coarsens every panel)
    scrape = yaml.safe_load((COLLECTORS / "prometheus.yml").read_text())["global"]["scrape_interval"]
    datasources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/datasources.yml").read_text())
    (prometheus,) = [source for source in datasources["datasources"] if source["type"] == "prometheus"]
    assert prometheus["jsonData"]["timeInterval"] == scrape
