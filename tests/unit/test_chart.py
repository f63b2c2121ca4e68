"""The Slack alert chart: what on-call sees in the incident's thread."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from sentinel.notify.chart import (
    HEIGHT_PX,
    THRESHOLD_COLOUR,
    WIDTH_PX,
    ChartSpec,
    breach_runs,
    chart_range,
    render_png,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from chart_bench import spec as bench_spec


def rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def colour_count(png: bytes, colour: str, tolerance: int = 12) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    want = rgb(colour)
    width, height = image.size
    pixels = image.load()
    assert pixels is not None
    return sum(
        1
        for x in range(width)
        for y in range(height)
        if all(abs(a - b) <= tolerance for a, b in zip(pixels[x, y], want, strict=True))  # type: ignore[arg-type]
    )


def test_the_chart_is_a_png_of_the_phone_friendly_size_showing_the_threshold_line() -> None:
    png = render_png(bench_spec())
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (WIDTH_PX, HEIGHT_PX)
    assert len(png) <= 150 * 1024
    # A dashed line across the plot: hundreds of pixels of the threshold's red.
    assert colour_count(png, THRESHOLD_COLOUR) > 300


def test_a_chart_without_a_breach_has_no_breach_span() -> None:
    calm = bench_spec()
    calm = ChartSpec(**{**calm.__dict__, "points": tuple((t, 0.5) for t, _ in calm.points)})
    assert breach_runs(calm) == []


@pytest.mark.parametrize(
    ("good_when", "values", "runs"),
    [
        ("below", [1, 2, 2, 1, 2], [(1.0, 3.0), (4.0, 4.0)]),
        ("above", [1, 2, 2, 1, 2], [(0.0, 1.0), (3.0, 4.0)]),
        ("below", [1, float("nan"), 2], [(2.0, 2.0)]),
    ],
)
def test_breach_spans_cover_the_points_beyond_the_threshold(
    good_when: str, values: list[float], runs: list[tuple[float, float]]
) -> None:
    spec = ChartSpec("t", "latency", 1.5, good_when, tuple(enumerate(values)), 0, 4)  # type: ignore[arg-type]
    assert breach_runs(spec) == runs


def test_the_range_reaches_back_before_an_old_firing_but_never_past_a_day() -> None:
    now = 1_000_000.0
    start, end, step = chart_range(now - 600, now)
    assert end == now and now - start >= 3 * 3600 and step >= 15
    start, _, _ = chart_range(now - 6 * 3600, now)
    assert start <= now - 7 * 3600
    start, _, step = chart_range(now - 10 * 86400, now)
    assert now - 86400 - step <= start <= now - 86400
