"""Grafana dashboards for hayscope's metrics, generated in code from the metric catalogue.

`build_dashboards()` returns the dashboards' JSON models, `write_dashboards()` writes them as the
files committed in `dashboards/` (what Grafana provisions), and `check_dashboards()` tells which of
those files are out of date. Every metric name comes from `hayscope.metrics`; every panel's query
filters on the `pipeline` and `component` template variables wherever its metric has those labels.

The dashboards are built with grafana-foundation-sdk (pinned for Grafana 11.6), an optional extra:
`pip install 'hayscope[dashboards]'`. Nothing here imports it until a dashboard is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

from hayscope import metrics
from hayscope.metrics import MetricSpec

if TYPE_CHECKING:  # pragma: no cover
    from grafana_foundation_sdk.cog.builder import Builder

__all__ = [
    "DASHBOARD_FILES",
    "DATASOURCE_VARIABLE",
    "INSTALL_HINT",
    "RATE_INTERVAL",
    "build_dashboards",
    "check_dashboards",
    "label_values_as_promql",
    "panel_queries",
    "render_dashboard",
    "write_dashboards",
]

INSTALL_HINT: Final = "pip install 'hayscope[dashboards]'"

# File name -> dashboard uid. The uids never change: Grafana links, bookmarks and provisioning key on them.
DASHBOARD_FILES: Final[dict[str, str]] = {
    "hayscope-pipelines.json": "hayscope-pipelines",
    "hayscope-components.json": "hayscope-components",
    "hayscope-event-loop.json": "hayscope-event-loop",
}
# Generated files match this; a file matching it that is no longer generated is stale.
_GENERATED_GLOB: Final = "hayscope-*.json"

TAGS: Final = ("hayscope", "haystack")
DATASOURCE_VARIABLE: Final = "datasource"
PIPELINE_VARIABLE: Final = "pipeline"
COMPONENT_VARIABLE: Final = "component"
RATE_INTERVAL: Final = "$__rate_interval"
# "All" as a regex, so that series whose label value is not among the variable's options (the
# event-loop stalls of pipeline="(none)", names past the cardinality cap) still show under All.
_ALL_VALUE: Final = ".*"
_PROMETHEUS: Final = "prometheus"


# --- PromQL, from the catalogue ------------------------------------------------------------------


def _selector(spec: MetricSpec, suffix: str = "", **matchers: str) -> str:
    """`name{...}`: filtered on $pipeline and $component wherever the metric has those labels."""
    if suffix and spec.kind != "histogram":
        raise ValueError(f"{spec.name} is a {spec.kind}: only a histogram has _bucket/_sum/_count series")
    parts = [f'{label}=~"${label}"' for label in (PIPELINE_VARIABLE, COMPONENT_VARIABLE) if label in spec.labels]
    for label, value in matchers.items():
        if label not in spec.labels:
            raise ValueError(f"{spec.name} has no label {label!r}: its labels are {spec.labels}")
        parts.append(f'{label}="{value}"')
    return f"{spec.name}{suffix}{{{', '.join(parts)}}}" if parts else f"{spec.name}{suffix}"


def _by(labels: Sequence[str]) -> str:
    return f"sum by ({', '.join(labels)}) " if labels else "sum"


def _rate(spec: MetricSpec, by: Sequence[str] = (), suffix: str = "", **matchers: str) -> str:
    if spec.kind == "gauge":
        raise ValueError(f"{spec.name} is a gauge: rate() is for counters and histograms")
    return f"{_by(by)}(rate({_selector(spec, suffix, **matchers)}[{RATE_INTERVAL}]))"


def _quantile(quantile: float, spec: MetricSpec, by: Sequence[str] = ()) -> str:
    return f"histogram_quantile({quantile}, {_rate(spec, (*by, 'le'), '_bucket')})"


def _mean(spec: MetricSpec, by: Sequence[str] = ()) -> str:
    """Mean seconds per observation: rate(sum) / rate(count)."""
    return f"{_rate(spec, by, '_sum')} / {_rate(spec, by, '_count')}"


def _ratio(spec: MetricSpec, by: Sequence[str], suffix: str = "", **matchers: str) -> str:
    """Share of the counter's increase that has the given labels, e.g. the error ratio.

    `or 0 * whole`: a series that does not exist yet (no run has failed so far) reads as 0, not as
    "No data".
    """
    whole = _rate(spec, by, suffix)
    return f"({_rate(spec, by, suffix, **matchers)} or 0 * {whole}) / {whole}"


def _gauge(spec: MetricSpec, by: Sequence[str] = ()) -> str:
    if spec.kind != "gauge":
        raise ValueError(f"{spec.name} is a {spec.kind}, not a gauge")
    return f"{_by(by)}({_selector(spec)})"


def _legend(labels: Iterable[str], prefix: str = "") -> str:
    text = " ".join(f"{{{{{label}}}}}" for label in labels)
    return f"{prefix} {text}".strip() if prefix else text


_QUANTILES: Final = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
_COMPONENT_KEYS: Final = ("pipeline", "component")
_COMPONENT_MODE_KEYS: Final = ("pipeline", "component", "mode")


# --- the SDK, loaded on first use ----------------------------------------------------------------


def _sdk() -> Any:
    """grafana-foundation-sdk's modules, or an ImportError that says how to install them."""
    try:
        from grafana_foundation_sdk.builders import common, dashboard, heatmap, prometheus, stat, timeseries
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.models import common as common_models
        from grafana_foundation_sdk.models import dashboard as dashboard_models
        from grafana_foundation_sdk.models import heatmap as heatmap_models
        from grafana_foundation_sdk.models import prometheus as prometheus_models
    except ImportError as exc:
        raise ImportError(
            "building hayscope's Grafana dashboards needs grafana-foundation-sdk, which is not installed: "
            f"run `{INSTALL_HINT}`"
        ) from exc

    return SimpleNamespace(
        common=common,
        dashboard=dashboard,
        heatmap=heatmap,
        prometheus=prometheus,
        stat=stat,
        timeseries=timeseries,
        JSONEncoder=JSONEncoder,
        m_common=common_models,
        m_dashboard=dashboard_models,
        m_heatmap=heatmap_models,
        m_prometheus=prometheus_models,
    )


@dataclass(frozen=True)
class _Target:
    """One Prometheus query of a panel."""

    expr: str
    legend: str
    exemplar: bool = False
    heatmap: bool = False


def _latency(expr: str, legend: str) -> _Target:
    """A query over a histogram's buckets: its exemplars link the panel to the traces."""
    return _Target(expr, legend, exemplar=True)


class _Board:
    """A dashboard under construction: numbers panels, lays them out left to right in rows."""

    def __init__(self, sdk: Any, uid: str, title: str, description: str, variables: Sequence[str]) -> None:
        self.sdk = sdk
        self.datasource = sdk.m_dashboard.DataSourceRef(type_val=_PROMETHEUS, uid=f"${{{DATASOURCE_VARIABLE}}}")
        self.next_id = 1
        d, md = sdk.dashboard, sdk.m_dashboard
        self.builder = (
            d.Dashboard(f"hayscope / {title}")
            .uid(uid)
            .description(description)
            .tags(list(TAGS))
            .editable()
            .tooltip(md.DashboardCursorSync.CROSSHAIR)
            .time("now-1h", "now")
            .timezone("browser")
            .refresh("30s")
            .link(
                d.DashboardLink("hayscope")
                .type(md.DashboardLinkType.DASHBOARDS)
                .tags([TAGS[0]])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            )
            .annotation(  # Grafana's own, which it adds to a dashboard that has none
                d.AnnotationQuery()
                .name("Annotations & Alerts")
                .datasource(md.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                .enable(True)
                .hide(True)
                .icon_color("rgba(0, 211, 255, 1)")
                .type("dashboard")
                .built_in(1)
            )
            .with_variable(d.DatasourceVariable(DATASOURCE_VARIABLE).label("Data source").type(_PROMETHEUS))
        )
        for variable in variables:
            self.builder.with_variable(self._query_variable(variable))

    def _query_variable(self, name: str) -> Builder[Any]:
        d, md = self.sdk.dashboard, self.sdk.m_dashboard
        source = metrics.COMPONENT_DURATION
        if name == PIPELINE_VARIABLE:
            query = f"label_values({source.name}_count, {PIPELINE_VARIABLE})"
        elif name == COMPONENT_VARIABLE:
            query = f'label_values({source.name}_count{{pipeline=~"${PIPELINE_VARIABLE}"}}, {COMPONENT_VARIABLE})'
        else:  # pragma: no cover - a programming error
            raise ValueError(f"no template variable {name!r}")
        return (
            d.QueryVariable(name)
            .label(name.capitalize())
            .datasource(self.datasource)
            .query(query)
            .refresh(md.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(md.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
            .multi(True)
            .include_all(True)
            .all_value(_ALL_VALUE)
            .current(md.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )

    def _id(self) -> int:
        panel_id, self.next_id = self.next_id, self.next_id + 1
        return panel_id

    def row(self, title: str) -> None:
        self.builder.with_row(self.sdk.dashboard.Row(title).id(self._id()))

    def _common(
        self,
        panel: Any,
        title: str,
        description: str,
        unit: str,
        targets: Sequence[_Target],
        width: int,
        height: int,
    ) -> Any:
        panel.id(self._id()).title(title).description(description).unit(unit).datasource(self.datasource)
        panel.span(width).height(height)
        for ref_id, target in zip("ABCDEFGHIJ", targets, strict=False):
            query = (
                self.sdk.prometheus.Dataquery()
                .ref_id(ref_id)
                .datasource(self.datasource)
                .expr(target.expr)
                .legend_format(target.legend)
                .range()
            )
            if target.exemplar:
                query.exemplar(True)
            if target.heatmap:
                query.format(self.sdk.m_prometheus.PromQueryFormat.HEATMAP)
            panel.with_target(query)
        return panel

    def timeseries(
        self,
        title: str,
        description: str,
        unit: str,
        targets: Sequence[_Target],
        *,
        width: int = 12,
        height: int = 8,
        dashed: Sequence[str] = (),
        repeat: str | None = None,
    ) -> None:
        c, mc, md = self.sdk.common, self.sdk.m_common, self.sdk.m_dashboard
        panel = self._common(self.sdk.timeseries.Panel(), title, description, unit, targets, width, height)
        panel.min(0).fill_opacity(10).line_width(1).show_points(mc.VisibilityMode.NEVER)
        panel.legend(
            c.VizLegendOptions()
            .show_legend(True)
            .display_mode(mc.LegendDisplayMode.TABLE)
            .placement(mc.LegendPlacement.BOTTOM)
            .calcs(["mean", "max", "lastNotNull"])
            .sort_by("Max")
            .sort_desc(True)
        )
        panel.tooltip(c.VizTooltipOptions().mode(mc.TooltipDisplayMode.MULTI).sort(mc.SortOrder.DESCENDING))
        for ref_id in dashed:  # a limit drawn as a dashed line, e.g. the executor's max workers
            panel.override_by_query(
                ref_id,
                [
                    md.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
                    md.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                ],
            )
        if repeat is not None:
            panel.repeat(repeat).repeat_direction("h").max_per_row(3)
        self.builder.with_panel(panel)

    def stat(
        self, title: str, description: str, unit: str, target: _Target, thresholds: Sequence[tuple[float | None, str]]
    ) -> None:
        c, mc, md = self.sdk.common, self.sdk.m_common, self.sdk.m_dashboard
        panel = self._common(self.sdk.stat.Panel(), title, description, unit, [target], 6, 4)
        panel.graph_mode(mc.BigValueGraphMode.AREA).color_mode(mc.BigValueColorMode.VALUE)
        panel.reduce_options(c.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        panel.thresholds(
            self.sdk.dashboard.ThresholdsConfig()
            .mode(md.ThresholdsMode.ABSOLUTE)
            .steps([md.Threshold(value=value, color=color) for value, color in thresholds])
        )
        self.builder.with_panel(panel)

    def heatmap(
        self, title: str, description: str, unit: str, target: _Target, *, width: int = 12, height: int = 8
    ) -> None:
        h, mh, mc = self.sdk.heatmap, self.sdk.m_heatmap, self.sdk.m_common
        panel = self._common(h.Panel(), title, description, unit, [target], width, height)
        panel.calculate(False)  # Prometheus buckets, already cumulative by `le`
        panel.rows_frame(h.RowsHeatmapOptions().layout(mc.HeatmapCellLayout.LE))
        panel.y_axis(h.YAxisConfig().unit(unit))
        panel.color(
            h.HeatmapColorOptions()
            .mode(mh.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .scale(mh.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        panel.cell_gap(1).show_legend().mode(mc.TooltipDisplayMode.SINGLE).show_y_histogram()
        panel.max_data_points(60)  # about one column per minute of the default hour
        self.builder.with_panel(panel)

    def build(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.builder.build(), cls=self.sdk.JSONEncoder))


# --- the dashboards ------------------------------------------------------------------------------

_GREEN, _ORANGE, _RED = "green", "orange", "red"


def _pipelines(sdk: Any) -> dict[str, Any]:
    runs, duration, in_flight = metrics.PIPELINE_RUNS, metrics.PIPELINE_RUN_DURATION, metrics.PIPELINE_RUNS_IN_FLIGHT
    board = _Board(
        sdk,
        DASHBOARD_FILES["hayscope-pipelines.json"],
        "Pipelines",
        "Haystack pipeline runs: how many, how they ended, how long they took, how many are running.",
        [PIPELINE_VARIABLE],
    )
    board.row("Now")
    board.stat("Runs per second", runs.help, "ops", _Target(_rate(runs), "runs/s"), [(None, _GREEN)])
    board.stat(
        "Error ratio",
        f"Share of finished runs that failed. {runs.help}",
        "percentunit",
        _Target(_ratio(runs, (), status="error"), "errors"),
        [(None, _GREEN), (0.01, _ORANGE), (0.05, _RED)],
    )
    board.stat(
        "Cancelled ratio",
        f"Share of finished runs that were cancelled or whose stream was closed early. {runs.help}",
        "percentunit",
        _Target(_ratio(runs, (), status="cancelled"), "cancelled"),
        [(None, _GREEN), (0.05, _ORANGE)],
    )
    board.stat("Runs in flight", in_flight.help, "short", _Target(_gauge(in_flight), "in flight"), [(None, _GREEN)])

    board.row("Runs")
    board.timeseries(
        "Run rate by status",
        runs.help,
        "ops",
        [_Target(_rate(runs, ("pipeline", "status")), _legend(("pipeline", "status")))],
    )
    board.timeseries(
        "Error ratio by pipeline",
        f"Share of each pipeline's finished runs that failed (errors) or were cancelled. {runs.help}",
        "percentunit",
        [
            _Target(_ratio(runs, ("pipeline",), status="error"), _legend(("pipeline",), "errors")),
            _Target(_ratio(runs, ("pipeline",), status="cancelled"), _legend(("pipeline",), "cancelled")),
        ],
    )
    board.timeseries(
        "Run duration p50 / p95 / p99 by pipeline",
        f"{duration.help} Exemplars (dots) open the run's trace.",
        "s",
        [_latency(_quantile(q, duration, ("pipeline",)), _legend(("pipeline",), name)) for q, name in _QUANTILES],
        width=24,
        height=9,
    )
    board.timeseries(
        "Mean run duration by pipeline and status",
        f"{duration.help} Failed and cancelled runs are often much shorter than good ones.",
        "s",
        [_Target(_mean(duration, ("pipeline", "status")), _legend(("pipeline", "status")))],
    )
    board.timeseries(
        "Runs in flight by pipeline",
        in_flight.help,
        "short",
        [_Target(_gauge(in_flight, ("pipeline",)), _legend(("pipeline",)))],
    )
    return board.build()


def _components(sdk: Any) -> dict[str, Any]:
    duration, in_flight = metrics.COMPONENT_DURATION, metrics.COMPONENTS_IN_FLIGHT
    board = _Board(
        sdk,
        DASHBOARD_FILES["hayscope-components.json"],
        "Components",
        "Haystack component executions: rate, errors, duration, and where each execution's time went "
        "(waiting to be scheduled, waiting for a worker thread, running, holding the event loop).",
        [PIPELINE_VARIABLE, COMPONENT_VARIABLE],
    )
    board.row("Executions")
    board.timeseries(
        "Executions per second by component and status",
        duration.help,
        "ops",
        [_Target(_rate(duration, (*_COMPONENT_KEYS, "status"), "_count"), _legend((*_COMPONENT_KEYS, "status")))],
    )
    board.timeseries(
        "Errors per second by component",
        f"Component executions that raised. {duration.help}",
        "ops",
        [_Target(_rate(duration, _COMPONENT_KEYS, "_count", status="error"), _legend(_COMPONENT_KEYS))],
    )
    board.timeseries(
        "Error ratio by component",
        "Share of each component's executions that raised.",
        "percentunit",
        [_Target(_ratio(duration, _COMPONENT_KEYS, "_count", status="error"), _legend(_COMPONENT_KEYS))],
    )
    board.timeseries(
        "Components in flight",
        in_flight.help,
        "short",
        [_Target(_gauge(in_flight, _COMPONENT_MODE_KEYS), _legend(_COMPONENT_MODE_KEYS))],
    )

    board.row("Duration by component and mode")
    for quantile, name in _QUANTILES:
        board.timeseries(
            f"Component duration {name} by component and mode",
            f"{duration.help} Exemplars (dots) open the execution's trace.",
            "s",
            [_latency(_quantile(quantile, duration, _COMPONENT_MODE_KEYS), _legend(_COMPONENT_MODE_KEYS))],
            width=8,
        )

    board.row("Where the time went (p95)")
    for spec, title in (
        (metrics.COMPONENT_SCHEDULE_WAIT, "Schedule wait p95 by component"),
        (metrics.COMPONENT_QUEUE_WAIT, "Queue wait for a worker thread p95 by component"),
        (metrics.COMPONENT_RUN_TIME, "Run time p95 by component"),
        (metrics.COMPONENT_LOOP_HELD, "Event loop held p95 by component"),
    ):
        board.timeseries(
            title,
            f"{spec.help} Exemplars (dots) open the execution's trace.",
            "s",
            [_latency(_quantile(0.95, spec, _COMPONENT_MODE_KEYS), _legend(_COMPONENT_MODE_KEYS))],
        )

    board.row("Where the time went: mean per execution, one panel per component")
    board.timeseries(
        f"${COMPONENT_VARIABLE}: mean seconds per execution",
        "Mean of each part of one execution's time, rate(sum) / rate(count). Thread mode: duration ≈ "
        "schedule wait + queue wait + run time. Async mode: duration ≈ schedule wait + run time, and "
        "loop held is the part of the run time the component's own code kept the event loop busy.",
        "s",
        [
            _Target(_mean(spec, ("pipeline",)), _legend(("pipeline",), part))
            for spec, part in (
                (duration, "duration"),
                (metrics.COMPONENT_SCHEDULE_WAIT, "schedule wait"),
                (metrics.COMPONENT_QUEUE_WAIT, "queue wait"),
                (metrics.COMPONENT_RUN_TIME, "run time"),
                (metrics.COMPONENT_LOOP_HELD, "loop held"),
            )
        ],
        width=8,
        repeat=COMPONENT_VARIABLE,
    )

    tokens, operation = metrics.GENAI_TOKEN_USAGE, metrics.GENAI_OPERATION_DURATION
    board.row("GenAI: generators, embedders, retrievers")
    token_keys = ("gen_ai_request_model", "gen_ai_token_type")
    board.timeseries(
        "Tokens per second by model and token type",
        f"{tokens.help} Summed over all pipelines.",
        "short",
        [_Target(_rate(tokens, token_keys, "_sum"), _legend(token_keys))],
    )
    operation_keys = ("gen_ai_operation_name", "gen_ai_request_model")
    board.timeseries(
        "GenAI operation duration p95 by operation and model",
        f"{operation.help} Exemplars (dots) open the execution's trace.",
        "s",
        [_latency(_quantile(0.95, operation, operation_keys), _legend(operation_keys))],
    )
    return board.build()


def _event_loop(sdk: Any) -> dict[str, Any]:
    lag, blocked = metrics.EVENT_LOOP_LAG, metrics.EVENT_LOOP_BLOCKED
    busy, most, queued = metrics.EXECUTOR_WORKERS_BUSY, metrics.EXECUTOR_WORKERS_MAX, metrics.EXECUTOR_QUEUE_DEPTH
    board = _Board(
        sdk,
        DASHBOARD_FILES["hayscope-event-loop.json"],
        "Event loop",
        "The asyncio event loop and the executor: how late the loop ran, which component's code blocked it, "
        "and whether sync components wait for a worker thread; and spans lost on the way to the collector.",
        [PIPELINE_VARIABLE, COMPONENT_VARIABLE],
    )
    board.row("Event loop lag")
    board.timeseries(
        "Event loop lag p50 / p99",
        f"{lag.help} Process-wide, by scrape job. Exemplars (dots) open the trace of the run whose "
        "component held the loop.",
        "s",
        [_latency(_quantile(q, lag, ("job",)), _legend(("job",), name)) for q, name in _QUANTILES if name != "p95"],
    )
    board.heatmap(
        "Event loop lag distribution",
        f"{lag.help} Each column is one interval's histogram; exemplars open traces.",
        "s",
        _Target(_rate(lag, ("le",), "_bucket"), "{{le}}", exemplar=True, heatmap=True),
    )

    board.row("Who held the loop")
    board.timeseries(
        "Event loop blocked by pipeline / component",
        f"Share of wall time the loop was blocked past the threshold. {blocked.help}",
        "percentunit",
        [_Target(_rate(blocked, _COMPONENT_KEYS), _legend(_COMPONENT_KEYS))],
    )
    loop_held = metrics.COMPONENT_LOOP_HELD
    board.timeseries(
        "Event loop time held by component code",
        f"Share of wall time each async component's own code kept the loop busy, stalls or not. {loop_held.help}",
        "percentunit",
        [_Target(_rate(loop_held, _COMPONENT_KEYS, "_sum"), _legend(_COMPONENT_KEYS))],
    )

    board.row("Executor (sync components in worker threads)")
    board.timeseries(
        "Executor workers busy / max",
        f"{busy.help} Dashed: {most.help.lower()}",
        "short",
        [
            _Target(_gauge(busy, ("executor",)), _legend(("executor",), "busy")),
            _Target(_gauge(most, ("executor",)), _legend(("executor",), "max")),
        ],
        width=8,
        dashed=("B",),
    )
    board.timeseries(
        "Executor queue depth",
        queued.help,
        "short",
        [_Target(_gauge(queued, ("executor",)), _legend(("executor",)))],
        width=8,
    )
    queue_wait = metrics.COMPONENT_QUEUE_WAIT
    board.timeseries(
        "Queue wait for a worker thread p95 by component",
        f"{queue_wait.help} Exemplars (dots) open the execution's trace.",
        "s",
        [_latency(_quantile(0.95, queue_wait, _COMPONENT_KEYS), _legend(_COMPONENT_KEYS))],
        width=8,
    )

    dropped = metrics.SPANS_DROPPED
    board.row("Span export")
    board.timeseries(
        "Spans dropped by reason",
        f"Spans per second lost on the way to the collector. {dropped.help} "
        "hayscope also logs one warning per reason and minute.",
        "ops",
        [_Target(_rate(dropped, ("reason",)), _legend(("reason",)))],
        width=24,
    )
    return board.build()


_BUILDERS: Final = {
    "hayscope-pipelines.json": _pipelines,
    "hayscope-components.json": _components,
    "hayscope-event-loop.json": _event_loop,
}


# --- the public API ------------------------------------------------------------------------------


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard, by file name: its Grafana JSON model as a dict.

    Raises ImportError naming `pip install 'hayscope[dashboards]'` when grafana-foundation-sdk is missing.
    """
    sdk = _sdk()
    return {name: build(sdk) for name, build in _BUILDERS.items()}


def render_dashboard(model: dict[str, Any]) -> str:
    """A dashboard model as the committed file's text: sorted keys, indent 2, trailing newline."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_dashboards(directory: str | Path) -> list[Path]:
    """Write every dashboard into `directory` (created if needed); returns the files written.

    A `hayscope-*.json` there that is no longer generated (a dashboard renamed or dropped) is
    removed, so Grafana does not keep provisioning it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dashboards = build_dashboards()
    for stale in _stale_files(directory, dashboards):
        stale.unlink()
    written = []
    for name, model in dashboards.items():
        path = directory / name
        path.write_text(render_dashboard(model), encoding="utf-8")
        written.append(path)
    return written


def check_dashboards(directory: str | Path) -> list[str]:
    """Names of the files in `directory` that differ from what `build_dashboards()` generates, are
    missing, or are stale `hayscope-*.json` no longer generated; empty when all are up to date."""
    directory = Path(directory)
    dashboards = build_dashboards()
    outdated = []
    for name, model in dashboards.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render_dashboard(model):
            outdated.append(name)
    outdated.extend(path.name for path in _stale_files(directory, dashboards))
    return outdated


def _stale_files(directory: Path, dashboards: dict[str, Any]) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.glob(_GENERATED_GLOB) if path.name not in dashboards)


def panel_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL query of a dashboard JSON model: each panel target's `expr` (rows' nested panels
    included), then each query variable's query (Grafana's `label_values(selector, label)` form).

    The queries still hold Grafana's variables: `$__rate_interval`, `$pipeline`, `$component`.
    """
    queries: list[str] = []

    def visit(panels: Iterable[dict[str, Any]]) -> None:
        for panel in panels:
            queries.extend(target["expr"] for target in panel.get("targets") or () if target.get("expr"))
            visit(panel.get("panels") or ())

    visit(dashboard.get("panels") or ())
    for variable in (dashboard.get("templating") or {}).get("list") or ():
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if query:
            queries.append(query)
    return queries


_LABEL_VALUES: Final = re.compile(
    r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$"
)


def label_values_as_promql(query: str) -> str:
    """A variable's `label_values(selector, label)` as plain PromQL (`count by (label) (selector)`),
    which Prometheus itself can evaluate; any other query is returned as it is."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        return query
    return f"count by ({match['label']}) ({match['selector']})"
