"""The report's plots as inline SVG: latency per component, time breakdown, timelines, waterfall."""

from __future__ import annotations

from collections.abc import Sequence

from hayscope import semconv
from hayscope.report.fmt import clip, ms
from hayscope.report.model import ComponentStats, Report, Waterfall
from hayscope.report.spans import KIND_RUN, KIND_WAIT
from hayscope.report.stats import order_statistics, percentile_of_sorted
from hayscope.report.svg import (
    CHAR_WIDTH,
    Scale,
    category_label,
    esc,
    frame,
    label_width,
    legend,
    n,
    no_data,
    rotated_label,
    x_axis,
    y_axis,
)

__all__ = ["breakdown_plot", "in_flight_plot", "latency_plot", "loop_lag_plot", "waterfall_plot"]

WIDTH = 880
TITLE_SPACE = 36
BOTTOM_SPACE = 48  # tick labels and the x axis title
LABEL_CHARS = 34  # longest row label before it is cut (the full name is in its tooltip)
STRIP_POINTS = 120  # dots per component in the latency plot
ROWS_TITLE = "component (mode)"
SPANS_TITLE = "spans, in start order"

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
MODE_COLORS = {semconv.MODE_ASYNC: "#0072B2", semconv.MODE_THREAD: "#E69F00", semconv.MODE_SYNC: "#009E73"}
RUN_COLOR, WAIT_COLOR, OTHER_COLOR = "#444444", "#A0A0A0", "#CC79A7"
PART_COLORS = {
    "schedule wait": "#56B4E9",
    "queue wait (for a worker thread)": "#E69F00",
    "loop held (code on the event loop)": "#D55E00",
    "run time (awaiting or in a worker)": "#0072B2",
    "result waiting for the event loop": "#BBBBBB",
}
STRIP_COLOR, BOX_COLOR, MEDIAN_COLOR, P95_COLOR, P99_COLOR = "#0072B2", "#CFE3F3", "#000000", "#E69F00", "#D55E00"


def _empty(plot_id: str, title: str, message: str) -> str:
    """A plot's frame with its title and a message instead of data."""
    height = TITLE_SPACE + 70
    return frame(
        plot_id, title, message[0].upper() + message[1:] + ".", WIDTH, height, no_data(WIDTH, height + 16, message)
    )


def _band(rows: int, row_height: float, title: str) -> float:
    """Height of the rows' area: room for every row and for the rotated axis title beside them."""
    return max(max(1, rows) * row_height, len(title) * CHAR_WIDTH + 16)


def _row_label(component: ComponentStats, several_pipelines: bool) -> str:
    name = f"{component.pipeline}/{component.name}" if several_pipelines else component.name
    return f"{name} ({component.mode})" if component.mode else name


def _labels(report: Report, rows: Sequence[ComponentStats]) -> list[str]:
    several = len({c.pipeline for c in report.components}) > 1
    return [clip(_row_label(c, several), LABEL_CHARS) for c in rows]


def latency_plot(report: Report) -> str:
    """Per component: every execution's duration as a dot, a p25–p75 box, median, p95 and p99 marks."""
    title = "Latency distribution per component"
    rows = [c for c in report.components if c.duration_sample_seconds]
    labels = _labels(report, rows)
    left = 34 + label_width(labels)
    items = [
        ("execution", STRIP_COLOR),
        ("p25–p75", BOX_COLOR),
        ("median", MEDIAN_COLOR),
        ("p95", P95_COLOR),
        ("p99", P99_COLOR),
    ]
    legend_svg, legend_height = legend(items, left, TITLE_SPACE + 4, max_width=WIDTH - left - 20)
    top = TITLE_SPACE + legend_height + 10
    row_height = 30
    band = _band(len(rows), row_height, ROWS_TITLE)
    height = top + band + BOTTOM_SPACE
    if not rows:
        return _empty("plot-latency", title, "no component executions recorded")
    values = [v * 1000 for c in rows for v in c.duration_sample_seconds]
    scale = Scale.fit(values, left, WIDTH - 20)
    axis_title = "execution duration (ms, log scale)" if scale.log else "execution duration (ms)"
    parts = [legend_svg, x_axis(scale, top + band, axis_title, top=top)]
    parts.append(rotated_label(14, top + band / 2, ROWS_TITLE))
    for i, (c, label) in enumerate(zip(rows, labels, strict=False)):
        middle = top + i * row_height + row_height / 2
        parts.append(_distribution(c, label, middle, scale))
        parts.append(category_label(left - 8, middle, label))
    description = "; ".join(
        f"{c.name}: p50 {ms(c.p50_seconds)} ms, p95 {ms(c.p95_seconds)} ms, p99 {ms(c.p99_seconds)} ms" for c in rows
    )
    return frame(
        "plot-latency", title, f"Execution durations per component. {description}.", WIDTH, height, "\n".join(parts)
    )


def _distribution(c: ComponentStats, label: str, middle: float, scale: Scale) -> str:
    sample = [v * 1000 for v in c.duration_sample_seconds]
    q25, q50, q75 = (percentile_of_sorted(sample, p) or 0.0 for p in (25, 50, 75))
    p95, p99 = (c.p95_seconds or 0.0) * 1000, (c.p99_seconds or 0.0) * 1000
    parts = [
        f"<g><title>{esc(label)}: {c.executions} executions, p50 {ms(c.p50_seconds)} ms, "
        f"p95 {ms(c.p95_seconds)} ms, p99 {ms(c.p99_seconds)} ms</title>"
    ]
    parts.append(
        f'<line x1="{n(scale(sample[0]))}" y1="{n(middle)}" x2="{n(scale(sample[-1]))}" y2="{n(middle)}" '
        f'stroke="#888" stroke-width="1"/>'
    )
    box_left = scale(q25)
    parts.append(
        f'<rect x="{n(box_left)}" y="{n(middle - 9)}" width="{n(max(1.5, scale(q75) - box_left))}" '
        f'height="18" fill="{BOX_COLOR}" stroke="#6C9BC0"/>'
    )
    for k, value in enumerate(order_statistics(sample, STRIP_POINTS)):
        jitter = ((k * 37) % 13 - 6) * 1.2  # deterministic spread, so dots of equal value do not hide each other
        parts.append(
            f'<circle cx="{n(scale(value))}" cy="{n(middle + jitter)}" r="1.8" fill="{STRIP_COLOR}" '
            f'fill-opacity="0.55"/>'
        )
    parts.append(
        f'<line x1="{n(scale(q50))}" y1="{n(middle - 11)}" x2="{n(scale(q50))}" y2="{n(middle + 11)}" '
        f'stroke="{MEDIAN_COLOR}" stroke-width="2.5"/>'
    )
    for value, color in ((p95, P95_COLOR), (p99, P99_COLOR)):
        x = scale(value)
        parts.append(
            f'<rect x="{n(x - 4)}" y="{n(middle - 4)}" width="8" height="8" fill="{color}" '
            f'transform="rotate(45 {n(x)} {n(middle)})"/>'
        )
    parts.append("</g>")
    return "\n".join(parts)


def _parts(c: ComponentStats) -> dict[str, float]:
    """Mean seconds per execution of each part of a component's time (see PART_COLORS)."""
    count = max(1, c.executions)
    schedule, queue = c.schedule_wait_total_seconds / count, c.queue_wait_total_seconds / count
    held, run = c.loop_held_total_seconds / count, c.run_time_total_seconds / count
    mean = c.mean_seconds or 0.0
    values = [schedule, queue, held, max(0.0, run - held), max(0.0, mean - schedule - queue - run)]
    return dict(zip(PART_COLORS, values, strict=True))


def breakdown_plot(report: Report) -> str:
    """Per component, a stacked bar of where an average execution's time went."""
    title = "Where an execution's time went (mean per execution)"
    rows = list(report.components)
    labels = _labels(report, rows)
    left = 34 + label_width(labels)
    legend_svg, legend_height = legend(list(PART_COLORS.items()), left, TITLE_SPACE + 4, max_width=WIDTH - left - 20)
    top = TITLE_SPACE + legend_height + 10
    row_height = 26
    band = _band(len(rows), row_height, ROWS_TITLE)
    height = top + band + BOTTOM_SPACE
    if not rows:
        return _empty("plot-breakdown", title, "no component executions recorded")
    breakdowns = [_parts(c) for c in rows]
    scale = Scale.fit([sum(b.values()) * 1000 for b in breakdowns], left, WIDTH - 20, log=False)
    parts = [legend_svg, x_axis(scale, top + band, "mean time per execution (ms)", top=top)]
    parts.append(rotated_label(14, top + band / 2, ROWS_TITLE))
    for i, (breakdown, label) in enumerate(zip(breakdowns, labels, strict=True)):
        y = top + i * row_height + 4
        x = scale(0)
        for part, seconds in breakdown.items():
            width = scale(scale.lo + seconds * 1000) - scale(scale.lo)
            if width <= 0:
                continue
            parts.append(
                f'<rect x="{n(x)}" y="{n(y)}" width="{n(width)}" height="{row_height - 8}" '
                f'fill="{PART_COLORS[part]}"><title>{esc(label)}: {esc(part)} {ms(seconds)} ms</title></rect>'
            )
            x += width
        parts.append(category_label(left - 8, y + (row_height - 8) / 2, label))
    description = "; ".join(
        f"{c.name}: " + ", ".join(f"{part} {ms(s)} ms" for part, s in b.items() if s > 0)
        for c, b in zip(rows, breakdowns, strict=True)
    )
    return frame(
        "plot-breakdown", title, f"Mean time per execution by part. {description}.", WIDTH, height, "\n".join(parts)
    )


def _line_plot(
    plot_id: str,
    title: str,
    description: str,
    y_label: str,
    series: Sequence[tuple[str, str, list[float]]],
    times: list[float],
) -> str:
    """Series over the timeline's seconds; a legend when there is more than one series."""
    left, top = 70, TITLE_SPACE + 10
    legend_svg = ""
    if len(series) > 1:
        legend_svg, legend_height = legend(
            [(label, color) for label, color, _ in series], left, TITLE_SPACE + 4, max_width=WIDTH - left - 20
        )
        top = TITLE_SPACE + legend_height + 10
    plot_height = 180
    height = top + plot_height + BOTTOM_SPACE
    if not times:
        return _empty(plot_id, title, "no timeline samples")
    x_scale = Scale.fit(times, left, WIDTH - 20, log=False)
    y_scale = Scale.fit([v for _, _, values in series for v in values], top + plot_height, top, log=False)
    parts = [
        legend_svg,
        x_axis(x_scale, top + plot_height, "time since the sampler started (s)", top=top),
        y_axis(y_scale, left, y_label, right=WIDTH - 20),
    ]
    for label, color, values in series:
        points = " ".join(f"{n(x_scale(t))},{n(y_scale(v))}" for t, v in zip(times, values, strict=True))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.8" '
            f'stroke-linejoin="round"><title>{esc(label)}</title></polyline>'
        )
        if len(times) <= 2:  # a line of one point draws nothing: show the points
            parts += [
                f'<circle cx="{n(x_scale(t))}" cy="{n(y_scale(v))}" r="3" fill="{color}"/>'
                for t, v in zip(times, values, strict=True)
            ]
    return frame(plot_id, title, description, WIDTH, height, "\n".join(parts))


def loop_lag_plot(report: Report) -> str:
    points = report.timeline
    lags = [p.loop_lag_seconds * 1000 for p in points]
    description = (
        f"How late the sampler's heartbeat woke up, over {len(points)} samples; "
        f"max {ms(max(lags) / 1000) if lags else '–'} ms."
    )
    return _line_plot(
        "plot-loop-lag",
        "Event-loop lag over time",
        description,
        "loop lag (ms)",
        [("loop lag", "#D55E00", lags)],
        [p.t_seconds for p in points],
    )


def in_flight_plot(report: Report) -> str:
    points = report.timeline
    series = [
        ("pipeline runs in flight", "#0072B2", [p.runs_in_flight for p in points]),
        ("executor workers busy", "#009E73", [p.executor_busy for p in points]),
        ("executor queue depth", "#D55E00", [p.executor_queue_depth for p in points]),
    ]
    description = (
        f"Runs in flight, busy worker threads and queued submissions over {len(points)} samples; "
        f"at most {max((p.runs_in_flight for p in points), default=0):.0f} runs in flight."
    )
    return _line_plot(
        "plot-in-flight",
        "Runs in flight and executor load over time",
        description,
        "count",
        series,
        [p.t_seconds for p in points],
    )


def _row_color(kind: str, mode: str) -> str:
    if kind == KIND_RUN:
        return RUN_COLOR
    if kind == KIND_WAIT:
        return WAIT_COLOR
    return MODE_COLORS.get(mode, OTHER_COLOR)


def waterfall_plot(waterfall: Waterfall | None) -> str:
    """The slowest run's spans as bars on a common time axis, indented by depth."""
    title = "Slowest run: waterfall"
    if waterfall is None or not waterfall.rows:
        return _empty("plot-waterfall", title, "no run was traced")
    rows = waterfall.rows
    indent = 12
    names = [clip(r.name, LABEL_CHARS) for r in rows]
    widest = max(r.depth * indent + len(name) * CHAR_WIDTH for r, name in zip(rows, names, strict=True))
    left = 30 + min(300, max(60, widest + 16))
    kinds = {(r.kind, r.mode) for r in rows}
    items = [
        (label, color)
        for label, color, present in (
            ("run", RUN_COLOR, any(k == KIND_RUN for k, _ in kinds)),
            *((f"{mode} component", color, (("component", mode) in kinds)) for mode, color in MODE_COLORS.items()),
            ("wait", WAIT_COLOR, any(k == KIND_WAIT for k, _ in kinds)),
            ("other span", OTHER_COLOR, any(k == "span" for k, _ in kinds)),
        )
        if present
    ]
    legend_svg, legend_height = legend(items, left, TITLE_SPACE + 4, max_width=WIDTH - left - 20)
    top = TITLE_SPACE + legend_height + 10
    row_height = 20
    band = _band(len(rows), row_height, SPANS_TITLE)
    height = top + band + BOTTOM_SPACE
    ends = [(r.offset_seconds + r.duration_seconds) * 1000 for r in rows]
    scale = Scale.fit([*ends, waterfall.duration_seconds * 1000], left, WIDTH - 20, log=False)
    parts = [
        legend_svg,
        x_axis(scale, top + band, "time from the run's start (ms)", top=top),
        rotated_label(14, top + band / 2, SPANS_TITLE),
    ]
    for i, (row, name) in enumerate(zip(rows, names, strict=True)):
        y = top + i * row_height
        start = scale(max(0.0, row.offset_seconds * 1000))
        width = max(1.5, scale(max(0.0, row.offset_seconds + row.duration_seconds) * 1000) - start)
        tooltip = (
            f"{row.name} {row.mode} {row.status}".strip()
            + f": starts at {ms(row.offset_seconds)} ms, lasts {ms(row.duration_seconds)} ms"
        )
        parts.append(
            f'<rect x="{n(start)}" y="{n(y + 3)}" width="{n(width)}" height="{row_height - 6}" rx="2" '
            f'fill="{_row_color(row.kind, row.mode)}"><title>{esc(tooltip)}</title></rect>'
        )
        parts.append(
            f'<text class="category" x="{n(30 + row.depth * indent)}" y="{n(y + row_height / 2 + 4)}">'
            f"{esc(name)}</text>"
        )
    description = (
        f"The slowest run of {waterfall.pipeline} took {ms(waterfall.duration_seconds)} ms; "
        f"{len(rows)} spans: "
        + "; ".join(f"{r.name} at {ms(r.offset_seconds)} ms for {ms(r.duration_seconds)} ms" for r in rows[:30])
    )
    return frame("plot-waterfall", title, description, WIDTH, height, "\n".join(parts))
