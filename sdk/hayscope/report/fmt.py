"""Number formatting shared by the text and HTML renderers, so both show the same digits."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model imports nothing from here; the annotation only
    from hayscope.report.model import ComponentStats

MISSING = "–"


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds: 2 decimals below 10 ms, 1 below 1 s, whole (grouped) above."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    value = seconds * 1000
    if abs(round(value, 2)) < 10:
        return f"{value:.2f}"
    if abs(round(value, 1)) < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def pct(fraction: float | None) -> str:
    if fraction is None or not math.isfinite(fraction):
        return MISSING
    return f"{fraction * 100:.0f}%"


def secs(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    return f"{seconds:.3f} s" if abs(seconds) < 1 else f"{seconds:.2f} s"


def num(value: float | None) -> str:
    """A count that may come from a float gauge: whole numbers without a decimal point."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def rate(per_second: float | None) -> str:
    """Runs per second."""
    if per_second is None or not math.isfinite(per_second):
        return MISSING
    return f"{per_second:.2f} runs/s" if per_second < 10 else f"{per_second:.1f} runs/s"


def clip(value: str, width: int) -> str:
    """`value` cut to `width` characters, with an ellipsis when cut."""
    if width <= 0:
        return ""
    return value if len(value) <= width else value[: width - 1] + "…"


def component_cells(component: ComponentStats, several_pipelines: bool) -> list[str]:
    """A component's row, as the text and HTML tables both show it (names qualified when several pipelines)."""
    c = component
    return [
        f"{c.pipeline}/{c.name}" if several_pipelines else c.name,
        c.type,
        c.mode,
        str(c.executions),
        str(c.errors),
        ms(c.p50_seconds),
        ms(c.p95_seconds),
        ms(c.p99_seconds),
        ms(c.queue_wait_p95_seconds),
        ms(c.loop_held_p95_seconds),
        ms(c.schedule_wait_p95_seconds),
        pct(c.share_of_run_time),
    ]
