"""Small SVG drawing kit for the HTML report: scales with readable ticks, axes, legends, a frame.

Every function returns SVG markup as a string; every piece of text goes through `esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHAR_WIDTH = 6.6  # average width of a 12 px sans-serif character, to size label margins


def esc(value: object) -> str:
    """Text for HTML or SVG, in content and in attribute values alike."""
    return html.escape(str(value), quote=True)


def n(value: float) -> str:
    """A coordinate, short."""
    return f"{value:.1f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


@dataclass(frozen=True)
class Scale:
    """Maps a data interval onto a pixel interval, linearly or logarithmically (then lo > 0)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    @staticmethod
    def fit(values: Sequence[float], start: float, end: float, *, log: bool | None = None, zero: bool = True) -> Scale:
        """A scale covering `values`; log when asked, or when None and they span more than 20x."""
        finite = [v for v in values if math.isfinite(v)]
        positive = [v for v in finite if v > 0]
        if log is None:
            log = len(positive) > 1 and max(positive) / min(positive) > 20
        if log and positive:
            lo, hi = _decade_floor(min(positive)), _decade_ceil(max(positive))
            return Scale(lo, hi if hi > lo else lo * 10, start, end, True)
        lo = 0.0 if zero or not finite else min(finite)
        hi = max(finite, default=1.0)
        if hi <= lo:
            hi = lo + 1.0
        step = nice_step((hi - lo) / 5)
        return Scale(lo, math.ceil(hi / step - 1e-9) * step, start, end, False)

    def __call__(self, value: float) -> float:
        if self.log:
            value = max(value, self.lo)
            fraction = (math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            fraction = (value - self.lo) / (self.hi - self.lo)
        fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
        return self.start + fraction * (self.end - self.start)

    def ticks(self) -> list[float]:
        if self.log:
            decades = range(round(math.log10(self.lo)), round(math.log10(self.hi)) + 1)
            multiples = (1, 2, 5) if len(decades) <= 3 else (1,)
            return [m * 10.0**d for d in decades for m in multiples if self.lo <= m * 10.0**d <= self.hi * 1.0001]
        step = nice_step((self.hi - self.lo) / 5)
        first = math.ceil(self.lo / step - 1e-9)
        return [k * step for k in range(first, int(self.hi / step + 1e-9) + 1)]


def nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * 0.999)


def _decade_floor(value: float) -> float:
    return 10.0 ** math.floor(math.log10(value))


def _decade_ceil(value: float) -> float:
    return 10.0 ** math.ceil(math.log10(value))


def tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.10g}"
    return f"{value:.3g}"


def x_axis(scale: Scale, y: float, label: str, *, top: float, fmt: Callable[[float], str] = tick_label) -> str:
    """Bottom axis at `y` with grid lines up to `top` and the axis title centred below."""
    parts = [f'<line class="axis" x1="{n(scale.start)}" y1="{n(y)}" x2="{n(scale.end)}" y2="{n(y)}"/>']
    for tick in scale.ticks():
        x = scale(tick)
        parts.append(f'<line class="grid" x1="{n(x)}" y1="{n(top)}" x2="{n(x)}" y2="{n(y)}"/>')
        parts.append(f'<text class="tick" x="{n(x)}" y="{n(y + 15)}" text-anchor="middle">{esc(fmt(tick))}</text>')
    middle = (scale.start + scale.end) / 2
    parts.append(f'<text class="axis-label" x="{n(middle)}" y="{n(y + 34)}" text-anchor="middle">{esc(label)}</text>')
    return "\n".join(parts)


def y_axis(scale: Scale, x: float, label: str, *, right: float, fmt: Callable[[float], str] = tick_label) -> str:
    """Left numeric axis at `x` with grid lines to `right` and the axis title turned upright."""
    parts = [f'<line class="axis" x1="{n(x)}" y1="{n(scale.start)}" x2="{n(x)}" y2="{n(scale.end)}"/>']
    for tick in scale.ticks():
        y = scale(tick)
        parts.append(f'<line class="grid" x1="{n(x)}" y1="{n(y)}" x2="{n(right)}" y2="{n(y)}"/>')
        parts.append(f'<text class="tick" x="{n(x - 6)}" y="{n(y + 4)}" text-anchor="end">{esc(fmt(tick))}</text>')
    middle = (scale.start + scale.end) / 2
    parts.append(
        f'<text class="axis-label" x="14" y="{n(middle)}" text-anchor="middle" '
        f'transform="rotate(-90 14 {n(middle)})">{esc(label)}</text>'
    )
    return "\n".join(parts)


def category_label(x: float, y_middle: float, label: str) -> str:
    """A row label, ending at `x` (the left margin)."""
    return f'<text class="category" x="{n(x)}" y="{n(y_middle + 4)}" text-anchor="end">{esc(label)}</text>'


def rotated_label(x: float, y_middle: float, label: str) -> str:
    """A vertical axis title for category axes (rows of components or spans)."""
    return (
        f'<text class="axis-label" x="{n(x)}" y="{n(y_middle)}" text-anchor="middle" '
        f'transform="rotate(-90 {n(x)} {n(y_middle)})">{esc(label)}</text>'
    )


def legend(items: Sequence[tuple[str, str]], x: float, y: float, *, max_width: float) -> tuple[str, float]:
    """Swatches with labels, wrapping at `max_width`; returns the markup and the height it took."""
    parts = ['<g class="legend">']
    cx, cy = x, y
    for label, color in items:
        width = 18 + len(label) * CHAR_WIDTH + 16
        if cx > x and cx + width > x + max_width:
            cx, cy = x, cy + 18
        parts.append(f'<rect x="{n(cx)}" y="{n(cy - 9)}" width="12" height="12" rx="2" fill="{esc(color)}"/>')
        parts.append(f'<text x="{n(cx + 17)}" y="{n(cy + 1)}">{esc(label)}</text>')
        cx += width
    parts.append("</g>")
    return "\n".join(parts), cy - y + 18


def label_width(labels: Sequence[str], *, least: float = 60, most: float = 240) -> float:
    """Room for the longest of `labels` at the left of a plot."""
    longest = max((len(label) for label in labels), default=0)
    return min(most, max(least, longest * CHAR_WIDTH + 16))


def frame(plot_id: str, title: str, description: str, width: float, height: float, body: str) -> str:
    """The `<svg>` of one plot: accessible name and description, a visible title, then `body`."""
    return (
        f'<svg id="{esc(plot_id)}" class="plot" role="img" aria-labelledby="{esc(plot_id)}-title {esc(plot_id)}-desc" '
        f'viewBox="0 0 {n(width)} {n(height)}" width="{n(width)}" height="{n(height)}" '
        f'xmlns="http://www.w3.org/2000/svg">\n'
        f'<title id="{esc(plot_id)}-title">{esc(title)}</title>\n'
        f'<desc id="{esc(plot_id)}-desc">{esc(description)}</desc>\n'
        f'<text class="plot-title" x="12" y="22">{esc(title)}</text>\n'
        f"{body}\n</svg>"
    )


def no_data(width: float, height: float, message: str) -> str:
    return f'<text class="no-data" x="{n(width / 2)}" y="{n(height / 2)}" text-anchor="middle">{esc(message)}</text>'
