"""Error budgets and multi-window multi-burn-rate alerting, pure.

Window catalogues are data (`sentinel.rules.catalogues`). A tier fires when the burn rate
exceeds its factor over BOTH its long and its short window, where

    factor = error_budget_percent / 100 * period / long_window

so the 30-day catalogue derives the workbook's 14.4 / 6 / 3 / 1 and a 7-day one its own.
A window with fewer than `min_events` events cannot be judged (no paging on three
requests): the tier is then `no_data`, never `ok`.

`judge_tier` and `budget_report` are the definitions, written to be read: the daemon's
cycle computes the same inline for thousands of instances (sentinel/evaluate/budgets.py),
and tests/unit/test_eval_fastpath.py holds both to the same results, field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sentinel.rules.catalogues import BurnTier
from sentinel.units import format_duration


class WindowRatio(NamedTuple):
    """Bad and total events of one window (a tuple: thousands are built per cycle)."""

    bad: float
    total: float
    counted: bool = True  # False for raw error ratios: no event counts to guard with

    @property
    def ratio(self) -> float | None:
        return self.bad / self.total if self.total > 0 else None


@dataclass(frozen=True)
class TierVerdict:
    tier: BurnTier
    factor: float
    firing: bool
    long_burn: float | None
    short_burn: float | None
    reason: str
    # False when a window lacks data or events: the burn rates, if any, prove nothing.
    judged: bool = True


def burn_rate(window: WindowRatio | None, budget: float) -> float | None:
    ratio = window.ratio if window is not None else None
    return None if ratio is None else ratio / budget


def judge_tier(
    tier: BurnTier,
    period: float,
    budget: float,
    windows: Mapping[float, WindowRatio],
    min_events: float,
) -> TierVerdict:
    factor = tier.factor(period)
    long_w, short_w = windows.get(tier.long_window), windows.get(tier.short_window)
    long_burn, short_burn = burn_rate(long_w, budget), burn_rate(short_w, budget)
    small = [
        format_duration(w)
        for w, data in ((tier.long_window, long_w), (tier.short_window, short_w))
        if data is None or data.ratio is None or (data.counted and data.total < min_events)
    ]
    if small:
        reason = f"too little traffic in {', '.join(small)} (min_events {min_events:g})"
        return TierVerdict(tier, factor, False, long_burn, short_burn, reason, judged=False)
    assert long_burn is not None and short_burn is not None
    firing = long_burn > factor and short_burn > factor
    # The sentence is built on demand (SLOResult.explanation): thousands per cycle.
    return TierVerdict(tier, factor, firing, long_burn, short_burn, "")


def budget_report(
    objective: float,
    period: float,
    period_window: WindowRatio | None,
    windows: Mapping[float, WindowRatio],
    names: Mapping[float, str] | None = None,
) -> dict[str, Any]:
    """Error budget over the period: traffic-weighted (sum bad / sum total), never an
    average of short-window ratios."""
    budget = 1.0 - objective
    ratio = period_window.ratio if period_window is not None else None
    consumed = None if ratio is None else ratio / budget
    return {
        "period": names[period] if names and period in names else format_duration(period),
        "error_ratio": ratio,
        "sli": None if ratio is None else 1.0 - ratio,
        "budget_total": budget,
        "consumed": consumed,
        "remaining": None if consumed is None else 1.0 - consumed,
        "events": period_window.total if period_window and period_window.counted else None,
        "burn_rates": {
            (names[w] if names else format_duration(w)): burn_rate(data, budget)
            for w, data in sorted(windows.items())
        },
    }
