"""Query planning for Prometheus: the model rendered as PromQL.

Every label value is escaped here and only here, so a value taken from a request
(`service=foo"}or vector(1)`) can never change the shape of a query.

Each SLO becomes ONE expression per window. Ratio and latency SLIs return their parts
(bad/total, value/events) in one answer, told apart by a `sentinel_part` label, so a rule
with `group_by: [service]` over 1,000 services still costs one request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sentinel.rules.model import (
    LABEL_NAME,
    SLO,
    ErrorRatioSLI,
    LatencySLI,
    Matcher,
    MatchOp,
    PromQLSLI,
    RatioQueriesSLI,
    RatioSLI,
    Selector,
)
from sentinel.units import format_duration

PART_LABEL = "sentinel_part"
# The window label of the series `sentinel rules export` records (sentinel/outputs/export.py).
WINDOW_LABEL = "sentinel_window"


# Prometheus' lexer refuses a raw newline in a string and reads a decoded U+FFFD as an
# invalid UTF-8 byte ("parse error: invalid UTF-8 rune"), so U+FFFD — what an invalid
# percent-encoding in a gate request decodes to — is written as an escape, which both
# PromQL's lexer and LogQL's (Go's strconv.Unquote) read back as the same character.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\ufffd": "\\ufffd"})


def quote(value: str) -> str:
    """A PromQL/LogQL double-quoted string literal."""
    return f'"{value.translate(_ESCAPES)}"'


def render_matchers(matchers: Sequence[Matcher]) -> str:
    for m in matchers:
        if not LABEL_NAME.match(m.label):
            raise ValueError(f"invalid label name {m.label!r}")
    return ", ".join(f"{m.label}{m.op.value}{quote(m.value)}" for m in matchers)


def rule_matchers(
    selector_matchers: Sequence[Matcher], defaults: Sequence[tuple[str, str]]
) -> list[Matcher]:
    """The rule's own matchers: rule-file defaults, overridden per label by the selector's."""
    merged: dict[str, Matcher] = {}
    for label, value in defaults:
        merged[label] = Matcher(label, MatchOp.EQ, value)
    for m in selector_matchers:
        merged[m.label] = m
    return list(merged.values())


def effective_matchers(
    selector_matchers: Sequence[Matcher],
    defaults: Sequence[tuple[str, str]],
    extra: Sequence[Matcher] = (),
) -> list[Matcher]:
    """The rule's matchers, then request-time extras BESIDE them (PromQL ANDs matchers on
    the same label): a request can only narrow what a rule measures, never replace it.
    A request value the rule excludes selects nothing; the gate refuses it before."""
    merged = rule_matchers(selector_matchers, defaults)
    for m in extra:
        if m not in merged:
            merged.append(m)
    return merged


def selector_matchers(slo: SLO) -> list[list[Matcher]] | None:
    """The rule's own matchers of each selector that request matchers join, or None for a
    raw-query SLI (its text is sent as written; request matchers do not apply)."""
    sli = slo.sli
    if isinstance(sli, RatioSLI):
        return [rule_matchers(s.matchers, slo.labels) for s in (sli.bad, sli.total)]
    if isinstance(sli, LatencySLI):
        return [rule_matchers(sli.histogram.matchers, slo.labels)]
    return None


def render_selector(
    selector: Selector,
    defaults: Sequence[tuple[str, str]] = (),
    extra: Sequence[Matcher] = (),
    suffix: str = "",
) -> str:
    matchers = effective_matchers(selector.matchers, defaults, extra)
    return f"{selector.metric}{suffix}{{{render_matchers(matchers)}}}"


def _by(labels: Sequence[str]) -> str:
    return f"sum by ({', '.join(labels)}) " if labels else "sum "


def _tag(expr: str, part: str) -> str:
    return f'label_replace({expr}, "{PART_LABEL}", "{part}", "", "")'


def slo_query(slo: SLO, window: float | None = None, extra: Sequence[Matcher] = ()) -> str:
    """The one PromQL expression that yields every instance of `slo` over `window`."""
    w = format_duration(window if window is not None else slo.window)
    sli = slo.sli
    if isinstance(sli, RatioSLI):
        bad = render_selector(sli.bad, slo.labels, extra)
        total = render_selector(sli.total, slo.labels, extra)
        by = _by(slo.group_by)
        return (
            f"{_tag(f'{by}(increase({bad}[{w}]))', 'bad')}\nor\n"
            f"{_tag(f'{by}(increase({total}[{w}]))', 'total')}"
        )
    if isinstance(sli, LatencySLI):
        buckets = render_selector(sli.histogram, slo.labels, extra, "_bucket")
        count = render_selector(sli.histogram, slo.labels, extra, "_count")
        by_le = _by(("le", *slo.group_by))
        quantile = f"histogram_quantile({sli.quantile!r}, {by_le}(rate({buckets}[{w}])))"
        return (
            f"{_tag(quantile, 'value')}\nor\n"
            f"{_tag(f'{_by(slo.group_by)}(increase({count}[{w}]))', 'events')}"
        )
    if isinstance(sli, RatioQueriesSLI):
        return (
            f"{_tag(f'({window_template(sli.bad_query, w)})', 'bad')}\nor\n"
            f"{_tag(f'({window_template(sli.total_query, w)})', 'total')}"
        )
    if isinstance(sli, ErrorRatioSLI):
        return _tag(f"({window_template(sli.query, w)})", "ratio")
    if isinstance(sli, PromQLSLI):
        return window_template(sli.query, w)
    raise TypeError(f"{slo.key}: {type(sli).__name__} is not a Prometheus SLI")


def window_template(query: str, window: str) -> str:
    """Substitute the window: Sentinel's `$window` and Sloth's `{{.window}}`."""
    return re.sub(r"\{\{\s*\.window\s*\}\}", window, query).replace("$window", window)


def sli_expr(slo: SLO, extra: Sequence[Matcher] = ()) -> str:
    """The SLI itself as one PromQL expression over the SLO window (for dashboards).

    A missing `bad` series counts as zero, as in evaluation: `(bad or 0 * total) / total`.
    """
    w = format_duration(slo.window)
    sli = slo.sli
    by = _by(slo.group_by)
    if isinstance(sli, RatioSLI):
        bad = f"{by}(increase({render_selector(sli.bad, slo.labels, extra)}[{w}]))"
        total = f"{by}(increase({render_selector(sli.total, slo.labels, extra)}[{w}]))"
        return f"({bad} or 0 * {total}) / {total}"
    if isinstance(sli, LatencySLI):
        buckets = render_selector(sli.histogram, slo.labels, extra, "_bucket")
        by_le = _by(("le", *slo.group_by))
        return f"histogram_quantile({sli.quantile!r}, {by_le}(rate({buckets}[{w}])))"
    if isinstance(sli, RatioQueriesSLI):
        return f"({window_template(sli.bad_query, w)}) / ({window_template(sli.total_query, w)})"
    if isinstance(sli, ErrorRatioSLI | PromQLSLI):
        return window_template(sli.query, w)
    raise TypeError(f"{slo.key}: {type(sli).__name__} is not a Prometheus SLI")


def rate_exprs(slo: SLO, extra: Sequence[Matcher] = ()) -> dict[str, str]:
    """Traffic panels derived from an SLO: events/s (and bad events/s, or quantiles)."""
    sli = slo.sli
    by = _by(slo.group_by)
    if isinstance(sli, RatioSLI):
        return {
            "total/s": f"{by}(rate({render_selector(sli.total, slo.labels, extra)}[5m]))",
            "bad/s": f"{by}(rate({render_selector(sli.bad, slo.labels, extra)}[5m]))",
        }
    if isinstance(sli, LatencySLI):
        buckets = render_selector(sli.histogram, slo.labels, extra, "_bucket")
        by_le = _by(("le", *slo.group_by))
        return {
            f"p{q}": f"histogram_quantile(0.{q}, {by_le}(rate({buckets}[5m])))"
            for q in (50, 95, 99)
        }
    return {}


# The recorded period ratio is evaluated every 5 minutes (sentinel/outputs/export.py), so
# an instant selector (5-minute lookback) would miss it between evaluations: it is read
# with last_over_time over two of its intervals (one missed evaluation tolerated).
PERIOD_LOOKBACK = "10m"


def recorded_ratio_query(slo: SLO, window: float) -> str:
    """The error ratio of `window` from the series `sentinel rules export` records."""
    name = f"slo:sli_error:ratio_rate{format_duration(window)}"
    selector = f"{name}{{sentinel_service={quote(slo.service)}, sentinel_slo={quote(slo.name)}}}"
    if window == slo.period:
        selector = f"last_over_time({selector}[{PERIOD_LOOKBACK}])"
    # Without the recording rule's name and window label every window answers an
    # instance with one label set, which the answers then share
    # (sentinel/sources/compact_vector.py): with them, 8 windows x 10,000 instances were
    # 80,000 distinct sets held from cycle to cycle instead of 10,000.
    for label in ("__name__", WINDOW_LABEL):
        selector = f'label_replace({selector}, "{label}", "", "", "")'
    return _tag(selector, "ratio")


def exportable(slo: SLO) -> bool:
    """Whether `sentinel rules export` writes recording rules for the SLO, so its budget
    and burn-rate windows can be read from the recorded series."""
    return (
        isinstance(slo.sli, RatioSLI | RatioQueriesSLI | ErrorRatioSLI)
        and slo.objective is not None
        and slo.period is not None
        and slo.burn is not None
    )
