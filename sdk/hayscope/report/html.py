"""`render_html`: the report as one self-contained HTML file.

No scripts run and nothing is fetched: the CSS is inline, the plots are inline SVG drawn by
plots.py, and the report's JSON rides along in a `<script type="application/json">` data block
(inert) for anyone who wants the numbers. Every user-provided string is escaped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hayscope.report.fmt import MISSING, component_cells, ms, num, pct, rate, secs
from hayscope.report.json_report import to_json_text
from hayscope.report.model import Report
from hayscope.report.plots import breakdown_plot, in_flight_plot, latency_plot, loop_lag_plot, waterfall_plot
from hayscope.report.svg import esc

__all__ = ["render_html", "write_html"]

STYLE = """
:root { color-scheme: light; --ink: #1d232a; --muted: #5b6670; --line: #d9dee3; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #f6f7f9; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
.meta { color: var(--muted); margin: 0 0 16px; }
.verdict { background: #fff; border-left: 5px solid var(--accent); padding: 12px 16px; font-size: 16px;
           border-radius: 4px; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.notes { color: #7a4b00; background: #fff6e5; border-radius: 4px; padding: 8px 12px 8px 30px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px; margin: 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card dt { color: var(--muted); font-size: 12px; }
.card dd { margin: 2px 0 0; font-size: 17px; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 6px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td { font-size: 13px; }
th { background: #eef1f4; font-weight: 600; font-size: 12px; }
.legend-note { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
td.num, th.num { text-align: right; }
tr:last-child td { border-bottom: 0; }
figure { margin: 0 0 18px; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
svg.plot { display: block; width: 100%; height: auto; font: 12px system-ui, -apple-system, "Segoe UI", Roboto,
           Arial, sans-serif; }
svg .plot-title { font-size: 15px; font-weight: 600; fill: var(--ink); }
svg .axis { stroke: #6b7580; stroke-width: 1; }
svg .grid { stroke: #e7eaee; stroke-width: 1; }
svg .tick { fill: var(--muted); font-size: 11px; }
svg .axis-label { fill: var(--ink); font-size: 12px; font-weight: 600; }
svg .category, svg .legend text { fill: var(--ink); font-size: 12px; }
svg .no-data { fill: var(--muted); font-size: 14px; }
code { font-size: 12px; }
"""


def render_html(report: Report) -> str:
    """The whole page as a string."""
    sections = [
        f'<header><h1>{esc(report.title)}</h1><p class="meta">{esc(_meta(report))}</p></header>',
        f'<section aria-labelledby="verdict-h"><h2 id="verdict-h">Verdict</h2>'
        f'<p class="verdict" id="verdict">{esc(report.verdict)}</p>{_notes(report.notes)}</section>',
        _summary(report),
        _pipelines(report),
        _components(report),
        '<section aria-labelledby="plots-h"><h2 id="plots-h">Plots</h2>'
        + "".join(
            f"<figure>{plot}</figure>"
            for plot in (latency_plot(report), breakdown_plot(report), loop_lag_plot(report), in_flight_plot(report))
        )
        + "</section>",
        _blocked(report),
        f'<section aria-labelledby="waterfall-h"><h2 id="waterfall-h">Slowest run</h2>{_waterfall_caption(report)}'
        f"<figure>{waterfall_plot(report.slowest_run)}</figure></section>",
    ]
    # "<" cannot end the data block early once escaped; the JSON stays valid.
    data = to_json_text(report, indent=None).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(report.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + f'\n</main>\n<script type="application/json" id="report-data">{data}</script>\n</body>\n</html>\n'
    )


def write_html(report: Report, path: str | os.PathLike[str]) -> None:
    """Write `render_html(report)` to `path` (UTF-8)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(render_html(report))


def _meta(report: Report) -> str:
    traced = f", {report.traced_runs} traced" if report.traced_runs != report.runs else ""
    return (
        f"{report.runs} runs ({report.runs_ok} ok, {report.runs_error} error, {report.runs_cancelled} cancelled"
        f"{traced}) in {secs(report.wall_seconds)}; percentiles are {report.percentile_method}."
    )


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{esc(note)}</li>" for note in notes) + "</ul>"


def _card(label: str, value: str) -> str:
    return f'<div class="card"><dt>{esc(label)}</dt><dd>{esc(value)}</dd></div>'


def _summary(report: Report) -> str:
    loop, executor = report.loop, report.executor
    latency = MISSING
    if len(report.pipelines) == 1 and report.pipelines[0].p50_seconds is not None:
        p = report.pipelines[0]
        latency = f"{ms(p.p50_seconds)} / {ms(p.p95_seconds)} / {ms(p.p99_seconds)} ms"
    cards = [
        _card("runs", f"{report.runs}"),
        _card("throughput", rate(report.throughput_runs_per_second)),
        _card("run latency p50 / p95 / p99", latency),
        _card("event-loop lag p99", f"{ms(loop.lag_p99_seconds)} ms" if loop.lag_p99_seconds is not None else MISSING),
        _card("event loop blocked", secs(loop.blocked_total_seconds)),
        _card(
            "executor busy at most",
            f"{num(executor.max_busy)} of {num(executor.max_workers)} workers" if executor.samples else MISSING,
        ),
        _card("executor saturated", f"{pct(executor.saturated_share)} of samples" if executor.samples else MISSING),
        _card("executor queue depth at most", num(executor.max_queue_depth) if executor.samples else MISSING),
    ]
    return f'<section aria-labelledby="summary-h"><h2 id="summary-h">Summary</h2><dl class="cards">{"".join(cards)}</dl></section>'


def _table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> str:
    """A table whose columns from `numeric_from` on are right-aligned numbers; cells are escaped here."""

    def cell(tag: str, i: int, value: str) -> str:
        css = ' class="num"' if i >= numeric_from else ""
        return f"<{tag}{css}>{esc(value)}</{tag}>"

    head = "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(headers)) + "</tr>"
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return (
        f'<div class="table-wrap"><table id="{esc(table_id)}"><thead>{head}</thead><tbody>{body}</tbody></table></div>'
    )


def _pipelines(report: Report) -> str:
    rows = [
        [
            p.name,
            str(p.runs),
            str(p.runs_ok),
            str(p.runs_error),
            str(p.runs_cancelled),
            str(p.traced_runs),
            ms(p.p50_seconds),
            ms(p.p95_seconds),
            ms(p.p99_seconds),
            ms(p.max_seconds),
            rate(p.throughput_runs_per_second),
        ]
        for p in report.pipelines
    ]
    headers = [
        "pipeline",
        "runs",
        "ok",
        "error",
        "cancelled",
        "traced",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "throughput",
    ]
    body = _table("pipeline-table", headers, rows, 1) if rows else "<p>No pipeline runs were recorded.</p>"
    return f'<section aria-labelledby="pipelines-h"><h2 id="pipelines-h">Pipelines</h2>{body}</section>'


def _components(report: Report) -> str:
    several = len({c.pipeline for c in report.components}) > 1
    rows = [[*component_cells(c, several), pct(c.queued_share)] for c in report.components]
    headers = ["component", "type", "mode", "execs", "errors", "p50", "p95", "p99", "queue p95", "held p95",
               "sched p95", "share", "queued"]  # fmt: skip
    legend = (
        '<p class="legend-note">Durations in ms over all executions. queue: waiting for a worker thread; '
        "held: the component's own code holding the event loop; sched: waiting to start (concurrency limit); "
        "share: its summed durations over the summed run time; queued: share of its own time spent "
        "queued. Event-loop blocking by component is under Event loop.</p>"
    )
    body = (
        _table("component-table", headers, rows, 3) + legend
        if rows
        else "<p>No component executions were recorded.</p>"
    )
    return f'<section aria-labelledby="components-h"><h2 id="components-h">Components</h2>{body}</section>'


def _blocked(report: Report) -> str:
    loop = report.loop
    histogram = (
        f"; the loop monitor's histogram puts p99 at or below {ms(loop.histogram_lag_p99_seconds)} ms "
        f"({loop.histogram_observations} beats)"
        if loop.histogram_lag_p99_seconds is not None
        else ""
    )
    text = (
        f"Heartbeat lag p99 {ms(loop.lag_p99_seconds)} ms, max {ms(loop.lag_max_seconds)} ms over "
        f"{loop.lag_samples} samples{histogram}."
    )
    rows = [[b.pipeline, b.component, secs(b.seconds)] for b in loop.blocked]
    table = (
        _table("blocked-table", ["pipeline", "component", "blocked"], rows, 2)
        if rows
        else "<p>The event loop was never blocked past the loop monitor's threshold.</p>"
    )
    return f'<section aria-labelledby="loop-h"><h2 id="loop-h">Event loop</h2><p>{esc(text)}</p>{table}</section>'


def _waterfall_caption(report: Report) -> str:
    run = report.slowest_run
    if run is None:
        return "<p>No run was traced.</p>"
    more = f" ({run.omitted_rows} more spans not shown)" if run.omitted_rows else ""
    return (
        f"<p>{esc(run.pipeline)}: {esc(ms(run.duration_seconds))} ms, {esc(run.status)}, "
        f"trace <code>{esc(run.trace_id)}</code>, {len(run.rows)} spans{esc(more)}.</p>"
    )
