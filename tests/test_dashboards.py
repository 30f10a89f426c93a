"""The Grafana dashboards in dashboards/: generated from the metric catalogue, and kept in step with it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hayscope import dashboards, metrics
from hayscope.dashboards import DASHBOARD_FILES, build_dashboards, check_dashboards, panel_queries, write_dashboards

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = ROOT / "dashboards"
PROVISIONING = DASHBOARDS_DIR / "provisioning"
BY_NAME = {spec.name: spec for spec in metrics.CATALOGUE}
UNITS = {"s", "ops", "reqps", "percentunit", "short"}
RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|[a-z]+_over_time)\(")


def committed() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8")) for name in DASHBOARD_FILES}


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but rows, rows' nested panels included."""
    found = []
    for panel in model["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels") or [])
        else:
            found.append(panel)
    return found


def metric_names(query: str) -> list[str]:
    """The metric names a PromQL query (or a `label_values(selector, label)` variable query) reads."""
    query = dashboards.label_values_as_promql(query)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    keywords = {"and", "or", "unless", "offset", "bool", "inf", "nan", "on", "ignoring", "group_left", "group_right"}
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text)
    return [name for name in names if name.lower() not in keywords]


def catalogue_spec(name: str) -> metrics.MetricSpec | None:
    if name in BY_NAME:
        return BY_NAME[name]
    base, _, suffix = name.rpartition("_")
    spec = BY_NAME.get(base)
    if spec is not None and spec.kind == "histogram" and suffix in {"bucket", "sum", "count"}:
        return spec
    return None


def all_queries() -> list[tuple[str, str]]:
    return [(name, query) for name, model in committed().items() for query in panel_queries(model)]


# --- generated, committed, in step ---------------------------------------------------------------


def test_committed_dashboards_are_what_the_code_generates():
    stale = check_dashboards(DASHBOARDS_DIR)
    assert not stale, (
        f"dashboards/ is out of date with sdk/hayscope/dashboards.py or the metric catalogue ({', '.join(stale)}): "
        "run `hayscope dashboards` (it writes dashboards/*.json) and commit the result"
    )
    assert build_dashboards() == committed()


def test_files_are_sorted_indented_and_end_with_a_newline():
    for name, model in committed().items():
        text = (DASHBOARDS_DIR / name).read_text(encoding="utf-8")
        assert text == json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n", name


def test_write_then_check_round_trips_and_reports_drift(tmp_path):
    assert check_dashboards(tmp_path / "nowhere") == list(DASHBOARD_FILES)
    written = write_dashboards(tmp_path)
    assert sorted(path.name for path in written) == sorted(DASHBOARD_FILES)
    assert check_dashboards(tmp_path) == []

    (tmp_path / "hayscope-components.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "hayscope-pipelines.json").unlink()
    (tmp_path / "hayscope-renamed.json").write_text("{}\n", encoding="utf-8")  # no longer generated
    (tmp_path / "mine.json").write_text("{}\n", encoding="utf-8")  # not ours: left alone
    assert check_dashboards(tmp_path) == [
        "hayscope-pipelines.json",
        "hayscope-components.json",
        "hayscope-renamed.json",
    ]

    write_dashboards(tmp_path)
    assert check_dashboards(tmp_path) == []
    assert not (tmp_path / "hayscope-renamed.json").exists()
    assert (tmp_path / "mine.json").exists()


def test_a_missing_sdk_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk", None)
    for module in [m for m in sys.modules if m.startswith("grafana_foundation_sdk.")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError, match=re.escape("pip install 'hayscope[dashboards]'")):
        build_dashboards()


def test_importing_the_module_does_not_import_the_sdk():
    code = "import sys, hayscope.dashboards; print('grafana_foundation_sdk' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- the dashboards ------------------------------------------------------------------------------


def test_uids_are_stable_unique_and_titles_prefixed():
    models = committed()
    assert {name: model["uid"] for name, model in models.items()} == {
        "hayscope-pipelines.json": "hayscope-pipelines",
        "hayscope-components.json": "hayscope-components",
        "hayscope-event-loop.json": "hayscope-event-loop",
    }
    for name, model in models.items():
        assert model["title"].startswith("hayscope / "), name
        assert "hayscope" in model["tags"], name
        nested = [panel["id"] for row in model["panels"] for panel in row.get("panels") or []]
        ids = [panel["id"] for panel in model["panels"]] + nested
        assert len(ids) == len(set(ids)) and all(ids), name
    assert len({model["title"] for model in models.values()}) == len(models)


def test_every_panel_has_a_unit_and_a_prometheus_query():
    for name, model in committed().items():
        assert panels(model), name
        for panel in panels(model):
            where = f"{name}: {panel['title']!r}"
            assert panel["fieldConfig"]["defaults"].get("unit") in UNITS, where
            assert panel.get("description"), where
            assert panel["targets"], where
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            for target in panel["targets"]:
                assert target["expr"].strip(), where
                assert target.get("datasource", panel["datasource"]) == panel["datasource"], where


def test_the_panels_each_dashboard_promises():
    titles = {name: [panel["title"] for panel in panels(model)] for name, model in committed().items()}

    def has(name: str, *words: str) -> bool:
        return any(all(word.lower() in title.lower() for word in words) for title in titles[name])

    assert has("hayscope-pipelines.json", "run rate", "status")
    assert has("hayscope-pipelines.json", "error ratio")
    assert has("hayscope-pipelines.json", "duration", "p50", "p95", "p99")
    assert has("hayscope-pipelines.json", "in flight")
    for quantile in ("p50", "p95", "p99"):
        assert has("hayscope-components.json", "duration", quantile, "component", "mode")
    for part in ("schedule wait", "queue wait", "run time", "loop held"):
        assert has("hayscope-components.json", part, "p95"), part
    assert has("hayscope-components.json", "errors", "component")
    assert has("hayscope-components.json", "components in flight")
    assert has("hayscope-event-loop.json", "lag", "p50", "p99")
    assert has("hayscope-event-loop.json", "blocked", "pipeline", "component")
    assert has("hayscope-event-loop.json", "workers busy", "max")
    assert has("hayscope-event-loop.json", "queue depth")
    heatmaps = [p for p in panels(committed()["hayscope-event-loop.json"]) if p["type"] == "heatmap"]
    assert [t["expr"] for p in heatmaps for t in p["targets"] if f"{metrics.EVENT_LOOP_LAG.name}_bucket" in t["expr"]]
    assert all(t["format"] == "heatmap" for p in heatmaps for t in p["targets"])


def test_every_metric_a_query_reads_is_in_the_catalogue():
    used = set()
    for name, query in all_queries():
        found = metric_names(query)
        assert found, f"{name}: no metric in {query!r}"
        for metric in found:
            spec = catalogue_spec(metric)
            assert spec is not None, f"{name}: {metric!r} in {query!r} is not in hayscope.metrics.CATALOGUE"
            used.add(spec.name)
    assert used == set(BY_NAME), f"metrics on no dashboard: {sorted(set(BY_NAME) - used)}"


def test_every_query_filters_on_the_pipeline_and_component_variables_where_it_can():
    for name, query in all_queries():
        for metric in set(metric_names(query)):
            spec = catalogue_spec(metric)
            assert spec is not None
            for selector in re.finditer(rf"(?<![\w:]){re.escape(metric)}(?![\w:])(\{{[^}}]*\}})?", query):
                matchers = selector.group(1) or ""
                if "pipeline" in spec.labels:
                    assert 'pipeline=~"$pipeline"' in matchers or query.startswith("label_values"), (name, query)
                if "component" in spec.labels and not query.startswith("label_values"):
                    assert 'component=~"$component"' in matchers, (name, query)


def test_every_range_is_the_rate_interval():
    for name, query in all_queries():
        ranges = re.findall(r"\[([^\]]*)\]", query)
        assert ranges == ["$__rate_interval"] * len(RANGE_FUNCTIONS.findall(query)), (name, query)


def test_latency_panels_query_exemplars():
    latency_targets = 0
    for name, model in committed().items():
        for panel in panels(model):
            for target in panel["targets"]:
                if "_bucket" in target["expr"]:  # a quantile or a heatmap over a histogram's buckets
                    latency_targets += 1
                    assert target.get("exemplar") is True, (name, panel["title"])
                    assert panel["fieldConfig"]["defaults"]["unit"] == "s", (name, panel["title"])
                else:  # _sum/_count and counters carry no exemplars
                    assert not target.get("exemplar"), (name, panel["title"])
    assert latency_targets >= 10


def test_template_variables():
    for name, model in committed().items():
        variables = {variable["name"]: variable for variable in model["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert "pipeline" in variables, name
        uses_component = any("$component" in query for query in panel_queries(model))
        assert ("component" in variables) == uses_component, name
        for variable_name in ("pipeline", "component"):
            variable = variables.get(variable_name)
            if variable is None:
                continue
            assert variable["type"] == "query" and variable["multi"] and variable["includeAll"], (name, variable_name)
            assert variable["allValue"] == ".*", (name, variable_name)  # "(none)" and overflowed names show under All
            assert variable["query"].startswith(f"label_values({metrics.COMPONENT_DURATION.name}_count"), name
            assert variable["query"].endswith(f", {variable_name})"), name


def test_the_repeated_breakdown_panel_repeats_over_components():
    repeated = [p for p in panels(committed()["hayscope-components.json"]) if p.get("repeat")]
    assert [p["repeat"] for p in repeated] == ["component"]
    exprs = [t["expr"] for t in repeated[0]["targets"]]
    for spec in (
        metrics.COMPONENT_SCHEDULE_WAIT,
        metrics.COMPONENT_QUEUE_WAIT,
        metrics.COMPONENT_RUN_TIME,
        metrics.COMPONENT_LOOP_HELD,
    ):
        assert any(f"{spec.name}_sum" in e and f"{spec.name}_count" in e for e in exprs), spec.name


def test_panel_queries_reads_nested_rows_and_variable_query_objects():
    model = {
        "panels": [
            {"type": "row", "panels": [{"type": "timeseries", "targets": [{"expr": "a"}, {"refId": "B"}]}]},
            {"type": "stat", "targets": [{"expr": "b"}]},
        ],
        "templating": {
            "list": [
                {"type": "datasource", "query": "prometheus"},
                {"type": "query", "query": "label_values(c, pipeline)"},
                {"type": "query", "query": {"query": "label_values(d, component)", "refId": "X"}},
            ]
        },
    }
    assert panel_queries(model) == ["a", "b", "label_values(c, pipeline)", "label_values(d, component)"]
    assert dashboards.label_values_as_promql('label_values(m{pipeline=~"$pipeline"}, component)') == (
        'count by (component) (m{pipeline=~"$pipeline"})'
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) not installed")
def test_every_query_parses_as_promql(tmp_path):
    substituted = [
        dashboards.label_values_as_promql(query)
        .replace("$__rate_interval", "1m")
        .replace("$pipeline", ".*")
        .replace("$component", ".*")
        for _, query in all_queries()
    ]
    records = [{"record": f"dashboard:query_{i}", "expr": query} for i, query in enumerate(substituted)]
    rules = {"groups": [{"name": "dashboards", "rules": records}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- provisioning --------------------------------------------------------------------------------


def test_datasource_provisioning_links_exemplars_to_jaeger():
    config = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    sources = {source["uid"]: source for source in config["datasources"]}
    prometheus, jaeger = sources["prometheus"], sources["jaeger"]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    assert prometheus["isDefault"] is True  # what the dashboards' datasource variable picks
    assert {"name": "trace_id", "datasourceUid": "jaeger"} in prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert jaeger["type"] == "jaeger" and jaeger["url"] == "http://jaeger:16686"


def test_dashboard_provisioning_reads_the_dashboards_folder():
    config = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file" and provider["folder"] == "hayscope"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
