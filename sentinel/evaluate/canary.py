"""Canary analysis, pure: is the canary release worse than the baseline it replaces?

Per SLO the inputs are the canary's and the baseline's counts over the same window —
bad/total for ratio SLIs, cumulative histogram buckets for latency SLIs — and the output
is a `Comparison`: the test, its statistic and one-sided p-value, the effect size, the
counts, and a verdict (pass / marginal / fail / pending / removed) with its reason. `judge`
turns the comparisons into one decision with a weighted score.

Every question is asked as "is the canary's share of bad events larger than the
baseline's?" on a 2x2 table: a one-sided two-proportion z-test,
or Fisher's exact test when an expected cell count is below 5 (Cochran's rule), where the
normal approximation is poor.

- Ratio SLIs: bad events are the SLI's bad events.
- Latency SLIs: bad events are the observations slower than the baseline's quantile (its
  P95 for a P95 SLO), counted from the histogram buckets with the interpolation
  `histogram_quantile` uses. The test asks about the quantile the SLO is about, on the
  counts Prometheus stores exactly.
- Tolerance: the same test is asked again against the baseline moved to the tolerance
  limit (its ratio x (1 + relative) and + absolute; every latency x (1 + relative) and +
  absolute). Only a canary significantly worse than even that fails; one significantly
  worse than the baseline whose estimate lies beyond the tolerance, but not provably so,
  is marginal (more traffic decides). So a canary never fails on a difference smaller
  than the tolerance, and an identical canary fails with a probability far below alpha.
- Fewer events than the minimum on either side: pending, with the counts still needed;
  never pass. A side without any series follows the SLO's no-data policy.

No I/O, no clock: the gate (sentinel/gate/canary.py) gathers the counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

from sentinel.query.canary import SIDES, part
from sentinel.query.promql import PART_LABEL
from sentinel.rules.model import (
    LATENCY_DETECT,
    LATENCY_TOLERANCE,
    RATIO_DETECT,
    RATIO_TOLERANCE,
    CanaryNoData,
    CanaryPolicy,
    CanaryTolerance,
)
from sentinel.sources.base import Sample
from sentinel.units import format_measure

# Cochran's rule: below this expected count in any cell, the z-test's normal
# approximation is poor and Fisher's exact test answers instead.
MIN_EXPECTED_CELL = 5.0

Verdicts = ("pass", "marginal", "fail", "pending", "removed")
CREDIT = {"pass": 1.0, "marginal": 0.5, "fail": 0.0}


@dataclass(frozen=True)
class Counts:
    """A ratio SLI's side: bad and total events over the window."""

    bad: float
    total: float

    @property
    def events(self) -> float:
        return self.total


@dataclass(frozen=True)
class Buckets:
    """A latency SLI's side: cumulative counts by upper bound, ascending, `+Inf` last."""

    bounds: tuple[tuple[float, float], ...]

    @property
    def events(self) -> float:
        return self.bounds[-1][1] if self.bounds else 0.0


Observed = Counts | Buckets


@dataclass(frozen=True)
class Settings:
    """The gate-wide knobs (config `gate.canary`)."""

    alpha: float = 0.01
    # Pass only once a canary `detect` times worse would have failed with this probability.
    power: float = 0.95
    # Before that, a fail needs this much stronger evidence (Haybittle-Peto): a pipeline
    # polling every 30 s looks many times, and each look at `alpha` would add its own
    # chance of failing an identical canary.
    early_alpha: float = 0.001
    pass_score: float = 95.0
    marginal_score: float = 75.0


@dataclass(frozen=True)
class CanaryInput:
    """One SLO to compare. A side is None when its query returned no series at all;
    `unavailable` is (verdict, reason) when the source could not answer (the gate's
    source-down policy chose the verdict)."""

    slo: str
    kind: str  # SLIKind value: latency, ratio, log_ratio
    policy: CanaryPolicy
    canary: Observed | None
    baseline: Observed | None
    quantile: float | None = None
    unavailable: tuple[str, str] | None = None


@dataclass(frozen=True)
class Side:
    events: float | None = None
    bad: float | None = None  # ratio: bad events; latency: observations above the quantile
    value: float | None = None  # ratio (0..1) or the quantile (seconds)

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "bad": self.bad, "value": self.value}


@dataclass(frozen=True)
class Comparison:
    slo: str
    kind: str
    verdict: str
    reason: str
    critical: bool
    weight: float
    quantile: float | None = None  # latency SLIs: the quantile compared (0.95)
    canary: Side = Side()
    baseline: Side = Side()
    test: str | None = None  # "z_test" | "fisher_exact"
    statistic: float | None = None  # z, or Fisher's sample odds ratio
    p_value: float | None = None  # one-sided: canary worse than the baseline
    margin_p_value: float | None = None  # one-sided: canary worse than the tolerance allows
    effect: float | None = None  # relative change of the SLI value (0.5 = +50 %)
    difference: float | None = None  # absolute change (ratio points or seconds)
    tolerated: float | None = None  # the worst canary value the tolerance accepts
    power: float | None = None  # the chance this comparison fails a canary `detect`x worse
    needed: Mapping[str, float] = field(default_factory=dict)  # events still needed per side

    def to_json(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "kind": self.kind,
            "verdict": self.verdict,
            "reason": self.reason,
            "critical": self.critical,
            "weight": self.weight,
            "quantile": self.quantile,
            "canary": self.canary.to_json(),
            "baseline": self.baseline.to_json(),
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "margin_p_value": self.margin_p_value,
            "effect": self.effect,
            "difference": self.difference,
            "tolerated": self.tolerated,
            "power": self.power,
            "needed": dict(self.needed),
        }


@dataclass(frozen=True)
class Judgement:
    decision: str  # pass | marginal | fail | pending
    score: float | None
    reasons: list[str]
    slos: list[Comparison]


# -- reading an answer ---------------------------------------------------------------


class UnusableAnswer(ValueError):
    """A count no honest source returns (NaN, infinite, negative): the SLO cannot be
    compared, and the reason says which."""


def sides_from_answer(latency: bool, samples: Sequence[Sample]) -> dict[str, Observed | None]:
    """Each side's counts from the answer to `query.canary.canary_query`; None for a side
    without series (its total, or every bucket, missing). A missing `bad` series is zero
    bad events (error counters often never exist)."""
    values: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
    for sample in samples:
        name = sample.labels.get(PART_LABEL, "")
        if not 0 <= sample.value < math.inf:
            raise UnusableAnswer(f"{name or 'a part'} is {sample.value!r}, not a count")
        side, _, what = name.partition(":")
        if what == "bucket" and side in buckets:
            le = sample.labels.get("le", "")
            try:
                buckets[side].append((float(le), sample.value))
            except ValueError:
                raise UnusableAnswer(f"{name}: bucket bound {le!r:.40} is not a number") from None
        else:
            values[name] = values.get(name, 0.0) + sample.value
    out: dict[str, Observed | None] = {}
    for side in SIDES:
        if latency:
            out[side] = Buckets(monotonic(buckets[side])) if buckets[side] else None
            continue
        total = values.get(part(side, "total"))
        bad = values.get(part(side, "bad"), 0.0)
        if total is not None and bad > total * (1 + 1e-9):
            raise UnusableAnswer(f"{side}: bad {bad:g} > total {total:g}")
        out[side] = None if total is None else Counts(min(bad, total), total)
    return out


# -- the test -------------------------------------------------------------------------


def one_sided(canary: tuple[int, int], baseline: tuple[int, int]) -> tuple[str, float, float]:
    """(test, statistic, p) for "the canary's share of bad events (bad, good) exceeds the
    baseline's": a pooled two-proportion z-test, or Fisher's exact test when an expected
    cell count is below MIN_EXPECTED_CELL."""
    (a, b), (c, d) = canary, baseline
    n1, n2 = a + b, c + d
    bad, good, n = a + c, b + d, n1 + n2
    if n1 == 0 or n2 == 0:
        return "none", math.nan, 1.0  # nothing to compare (callers check minimums first)
    if min(n1, n2) * min(bad, good) / n < MIN_EXPECTED_CELL:
        return "fisher_exact", _odds_ratio(a, b, c, d), hypergeom_upper_tail(a, n, bad, n1)
    pooled = bad / n
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (a / n1 - c / n2) / se
    # The normal survival function as scipy.special.ndtr(-z) computes it: erfc keeps its
    # relative precision far into the tail, where 1 - cdf(z) would round to 0.
    return "z_test", z, 0.5 * math.erfc(z / math.sqrt(2.0))


# Both tests were scipy.stats' until scipy's import (~1.4 s and ~70 MB of RSS, kept for
# the daemon's life) proved to cost more than the code below; the unit tests check them
# against scipy.stats (still the reference, installed with the test extra) on thousands
# of tables from one event to 10^13, including Fisher's extreme tails.


def _odds_ratio(a: int, b: int, c: int, d: int) -> float:
    """The sample odds ratio scipy.stats.fisher_exact reports: NaN when a margin is
    empty (nothing to compare), +Inf when only the denominator is 0."""
    if 0 in (a + b, c + d, a + c, b + d):
        return math.nan
    return math.inf if b * c == 0 else (a * d) / (b * c)


# Terms of a tail smaller than this share of the sum so far no longer change it.
_NEGLIGIBLE = 1e-17
# Far above what Fisher's domain allows (below MIN_EXPECTED_CELL): a guard, not a choice.
MAX_FISHER_VARIANCE = 1e4


def hypergeom_upper_tail(at_least: int, population: int, marked: int, drawn: int) -> float:
    """P(X >= at_least) for X ~ Hypergeometric: `drawn` events taken without replacement
    from `population` of which `marked` are bad — Fisher's one-sided ("greater") p-value
    of the canary's row."""
    return hypergeom_tail_terms(at_least, population, marked, drawn)[0]


def hypergeom_tail_terms(
    at_least: int, population: int, marked: int, drawn: int
) -> tuple[float, int]:
    """(P(X >= at_least), the number of terms summed for it).

    One density is computed directly (`_log_hypergeom_pmf`, to ~1e-13 relative at any
    size), its neighbours by the exact ratio of consecutive terms. The tail not holding
    the mode is summed, from `at_least` away from the mode, where terms only shrink; the sum
    stops once they no longer change it. Within Fisher's domain (an expected cell below 5)
    the variance is below 5 as well, so that is a few dozen terms, whatever the counts."""
    good = population - marked
    low, high = max(0, drawn - good), min(drawn, marked)
    if at_least <= low or marked == 0 or good == 0:
        return 1.0, 0
    if at_least > high:
        return 0.0, 0
    spread = drawn * marked * good * (population - drawn) / (population**2 * (population - 1))
    if spread > MAX_FISHER_VARIANCE:
        # Summing would take ~ the square root of this many terms; one_sided asks only
        # where an expected cell is below 5, and so the variance too.
        raise ValueError(f"variance {spread:g}: use the normal approximation")
    mode = (drawn + 1) * (marked + 1) // (population + 2)
    if at_least > mode:  # the upper tail itself: x = at_least, at_least + 1, ...
        x, stop, step = at_least, high, 1
    else:  # 1 - the lower tail: x = at_least - 1, at_least - 2, ...
        x, stop, step = at_least - 1, low, -1
    term = math.exp(_log_hypergeom_pmf(x, population, marked, drawn))
    total, terms = term, 1
    while x != stop and term > total * _NEGLIGIBLE:
        if step == 1:
            term *= (marked - x) * (drawn - x) / ((x + 1) * (good - drawn + x + 1))
        else:
            term *= x * (good - drawn + x) / ((marked - x + 1) * (drawn - x + 1))
        x += step
        total += term
        terms += 1
    tail = total if step == 1 else 1.0 - total
    return min(1.0, max(0.0, tail)), terms


def _log_hypergeom_pmf(x: int, population: int, marked: int, drawn: int) -> float:
    """log P(X = x), as R's dhyper computes it (Loader's saddle-point expansion, 2000):
    three binomial densities at p = drawn / population, each from Stirling's error terms
    and a deviance computed without cancellation. Plain lgamma differences lose about
    N log N x 1e-16 in the log: 0.4 % at N = 10^12 and everything at 10^16 (a p of 1e-35
    came out 1.0)."""
    p = drawn / population
    q = (population - drawn) / population
    return (
        _log_binom_pmf(x, marked, p, q)
        + _log_binom_pmf(drawn - x, population - marked, p, q)
        - _log_binom_pmf(drawn, population, p, q)
    )


def _log_binom_pmf(x: int, n: int, p: float, q: float) -> float:
    """log of the binomial density (R's dbinom_raw), for 0 <= x <= n and 0 < p, q."""
    if x == 0:
        return -_deviance(n, n * q) - n * p if p < 0.1 else n * math.log(q)
    if x == n:
        return -_deviance(n, n * p) - n * q if q < 0.1 else n * math.log(p)
    lc = (
        _stirling_error(n)
        - _stirling_error(x)
        - _stirling_error(n - x)
        - _deviance(x, n * p)
        - _deviance(n - x, n * q)
    )
    # x (n - x) / n exactly, in integers, then rounded once: log(x) + log1p(-x / n) lost
    # ~n 1e-16 / (n - x) of relative accuracy, and raised at x / n rounding to 1.0 (a
    # canary of 10^17 events against a baseline of one).
    return lc - 0.5 * (math.log(2 * math.pi) + math.log(x * (n - x) / n))


def _stirling_error(n: int) -> float:
    """log(n!) - log(sqrt(2 pi n) (n/e)^n), the error of Stirling's formula."""
    if n <= 15:
        return math.lgamma(n + 1) - (n + 0.5) * math.log(n) + n - 0.5 * math.log(2 * math.pi)
    nn = float(n) * n
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def _deviance(x: float, mean: float) -> float:
    """x log(x / mean) + mean - x, without the cancellation when x is close to mean."""
    if abs(x - mean) < 0.1 * (x + mean):
        v = (x - mean) / (x + mean)
        s = (x - mean) * v
        ej = 2 * x * v
        v *= v
        for j in range(1, 1000):
            ej *= v
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
        return s
    return x * math.log(x / mean) + mean - x


def _table(bad: float, total: float) -> tuple[int, int]:
    """Counts from increase() are extrapolated (fractional): the tests take whole events."""
    whole_total = max(0, round(total))
    whole_bad = min(max(0, round(bad)), whole_total)
    return whole_bad, whole_total - whole_bad


# -- histograms -----------------------------------------------------------------------


def monotonic(bounds: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Sorted by bound, counts made non-decreasing (as Prometheus does: increase()
    extrapolates each bucket on its own, so neighbours can disagree slightly)."""
    out, running = [], 0.0
    for le, count in sorted(bounds):
        running = max(running, count)
        out.append((le, running))
    return tuple(out)


def quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (None without events)."""
    bounds = buckets.bounds
    if len(bounds) < 2 or not math.isinf(bounds[-1][0]) or buckets.events <= 0:
        return None
    rank = q * buckets.events
    index = next(i for i, (_, count) in enumerate(bounds) if count >= rank)
    if index == len(bounds) - 1:
        return bounds[-2][0]  # in the +Inf bucket: the highest finite bound
    upper, count = bounds[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else bounds[index - 1]
    in_bucket = count - below
    return lower + (upper - lower) * ((rank - below) / in_bucket if in_bucket else 0.0)


def count_above(buckets: Buckets, x: float) -> float | None:
    """Observations slower than `x`, interpolating inside the bucket holding `x` (the
    assumption histogram_quantile makes); None when `x` lies beyond the highest finite
    bound, where the +Inf bucket cannot be split."""
    bounds = buckets.bounds
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if math.isinf(upper):
            return None
        if x <= upper:
            share = (x - lower) / (upper - lower) if upper > lower else 1.0
            return buckets.events - (below + (count - below) * max(0.0, share))
        lower, below = upper, count
    return None


# -- per SLO --------------------------------------------------------------------------


def compare(inp: CanaryInput, settings: Settings, all_informed: bool = True) -> Comparison:
    """One SLO's comparison. With `all_informed` False (another SLO still lacks the power
    to pass), a fail needs early_alpha even where this SLO alone has its power: otherwise
    it would be tested at alpha on every look while the slowest SLO gathers traffic."""
    policy = inp.policy
    base = Comparison(inp.slo, inp.kind, "pass", "", policy.critical, policy.weight, inp.quantile)
    if inp.unavailable is not None:
        verdict, reason = inp.unavailable
        return _with(base, verdict, f"{inp.slo}: {reason}")
    canary, baseline = inp.canary, inp.baseline
    missing = [name for name, side in (("canary", canary), ("baseline", baseline)) if side is None]
    if missing and policy.no_data is not CanaryNoData.ZERO:
        what = " and ".join(missing)
        verb = "have" if len(missing) > 1 else "has"
        reason = f"{inp.slo}: {what} {verb} no data (no series match the selector)"
        if policy.no_data is CanaryNoData.REMOVE:
            return _with(base, "removed", reason + "; left out (no_data: remove)")
        return _with(base, "fail", reason + " (no_data: fail)")
    empty: Observed = Counts(0.0, 0.0) if inp.kind != "latency" else Buckets(())
    canary = canary if canary is not None else empty
    baseline = baseline if baseline is not None else empty
    needed = {
        "canary": max(0.0, policy.min_canary_events - canary.events),
        "baseline": max(0.0, policy.min_baseline_events - baseline.events),
    }
    if any(needed.values()):
        base = _replace(
            base, canary=Side(canary.events), baseline=Side(baseline.events), needed=needed
        )
        return _with(base, "pending", f"{inp.slo}: {_shortfall(needed, canary, baseline)}")
    if isinstance(canary, Counts) and isinstance(baseline, Counts):
        tolerance = policy.tolerance or RATIO_TOLERANCE
        detect = policy.detect or RATIO_DETECT
        return _ratio(base, canary, baseline, tolerance, detect, settings, all_informed)
    if isinstance(canary, Buckets) and isinstance(baseline, Buckets):
        tolerance = policy.tolerance or LATENCY_TOLERANCE
        detect = policy.detect or LATENCY_DETECT
        q = inp.quantile or 0.95
        return _latency(base, canary, baseline, q, tolerance, detect, settings, all_informed)
    raise TypeError(f"{inp.slo}: canary and baseline are of different kinds")


def _shortfall(needed: Mapping[str, float], canary: Observed, baseline: Observed) -> str:
    have = {"canary": canary.events, "baseline": baseline.events}
    return "; ".join(
        f"{side} needs {math.ceil(n):,} more events (has {have[side]:,.0f})"
        for side, n in needed.items()
        if n > 0
    )


def _ratio(
    base: Comparison,
    canary: Counts,
    baseline: Counts,
    tol: CanaryTolerance,
    detect: float,
    settings: Settings,
    all_informed: bool,
) -> Comparison:
    c_bad, c_good = _table(canary.bad, canary.total)
    b_bad, b_good = _table(baseline.bad, baseline.total)
    c_n, b_n = c_bad + c_good, b_bad + b_good
    c_ratio, b_ratio = c_bad / c_n, b_bad / b_n
    limit = min(1.0, max(b_ratio * (1 + tol.relative), b_ratio + tol.absolute))
    test, statistic, p = one_sided((c_bad, c_good), (b_bad, b_good))
    at_limit = round(limit * b_n)
    margin_p = one_sided((c_bad, c_good), (at_limit, b_n - at_limit))[2] if limit < 1 else 1.0
    effect = c_ratio / b_ratio - 1 if b_ratio > 0 else (math.inf if c_ratio > 0 else 0.0)
    # The regression to detect: `detect` x the baseline, or at least one absolute
    # tolerance beyond the limit (a baseline without errors has no multiple).
    worse = min(1.0, max(b_ratio * detect, limit + tol.absolute))
    c = _replace(
        base,
        canary=Side(c_n, c_bad, c_ratio),
        baseline=Side(b_n, b_bad, b_ratio),
        test=test,
        statistic=statistic,
        p_value=p,
        margin_p_value=margin_p,
        effect=effect,
        difference=c_ratio - b_ratio,
        tolerated=limit,
    )
    what = f"{detect:g}x the baseline ratio"
    return _decide(c, settings, "", worse, at_limit / b_n, what, all_informed)


def _latency(
    base: Comparison,
    canary: Buckets,
    baseline: Buckets,
    q: float,
    tol: CanaryTolerance,
    detect: float,
    settings: Settings,
    all_informed: bool,
) -> Comparison:
    canary, baseline = Buckets(monotonic(canary.bounds)), Buckets(monotonic(baseline.bounds))
    b_q, c_q = quantile(q, baseline), quantile(q, canary)
    if b_q is None or c_q is None:
        return _with(base, "fail", f"{base.slo}: histogram without a +Inf bucket")
    limit = max(b_q * (1 + tol.relative), b_q + tol.absolute)
    c_above, b_above = count_above(canary, b_q), count_above(baseline, b_q)
    if c_above is None or b_above is None:  # the baseline's quantile is in the +Inf bucket
        top = canary.bounds[-2][0]
        c_above = canary.events - canary.bounds[-2][1]
        b_above = baseline.events - baseline.bounds[-2][1]
        b_q = c_q = top
    c_bad, c_good = _table(c_above, canary.events)
    b_bad, b_good = _table(b_above, baseline.events)
    test, statistic, p = one_sided((c_bad, c_good), (b_bad, b_good))
    # Moved to the tolerance limit, the baseline has b_bad observations above `limit`;
    # the canary is compared with that.
    c_over = count_above(canary, limit)
    note, margin_p = "", None
    if c_over is None:
        top_text = format_measure("latency", canary.bounds[-2][0])
        note = f"; the tolerance lies beyond the highest finite bucket ({top_text}): cannot fail"
    else:
        margin_p = one_sided(_table(c_over, canary.events), (b_bad, b_good))[2]
    # A canary `detect` x slower than the baseline has the baseline's share of
    # observations above limit / detect above the limit.
    slow = count_above(baseline, limit / detect)
    worse = slow / baseline.events if slow is not None and c_over is not None else None
    c = _replace(
        base,
        canary=Side(canary.events, c_bad, c_q),
        baseline=Side(baseline.events, b_bad, b_q),
        test=test,
        statistic=statistic,
        p_value=p,
        margin_p_value=margin_p,
        effect=c_q / b_q - 1 if b_q > 0 else (math.inf if c_q > 0 else 0.0),
        difference=c_q - b_q,
        tolerated=limit,
    )
    share = b_bad / baseline.events
    what = f"a P{q * 100:g} {detect:g}x the baseline's"
    return _decide(c, settings, note, worse, share, what, all_informed)


def _decide(
    c: Comparison,
    settings: Settings,
    note: str,
    worse: float | None,
    at_limit: float,
    detect_text: str,
    all_informed: bool = True,
) -> Comparison:
    """fail / marginal / pending (too little data to have caught `worse`) / pass.
    `worse` and `at_limit` are the shares of bad events of the regression to detect and of
    the baseline at the tolerance limit, as the margin test compares them."""
    p, value, tolerated = c.p_value, c.canary.value, c.tolerated
    assert p is not None and value is not None and tolerated is not None
    alpha = settings.alpha
    n_c, n_b = c.canary.events or 0.0, c.baseline.events or 0.0
    # Nothing to detect beyond the tolerance (it is wider than `detect`): power is moot.
    power = None
    if worse is not None and worse > at_limit:
        power = detection_power(worse, at_limit, n_c, n_b, alpha)
    c = _replace(c, power=power)
    informed = power is None or power >= settings.power
    margin_p = c.margin_p_value
    fail_at = alpha if informed and all_informed else settings.early_alpha
    if margin_p is not None and margin_p < fail_at:
        return _with(c, "fail", _describe(c, "fail") + note)
    # Significantly slower where the histogram cannot tell by how much: marginal.
    if p < alpha and (value > tolerated or margin_p is None):
        return _with(c, "marginal", _describe(c, "marginal") + note)
    if informed:
        return _with(c, "pass", _describe(c, "pass") + note)
    assert power is not None and worse is not None
    scale = _scale_for_power(worse, at_limit, n_c, n_b, alpha, settings.power)
    needed = {"canary": n_c * (scale - 1), "baseline": n_b * (scale - 1)}
    reason = (
        f"{c.slo}: too little traffic to tell a canary at {detect_text} apart "
        f"(power {power * 100:.1f} % < {settings.power * 100:g} %): about "
        + "; ".join(f"{side} needs {math.ceil(n):,} more events" for side, n in needed.items())
    )
    return _replace(c, verdict="pending", reason=reason, needed=needed)


# A sizing estimate, not a test: the standard library's normal distribution is exact
# enough and ~50x cheaper per call than scipy's, which matters inside the bisection.
_NORMAL = NormalDist()


def detection_power(worse: float, at_limit: float, n_c: float, n_b: float, alpha: float) -> float:
    """The chance that the margin test (one-sided z-test at `alpha`) fails a canary whose
    share of bad events is `worse`, the baseline's at the limit being `at_limit` (normal
    approximation: a sizing estimate, not the test)."""
    if n_c <= 0 or n_b <= 0:
        return 0.0
    pooled = (n_c * worse + n_b * at_limit) / (n_c + n_b)
    null_se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_b))
    alt_se = math.sqrt(worse * (1 - worse) / n_c + at_limit * (1 - at_limit) / n_b)
    if alt_se == 0:
        return 1.0
    z_alpha = _NORMAL.inv_cdf(1 - alpha)
    return _NORMAL.cdf((worse - at_limit - z_alpha * null_se) / alt_se)


def _scale_for_power(
    worse: float, at_limit: float, n_c: float, n_b: float, alpha: float, target: float
) -> float:
    """How many times the current traffic (both sides growing at today's split) reaches
    the target power; bisection, capped at 10^6."""
    low, high = 1.0, 1e6
    if detection_power(worse, at_limit, n_c * high, n_b * high, alpha) < target:
        return high
    while high / low > 1.001:
        mid = math.sqrt(low * high)
        if detection_power(worse, at_limit, n_c * mid, n_b * mid, alpha) >= target:
            high = mid
        else:
            low = mid
    return high


def _describe(c: Comparison, verdict: str) -> str:
    kind = "latency" if c.kind == "latency" else "ratio"
    what = f"P{c.quantile * 100:g} " if c.quantile is not None else ""
    assert c.effect is not None and c.p_value is not None
    effect = "+inf %" if math.isinf(c.effect) else f"{c.effect * 100:+.0f} %"
    text = (
        f"{c.slo}: canary {what}{format_measure(kind, c.canary.value)} vs baseline "
        f"{format_measure(kind, c.baseline.value)} ({effect}; tolerated <= "
        f"{format_measure(kind, c.tolerated)}), p = {c.p_value:.2g}"
    )
    if verdict == "fail":
        return text + f", beyond the tolerance p = {c.margin_p_value:.2g}"
    if verdict == "marginal":
        return text + ", beyond the tolerance not yet significant"
    return text


def _with(c: Comparison, verdict: str, reason: str) -> Comparison:
    return _replace(c, verdict=verdict, reason=reason)


def _replace(c: Comparison, **changes: Any) -> Comparison:
    return replace(c, **changes)


# -- overall --------------------------------------------------------------------------


def judge(inputs: Sequence[CanaryInput], settings: Settings) -> Judgement:
    """Every SLO compared, then one decision. Only proven regressions fail: a critical
    SLO that fails, or non-critical failures whose weight brings the share of SLOs not
    failing below marginal_score. Any SLO still pending keeps the canary pending (never
    pass on too little data). Otherwise the score (weighted: pass 1, marginal 0.5,
    fail 0) below pass_score, or a critical SLO that is marginal, is marginal."""
    slos = [compare(inp, settings) for inp in inputs]
    if any(c.verdict == "pending" for c in slos):
        # Until every SLO has its power, fails need early_alpha (see `compare`).
        slos = [compare(inp, settings, all_informed=False) for inp in inputs]
    by = {v: [c for c in slos if c.verdict == v] for v in Verdicts}
    scored = by["pass"] + by["marginal"] + by["fail"]
    weights = sum(c.weight for c in scored)
    score = None
    if weights > 0:
        score = round(100 * sum(c.weight * CREDIT[c.verdict] for c in scored) / weights, 1)
    problems = [c.reason for v in ("fail", "marginal", "pending", "removed") for c in by[v]]
    if any(c.critical for c in by["fail"]):
        return Judgement("fail", score, problems, slos)
    if weights > 0:
        standing = 100 * (1 - sum(c.weight for c in by["fail"]) / weights)
        if standing < settings.marginal_score:
            minimum = settings.marginal_score
            note = f"SLOs not failing: {standing:.3g} % < marginal_score {minimum:g}"
            return Judgement("fail", score, [*problems, note], slos)
    if by["pending"]:
        return Judgement("pending", score, problems, slos)
    if score is None:
        return Judgement("pending", None, [*problems, "no SLO could be compared"], slos)
    if score < settings.pass_score or any(c.critical for c in by["marginal"]):
        note = f"score {score:g}" + (
            f" < pass_score {settings.pass_score:g}" if score < settings.pass_score else ""
        )
        return Judgement("marginal", score, [*problems, note], slos)
    return Judgement("pass", score, problems, slos)
