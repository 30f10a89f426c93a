"""Where the time went: a report built from the spans and metrics a workload recorded.

    async with TimelineSampler(registry) as timeline:
        ...  # run the workload
    report = build_report(spans, registry, timeline, wall_seconds=wall, title="my pipeline")
    print(render_text(report))
    write_json(report, "report.json")
    write_html(report, "report.html")

Modules: timeline.py (the sampler), model.py (the dataclasses and build_report), verdict.py (the
rules of the one-line verdict), text.py, json_report.py and html.py (the renderers), with
stats.py, spans.py, fmt.py, svg.py and plots.py underneath.
"""

from hayscope.report.html import render_html, write_html
from hayscope.report.json_report import SCHEMA_VERSION, report_from_json, report_to_json, write_json
from hayscope.report.model import (
    BlockedTime,
    ComponentStats,
    ExecutorStats,
    LoopStats,
    PipelineStats,
    Report,
    Waterfall,
    WaterfallRow,
    build_report,
)
from hayscope.report.text import render_text
from hayscope.report.timeline import TimelinePoint, TimelineSampler
from hayscope.report.verdict import verdict

__all__ = [
    "SCHEMA_VERSION",
    "BlockedTime",
    "ComponentStats",
    "ExecutorStats",
    "LoopStats",
    "PipelineStats",
    "Report",
    "TimelinePoint",
    "TimelineSampler",
    "Waterfall",
    "WaterfallRow",
    "build_report",
    "render_html",
    "render_text",
    "report_from_json",
    "report_to_json",
    "verdict",
    "write_html",
    "write_json",
]
