"""A PNG of an alert's SLI around the breach, for the Slack thread of its incident.

Two halves. `render_png` is pure apart from matplotlib: a `ChartSpec` (points, threshold,
firing and resolve times, deploys) in, PNG bytes out, drawn with matplotlib's object API
on an Agg canvas (no pyplot, no global figure state, so it is safe in a worker thread).
`ChartMaker` gets the data: it finds the alert's SLO, builds the same SLI expression the
dashboards and the status UI chart (narrowed to the instance), asks a range-query
callable injected by the composition root (this layer never builds sources), and renders
off the event loop: in the daemon, in a worker process (`chart_worker.py`), so matplotlib
never loads into the daemon; elsewhere in a worker thread.

matplotlib is an optional extra (`sentinel-slo[charts]`): without it `ChartUnavailable`
says so and the alert goes out as text. Every failure here is `ChartUnavailable`; the
notifier logs it and carries on — a picture never blocks a page.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sentinel.errors import ChartUnavailable
from sentinel.query.logql import sli_logql
from sentinel.query.promql import selector_matchers, sli_expr
from sentinel.rules.model import (
    SLO,
    LatencySLI,
    LogQLSLI,
    LogRatioSLI,
    Matcher,
    MatchOp,
    PromQLSLI,
)
from sentinel.units import format_measure

# Colours are part of the contract: tests look for the threshold's red in the pixels.
SLI_COLOUR, THRESHOLD_COLOUR, BREACH_COLOUR, DEPLOY_COLOUR = (
    "#1f5fa8",
    "#d62728",
    "#f4b6b6",
    "#6b6b6b",
)
WIDTH_PX, HEIGHT_PX, DPI = 900, 450, 100  # 2:1 fits a phone's width in a Slack thread
LOOKBACK, BEFORE_FIRING, MAX_SPAN = 3 * 3600.0, 3600.0, 24 * 3600.0
MAX_POINTS = 300


@dataclass(frozen=True)
class ChartSpec:
    title: str
    kind: str  # SLIKind value, for axis labels (`2.31 s`, `0.5 %`)
    threshold: float
    good_when: str  # "below" | "above"
    points: tuple[tuple[float, float], ...]
    start: float
    end: float
    fired_at: float | None = None
    resolved_at: float | None = None
    deploys: tuple[float, ...] = ()

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.good_when != "above" else value < self.threshold


def breach_runs(spec: ChartSpec) -> list[tuple[float, float]]:
    """Contiguous spans where the SLI breaches, as (start, end) times."""
    runs: list[tuple[float, float]] = []
    begin: float | None = None
    last = spec.start
    for t, v in spec.points:
        bad = math.isfinite(v) and spec.breached(v)
        if bad and begin is None:
            begin = t
        elif not bad and begin is not None:
            runs.append((begin, t))
            begin = None
        last = t
    if begin is not None:
        runs.append((begin, last))
    return runs


def render_png(spec: ChartSpec) -> bytes:
    """The chart as PNG bytes (WIDTH_PX x HEIGHT_PX). Blocking: call it off the loop."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.dates import DateFormatter
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        raise ChartUnavailable(
            "matplotlib is not installed (pip install 'sentinel-slo[charts]')"
        ) from exc
    import datetime as dt

    def when(t: float) -> float:
        # matplotlib's date numbers: days since its default epoch, 1970-01-01 UTC.
        return t / 86400.0

    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (begin, end) in enumerate(breach_runs(spec)):
        label = "breach" if i == 0 else None
        ax.axvspan(when(begin), when(end), color=BREACH_COLOUR, alpha=0.6, lw=0, label=label)
    xs = [when(t) for t, _ in spec.points]
    ys = [v if math.isfinite(v) else math.nan for _, v in spec.points]
    ax.plot(xs, ys, color=SLI_COLOUR, lw=2.2, label="SLI")
    threshold = format_measure(spec.kind, spec.threshold)
    ax.axhline(
        spec.threshold, color=THRESHOLD_COLOUR, lw=2, ls="--", label=f"threshold {threshold}"
    )
    for t, label in ((spec.fired_at, "fired"), (spec.resolved_at, "resolved")):
        if t is not None and spec.start <= t <= spec.end:
            ax.axvline(when(t), color="black", lw=1, ls=":")
            ax.annotate(
                label,
                (when(t), 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=11,
                xytext=(3, -14),
                textcoords="offset points",
            )
    for t in spec.deploys:
        ax.axvline(when(t), color=DEPLOY_COLOUR, lw=1.5, ls="-.")
        ax.annotate(
            "deploy",
            (when(t), 0.0),
            xycoords=("data", "axes fraction"),
            fontsize=10,
            xytext=(3, 4),
            textcoords="offset points",
            color=DEPLOY_COLOUR,
        )
    # A little room on the right: the firing and resolve marks sit at the very end.
    margin = (spec.end - spec.start) * 0.03
    ax.set_xlim(when(spec.start), when(spec.end + margin))
    hours = DateFormatter("%H:%M", tz=dt.UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(hours)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_measure(spec.kind, v, digits=2)))
    ax.tick_params(labelsize=12)
    ax.set_title(spec.title, fontsize=14, loc="left")
    ax.set_xlabel("UTC", fontsize=11)
    ax.grid(True, color="#dddddd", lw=0.8)
    ax.legend(loc="upper left", fontsize=11, framealpha=0.9)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


# -- data ---------------------------------------------------------------------------------


class SeriesLike(Protocol):
    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def points(self) -> Sequence[tuple[float, float]]: ...


# (source name, expression, start, end, step) -> series; raises on a failed query.
RangeFetch = Callable[[str, str, float, float, float], Awaitable[Sequence[SeriesLike]]]


def base_kind(slo: SLO) -> str:
    """The kind of the SLI itself (a burn-rate tier's alert charts the SLI it burns)."""
    sli = slo.sli
    if isinstance(sli, LatencySLI):
        return "latency"
    if isinstance(sli, LogRatioSLI):
        return "log_ratio"
    if isinstance(sli, PromQLSLI):
        return "promql"
    if isinstance(sli, LogQLSLI):
        return "logql"
    return "ratio"


def chart_query(slo: SLO, labels: Mapping[str, str]) -> tuple[str, str]:
    """(source, expression) charting one instance, as the status UI and dashboards do:
    narrowed by its labels where the SLI is built from selectors."""
    extra = [Matcher(k, MatchOp.EQ, v) for k, v in sorted(labels.items())]
    if slo.source == "loki":
        return "loki", sli_logql(slo, extra if isinstance(slo.sli, LogRatioSLI) else ())
    return "prometheus", sli_expr(slo, extra if selector_matchers(slo) is not None else ())


def chart_range(fired_at: float | None, now: float) -> tuple[float, float, float]:
    """(start, end, step): the last 3 h, reaching back to an hour before the firing."""
    start = now - LOOKBACK
    if fired_at is not None:
        start = max(now - MAX_SPAN, min(start, fired_at - BEFORE_FIRING))
    step = float(max(15, math.ceil((now - start) / MAX_POINTS)))
    start = math.floor(start / step) * step
    return start, now, step


def in_thread(render: Callable[[ChartSpec], bytes]) -> Callable[[ChartSpec], Awaitable[bytes]]:
    """`render` run in a worker thread of this process."""

    async def draw(spec: ChartSpec) -> bytes:
        return await asyncio.to_thread(render, spec)

    return draw


class ChartMaker:
    """Draws the chart of one alert payload (as the outbox holds it)."""

    def __init__(
        self,
        fetch: RangeFetch,
        slos: Callable[[], Iterable[SLO]],
        deploy_marker: Callable[[], str | None] = lambda: None,
        timeout: float = 15.0,
        render: Callable[[ChartSpec], Awaitable[bytes]] | None = None,
    ) -> None:
        self.fetch = fetch
        self.slos = slos
        self.deploy_marker = deploy_marker
        self.timeout = timeout
        # The daemon draws in a worker process (chart_worker.py); a thread by default.
        self.render = render or in_thread(render_png)

    async def png(
        self, service: str, alert: Mapping[str, Any], now: float, resolved: bool = False
    ) -> bytes:
        """The chart of `alert` (an outbox payload's alert) up to `now`; at a resolve, `now`
        is the resolve time and is marked."""
        try:
            async with asyncio.timeout(self.timeout):
                spec = await self.spec(service, alert, now, resolved)
                return await self.render(spec)
        except ChartUnavailable:
            raise
        except TimeoutError:
            raise ChartUnavailable(f"no chart within {self.timeout:g} s") from None
        except Exception as exc:  # a picture never blocks a page, whatever failed
            raise ChartUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def spec(
        self, service: str, alert: Mapping[str, Any], now: float, resolved: bool = False
    ) -> ChartSpec:
        name = alert["slo"]
        slo = next((s for s in self.slos() if s.service == service and s.name == name), None)
        if slo is None:
            raise ChartUnavailable(f"{service}/{name}: SLO no longer loaded")
        labels: Mapping[str, str] = alert.get("labels") or {}
        fired = alert.get("started_at")
        start, end, step = chart_range(float(fired) if fired is not None else None, now)
        source, expr = chart_query(slo, labels)
        series = await self.fetch(source, expr, start, end, step)
        match = next(
            (s for s in series if all(s.labels.get(k, "") == v for k, v in labels.items())), None
        )
        if match is None or not match.points:
            raise ChartUnavailable(f"{slo.key}: no data between the chart's start and end")
        deploys: tuple[float, ...] = ()
        marker = self.deploy_marker()
        if marker:
            deploys = await self._deploys(marker, start, end, step)
        instance = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return ChartSpec(
            title=f"{slo.service} / {slo.name}" + (f" {{{instance}}}" if instance else ""),
            kind=base_kind(slo),
            threshold=slo.threshold,
            good_when=slo.good_when.value,
            points=tuple((float(t), float(v)) for t, v in match.points),
            start=start,
            end=end,
            fired_at=float(fired) if fired is not None else None,
            resolved_at=now if resolved else None,
            deploys=deploys,
        )

    async def _deploys(
        self, marker: str, start: float, end: float, step: float
    ) -> tuple[float, ...]:
        """Times the deploy marker rose above 0 (a missing marker leaves the chart bare)."""
        try:
            series = await self.fetch("prometheus", marker, start, end, step)
        except Exception:
            return ()
        times: set[float] = set()
        for s in series:
            was_up = False
            for t, v in s.points:
                up = v > 0
                if up and not was_up:
                    times.add(float(t))
                was_up = up
        return tuple(sorted(times))
