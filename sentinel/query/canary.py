"""Query planning for the gate's canary mode: the canary's and the baseline's counts of one
SLO over the same window, in ONE query (both sides at the same instant, one request).

Each side's matchers are added beside the rule's own, exactly as a request label is
(`effective_matchers`): a side can only narrow what the rule measures, never replace it,
and every value is escaped by `render_matchers`. Parts are told apart by `sentinel_part`:
`canary:bad`, `canary:total`, `baseline:bad`, `baseline:total` for ratio SLIs (from
Prometheus counters or Loki lines), `canary:bucket` / `baseline:bucket` with their `le`
for latency histograms. The comparison sums over instances: a rule's `group_by` splits
its absolute SLO, not the release comparison.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from sentinel.query.logql import log_ratio_parts
from sentinel.query.promql import PART_LABEL, render_selector
from sentinel.rules.model import SLO, LatencySLI, LogRatioSLI, Matcher, RatioSLI
from sentinel.units import format_duration

SIDES = ("canary", "baseline")


def comparable(slo: SLO) -> bool:
    """Whether the SLI can be split by release (raw queries cannot take matchers)."""
    return slo.canary.compare and isinstance(slo.sli, LatencySLI | RatioSLI | LogRatioSLI)


def part(side: str, name: str) -> str:
    return f"{side}:{name}"


def _tag(expr: str, name: str) -> str:
    return f'label_replace({expr}, "{PART_LABEL}", "{name}", "", "")'


def canary_query(
    slo: SLO,
    sides: Mapping[str, Sequence[Matcher]],
    window: float,
    extra: Sequence[Matcher] = (),
) -> str:
    """The one PromQL (or LogQL, for log_ratio SLIs) expression with both sides' counts
    over `window`. `extra` are the request's own narrowing labels (`env=prod`)."""
    w = format_duration(window)
    sli = slo.sli
    parts: list[str] = []
    for side in SIDES:
        narrowed = [*extra, *sides[side]]
        if isinstance(sli, RatioSLI):
            for name, selector in (("bad", sli.bad), ("total", sli.total)):
                rendered = render_selector(selector, slo.labels, narrowed)
                parts.append(_tag(f"sum(increase({rendered}[{w}]))", part(side, name)))
        elif isinstance(sli, LatencySLI):
            buckets = render_selector(sli.histogram, slo.labels, narrowed, "_bucket")
            parts.append(_tag(f"sum by (le) (increase({buckets}[{w}]))", part(side, "bucket")))
        elif isinstance(sli, LogRatioSLI):
            whole = dataclasses.replace(slo, group_by=())
            bad, total = log_ratio_parts(whole, window, narrowed)
            parts += [_tag(bad, part(side, "bad")), _tag(total, part(side, "total"))]
        else:
            raise TypeError(f"{slo.key}: {type(sli).__name__} cannot be split by release")
    return "\nor\n".join(parts)
