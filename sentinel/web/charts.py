"""Inline SVG charts for the status UI, rendered on the server (pure: points in, markup out).

Why SVG from the server rather than a JavaScript charting library: a page is readable with
JavaScript disabled, nothing is downloaded from a CDN or built with Node, and a chart is a
few kilobytes of text that tests can read (`data-from`/`data-to` on every breach span).

Every text that reaches the markup (labels, titles, formatted values) is escaped here with
markupsafe; the callers hand in plain strings. Status is never shown by colour alone: a
breach span is hatched and titled, the threshold is a dashed, labelled line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

Point = tuple[float, float]
Formatter = Callable[[float], str]

WIDTH, HEIGHT = 720, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 64, 12, 12, 28


@dataclass(frozen=True)
class Span:
    """[start, end] in Unix seconds where the SLI breached its threshold."""

    start: float
    end: float


@dataclass(frozen=True)
class Line:
    points: Sequence[Point]
    css: str  # "sli", "ideal", "budget"
    label: str
    dashed: bool = False


@dataclass(frozen=True)
class Marker:
    """A point in time on the timeline (an incident fired or resolved)."""

    at: float
    css: str  # "fired", "resolved", "silenced"
    label: str


def breached(value: float, threshold: float, good_when: str) -> bool:
    """The evaluation's rule (`SLO.breached`): NaN breaches, nothing compares its way to ok."""
    if good_when == "above":
        return not value >= threshold
    return not value <= threshold


def breach_spans(
    points: Sequence[Point], threshold: float, good_when: str, step: float
) -> list[Span]:
    """Runs of breaching points, each widened by half a step on both sides (a point stands
    for the step around it). A missing point (a gap in the series) ends a run; NaN points
    are gaps here, not breaches: a range query's NaN is "no traffic", and the chart shows
    no line there either."""
    spans: list[Span] = []
    start: float | None = None
    last: float | None = None
    for t, v in points:
        gap = last is not None and t - last > step * 1.5
        bad = not math.isnan(v) and breached(v, threshold, good_when)
        if start is not None and (gap or not bad):
            spans.append(Span(start - step / 2, (last or start) + step / 2))
            start = None
        if bad and start is None:
            start = t
        last = t
    if start is not None:
        spans.append(Span(start - step / 2, (last or start) + step / 2))
    return spans


def _time_label(ts: float, span: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%H:%M" if span <= 86400 * 1.5 else "%d %b %H:%M")


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(count + 2) if first + i * step <= high + 1e-12]


class _Scale:
    def __init__(self, start: float, end: float, low: float, high: float) -> None:
        self.start, self.end, self.low, self.high = start, end, low, high
        self.w = WIDTH - PAD_LEFT - PAD_RIGHT
        self.h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(self, t: float) -> float:
        span = self.end - self.start or 1.0
        return PAD_LEFT + (min(max(t, self.start), self.end) - self.start) / span * self.w

    def y(self, v: float) -> float:
        span = self.high - self.low or 1.0
        clipped = min(max(v, self.low), self.high)
        return PAD_TOP + (1 - (clipped - self.low) / span) * self.h


def _path(points: Sequence[Point], scale: _Scale, gap: float) -> str:
    parts: list[str] = []
    last: float | None = None
    for t, v in points:
        if math.isnan(v) or math.isinf(v):
            last = None
            continue
        cmd = "L" if last is not None and t - last <= gap else "M"
        parts.append(f"{cmd}{scale.x(t):.1f},{scale.y(v):.1f}")
        last = t
    return "".join(parts)


def _value_range(lines: Sequence[Line], extra: Sequence[float]) -> tuple[float, float]:
    values = [v for line in lines for _, v in line.points if math.isfinite(v)]
    values += [v for v in extra if math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    low, high = min(min(values), 0.0), max(values)
    if high <= low:
        high = low + 1.0
    return low, high + (high - low) * 0.08


def line_chart(
    *,
    title: str,
    start: float,
    end: float,
    step: float,
    lines: Sequence[Line],
    fmt: Formatter,
    threshold: float | None = None,
    threshold_label: str = "threshold",
    spans: Sequence[Span] = (),
    markers: Sequence[Marker] = (),
    chart_id: str = "chart",
) -> Markup:
    """One chart: lines, an optional dashed threshold, hatched breach spans, markers."""
    low, high = _value_range(lines, [threshold] if threshold is not None else [])
    scale = _Scale(start, end, low, high)
    e = escape
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{e(chart_id)}-t {e(chart_id)}-d">',
        f'<title id="{e(chart_id)}-t">{e(title)}</title>',
        f'<desc id="{e(chart_id)}-d">{e(_describe(lines, spans, fmt, threshold, span=end - start))}'
        "</desc>",
        f'<defs><pattern id="{e(chart_id)}-h" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
        '<rect width="2.5" height="6" fill="#f3b4b4"/></pattern></defs>',
    ]
    for tick in _ticks(low, high):
        y = scale.y(tick)
        out.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}"/><text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{e(fmt(tick))}</text>'
        )
    for i in range(5):
        t = start + (end - start) * i / 4
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        out.append(
            f'<text class="axis" x="{scale.x(t):.1f}" y="{HEIGHT - 8}" '
            f'text-anchor="{anchor}">{e(_time_label(t, end - start))}</text>'
        )
    for span in spans:
        x1, x2 = scale.x(span.start), scale.x(span.end)
        out.append(
            f'<rect class="breach" data-from="{span.start:.0f}" data-to="{span.end:.0f}" '
            f'x="{x1:.1f}" y="{PAD_TOP}" width="{max(x2 - x1, 1.5):.1f}" '
            f'height="{scale.h}" fill="url(#{e(chart_id)}-h)"><title>breach '
            f"{e(_time_label(span.start, 0))}–{e(_time_label(span.end, 0))} UTC</title></rect>"
        )
    if threshold is not None and math.isfinite(threshold):
        y = scale.y(threshold)
        out.append(
            f'<line class="threshold" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/><text class="threshold-label" '
            f'x="{PAD_LEFT + 4}" y="{y - 4:.1f}" text-anchor="start">'
            f"{e(threshold_label)} {e(fmt(threshold))}</text>"
        )
    for line in lines:
        d = _path(line.points, scale, step * 1.5)
        if d:
            dash = ' stroke-dasharray="6 4"' if line.dashed else ""
            out.append(
                f'<path class="{e(line.css)}" d="{d}"{dash}><title>{e(line.label)}</title></path>'
            )
    for marker in markers:
        out.append(_marker(marker, scale))
    out.append("</svg>")
    return Markup("".join(out))


def _marker(marker: Marker, scale: _Scale) -> str:
    # Not a link: a chart is one image to assistive technology (role="img"), and controls
    # inside an image are unreachable. The incidents are listed as links below the chart.
    e = escape
    x = scale.x(marker.at)
    return (
        f'<g><line class="marker {e(marker.css)}" x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_TOP}" '
        f'y2="{HEIGHT - PAD_BOTTOM}"/><path class="marker-head {e(marker.css)}" '
        f'd="M{x - 5:.1f},{PAD_TOP}h10l-5,8z"/><title>{e(marker.label)}</title></g>'
    )


def _describe(
    lines: Sequence[Line],
    spans: Sequence[Span],
    fmt: Formatter,
    threshold: float | None,
    span: float,
) -> str:
    """The chart in words, for screen readers and for anyone reading the markup."""
    parts = []
    for line in lines:
        values = [v for _, v in line.points if math.isfinite(v)]
        if values:
            parts.append(
                f"{line.label}: latest {fmt(values[-1])}, min {fmt(min(values))}, "
                f"max {fmt(max(values))}"
            )
        else:
            parts.append(f"{line.label}: no data")
    if threshold is not None:
        parts.append(f"threshold {fmt(threshold)}")
    if spans:
        parts.append(
            f"{len(spans)} breach span(s): "
            + ", ".join(
                f"{_time_label(s.start, span)}–{_time_label(s.end, span)} UTC" for s in spans[:5]
            )
        )
    else:
        parts.append("no breach in this range")
    return "; ".join(parts)


SPARK_STEP, SPARK_H = 3, 14


def sparkline(
    values: Sequence[float | None], threshold: float, good_when: str, size: int
) -> Markup:
    """A small SLI trend, newest at the right of `size` slots (decorative: the value is in
    the row as text). Whole-pixel relative path commands, runs at one height merged, and
    no viewBox (CSS sizes it 1:1): an overview of 1,000 rows carries 1,000 of these, so
    every byte counts."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return Markup("")
    high = max(*finite, threshold if math.isfinite(threshold) else 0.0) or 1.0
    low = min(*finite, 0.0)
    scale = (SPARK_H - 2) / (high - low or 1.0)
    x = (size - len(values)) * SPARK_STEP
    d: list[str] = []
    pen: tuple[int, int] | None = None
    run = 0  # pixels of a horizontal run not yet written
    for v in values:
        if v is None or not math.isfinite(v):
            if run:
                d.append(f"h{run}")
            pen, run = None, 0
        else:
            y = round((high - v) * scale) + 1
            if pen is None:
                d.append(f"M{x} {y}")
            elif y == pen[1]:
                run += SPARK_STEP
            else:
                if run:
                    d.append(f"h{run}")
                dy = y - pen[1]
                d.append(f"l{SPARK_STEP}{' ' if dy >= 0 else ''}{dy}")
                run = 0
            pen = (x, y)
        x += SPARK_STEP
    if run:
        d.append(f"h{run}")
    bad = " class=bad" if breached(finite[-1], threshold, good_when) else ""
    return Markup(f'<svg{bad}><path d="{"".join(d)}"/></svg>')
