"""`render_text`: the report for a terminal, as aligned tables and a waterfall of bars."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from hayscope.report.fmt import clip, component_cells, ms, num, pct, rate, secs
from hayscope.report.model import Report, Waterfall
from hayscope.report.spans import KIND_COMPONENT, KIND_RUN

__all__ = ["render_text"]

MIN_WIDTH = 60
MIN_NAME_WIDTH = 12
NAME_WIDTH = 28  # widest a name column gets before it is cut
BAR_FULL, BAR_WAIT = "█", "░"


def render_text(report: Report, width: int = 100) -> str:
    """The report as plain text at most about `width` columns wide (tables shrink their name columns)."""
    width = max(MIN_WIDTH, width if isinstance(width, int) and not isinstance(width, bool) else 100)
    lines = [report.title, "=" * min(len(report.title), width)]
    lines += [line for note in report.notes for line in _wrap(f"note: {note}", width)]
    lines += ["", *_summary(report, width)]
    if report.components:
        lines += ["", "components (durations in ms, all executions)", *_component_table(report, width)]
    lines += ["", *(line for long in _loop_and_executor(report) for line in _wrap(long, width))]
    lines += ["", *_wrap(f"verdict: {report.verdict}", width)]
    if report.slowest_run is not None:
        lines += ["", *_waterfall(report.slowest_run, width)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _wrap(line: str, width: int) -> list[str]:
    """A long line folded at `width`, continuation lines indented under it."""
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) or [line]


def _summary(report: Report, width: int) -> list[str]:
    traced = f", {report.traced_runs} traced" if report.traced_runs != report.runs else ""
    lines = [
        f"runs: {report.runs} ({report.runs_ok} ok, {report.runs_error} error, {report.runs_cancelled} cancelled"
        f"{traced}) in {secs(report.wall_seconds)}: {rate(report.throughput_runs_per_second)}"
    ]
    if report.pipelines:
        rows = [
            [
                p.name,
                str(p.runs),
                str(p.traced_runs),
                ms(p.p50_seconds),
                ms(p.p95_seconds),
                ms(p.p99_seconds),
                ms(p.max_seconds),
                rate(p.throughput_runs_per_second),
            ]
            for p in report.pipelines
        ]
        headers = ["pipeline latency (ms)", "runs", "traced", "p50", "p95", "p99", "max", "throughput"]
        lines += _table(headers, rows, width, text_columns=1)
    return lines


def _component_table(report: Report, width: int) -> list[str]:
    several = len({c.pipeline for c in report.components}) > 1
    headers = [
        "component",
        "type",
        "mode",
        "execs",
        "errors",
        "p50",
        "p95",
        "p99",
        "queue p95",
        "held p95",
        "sched p95",
        "share",
    ]
    rows = [component_cells(c, several) for c in report.components]
    legend = (
        "queue: waiting for a worker thread; held: own code holding the event loop; sched: waiting to start "
        "(concurrency limit or a busy loop); share: of the summed run time"
    )
    return [*_table(headers, rows, width, text_columns=3, optional=1), *textwrap.wrap(legend, width)]


def _loop_and_executor(report: Report) -> list[str]:
    loop, executor = report.loop, report.executor
    heartbeat = (
        f"lag p99 {ms(loop.lag_p99_seconds)} ms, max {ms(loop.lag_max_seconds)} ms ({loop.lag_samples} samples)"
        if loop.lag_samples
        else "lag not sampled"
    )
    histogram = (
        f"; histogram p99 ≤ {ms(loop.histogram_lag_p99_seconds)} ms ({loop.histogram_observations} beats)"
        if loop.histogram_lag_p99_seconds is not None
        else ""
    )
    lines = [f"event loop: {heartbeat}{histogram}"]
    if loop.blocked:
        parts = ", ".join(
            f"{b.component} {secs(b.seconds)}"
            if b.pipeline in ("", b.component)
            else f"{b.pipeline}/{b.component} {secs(b.seconds)}"
            for b in loop.blocked
        )
        lines.append(f"  blocked {secs(loop.blocked_total_seconds)} in all: {parts}")
    else:
        lines.append("  never blocked past the loop monitor's threshold")
    if executor.samples:
        lines.append(
            f"executor: busy at most {num(executor.max_busy)} of {num(executor.max_workers)} workers "
            f"({pct(executor.saturation)}), queue depth at most {num(executor.max_queue_depth)}, "
            f"saturated in {pct(executor.saturated_share)} of {executor.samples} samples"
        )
    else:
        lines.append("executor: not sampled")
    return lines


def _waterfall(waterfall: Waterfall, width: int) -> list[str]:
    head = (
        f"slowest run: {waterfall.pipeline}, {ms(waterfall.duration_seconds)} ms, {waterfall.status}, "
        f"trace {waterfall.trace_id}"
    )
    name_width = min(NAME_WIDTH, max([MIN_NAME_WIDTH] + [2 * r.depth + len(r.name) for r in waterfall.rows]))
    fixed = 10 + 10 + 2 + name_width + 2 + 6 + 3  # offset, duration, gaps, name, gap, mode, bar frame
    bar_width = max(10, width - fixed)
    scale = bar_width / waterfall.duration_seconds if waterfall.duration_seconds > 0 else 0.0
    lines = [head, f"{'offset ms':>10}{'dur ms':>10}  {'span':<{name_width}}  {'mode':<6}"]
    for row in waterfall.rows:
        start = min(bar_width - 1, max(0, round(row.offset_seconds * scale)))
        length = max(1, min(bar_width - start, round(row.duration_seconds * scale)))
        fill = BAR_FULL if row.kind in (KIND_RUN, KIND_COMPONENT) else BAR_WAIT
        bar = " " * start + fill * length + " " * (bar_width - start - length)
        name = clip("  " * row.depth + row.name, name_width)
        lines.append(
            f"{ms(row.offset_seconds):>10}{ms(row.duration_seconds):>10}  {name:<{name_width}}  {row.mode:<6} |{bar}|"
        )
    if waterfall.omitted_rows:
        lines.append(f"  … and {waterfall.omitted_rows} more spans")
    return lines


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    *,
    text_columns: int,
    optional: int | None = None,
) -> list[str]:
    """Left-aligned text columns first, right-aligned numbers after.

    When the table is wider than `width`, the `optional` column goes first, then the text columns
    shrink (the rightmost first) down to MIN_NAME_WIDTH; a table can still end up wider.
    """
    headers, rows = list(headers), [list(r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    widths = [min(w, NAME_WIDTH) if i < text_columns else w for i, w in enumerate(widths)]

    def total() -> int:
        return sum(widths) + 2 * (len(widths) - 1)

    if optional is not None and total() > width:
        for cells in (headers, widths, *rows):
            del cells[optional]
        text_columns -= optional < text_columns
    for column in reversed(range(text_columns)):
        floor = max(MIN_NAME_WIDTH, len(headers[column]))
        widths[column] -= max(0, min(total() - width, widths[column] - floor))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            cell = clip(cell, widths[i])
            out.append(f"{cell:<{widths[i]}}" if i < text_columns else f"{cell:>{widths[i]}}")
        return "  ".join(out)

    return [line(headers), *(line(r) for r in rows)]
