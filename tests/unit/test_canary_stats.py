"""The canary comparison's statistics (sentinel/evaluate/canary.py) and its query planning
(sentinel/query/canary.py), pure: counts in, verdicts and reasons out."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from sentinel.evaluate.canary import (
    Buckets,
    CanaryInput,
    Counts,
    Settings,
    UnusableAnswer,
    compare,
    count_above,
    hypergeom_tail_terms,
    hypergeom_upper_tail,
    judge,
    one_sided,
    quantile,
    sides_from_answer,
)
from sentinel.query.canary import canary_query
from sentinel.rules.model import (
    SLO,
    CanaryNoData,
    CanaryPolicy,
    LatencySLI,
    Matcher,
    MatchOp,
    RatioSLI,
    Selector,
)
from sentinel.sources.base import Sample

LE = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, math.inf)
FAST = (5, 15, 30, 32, 14, 3, 1, 0, 0, 0)
SLOW = (0, 5, 15, 30, 25, 15, 8, 2, 0, 0)
ANY = CanaryPolicy(min_canary_events=0, min_baseline_events=0)


def hist(shares: tuple[int, ...], n: float) -> Buckets:
    running, out = 0.0, []
    for le, share in zip(LE, shares, strict=True):
        running += n * share / 100
        out.append((le, running))
    return Buckets(tuple(out))


def ratio(canary: Counts | None, baseline: Counts | None, policy: CanaryPolicy = ANY) -> str:
    return compare(CanaryInput("r", "ratio", policy, canary, baseline), Settings()).verdict


@pytest.mark.parametrize(
    ("canary", "baseline", "test"),
    [
        ((3, 997), (5, 9995), "fisher_exact"),  # expected canary errors < 5
        ((60, 5940), (300, 59700), "z_test"),
        ((0, 100), (0, 10000), "fisher_exact"),  # no errors anywhere
    ],
)
def test_small_expected_counts_use_fishers_exact_test_and_large_ones_the_z_test(
    canary: tuple[int, int], baseline: tuple[int, int], test: str
) -> None:
    assert one_sided(canary, baseline)[0] == test


def test_the_one_sided_test_only_counts_a_worse_canary() -> None:
    assert one_sided((30, 5970), (600, 59400))[2] > 0.99  # better canary: no evidence
    assert one_sided((120, 5880), (600, 59400))[2] < 1e-6


def _tables() -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """2x2 tables (canary bad/good, baseline bad/good) from tiny to millions of events,
    with empty cells and margins: where the tests switch, and Fisher's extreme tails."""
    import random

    rng = random.Random(20261126)
    tables = [
        ((0, 0), (0, 10)),
        ((0, 10), (0, 0)),
        ((0, 100), (0, 10_000)),
        ((100, 0), (10_000, 0)),
        ((5, 0), (0, 5)),
        ((0, 5), (5, 0)),
        ((1, 0), (0, 1_000_000)),
        ((3, 997), (5, 9995)),
        ((40, 10), (2, 5_000_000)),  # p far below 1e-100
        ((12, 88), (30, 2_000_000)),
        ((0, 27_000), (50, 500_000)),
        ((7, 26_993), (50, 500_000)),
        ((60, 5940), (300, 59700)),
        ((120, 5880), (600, 59400)),
        ((5_500, 994_500), (95_000, 18_905_000)),
    ]
    for _ in range(3000):
        n1 = int(10 ** rng.uniform(0, 6.5))
        n2 = int(10 ** rng.uniform(0, 7))
        share = 10 ** rng.uniform(-5, 0)
        a = min(n1, int(n1 * share * rng.uniform(0, 3)))
        c = min(n2, int(n2 * share))
        tables.append(((a, n1 - a), (c, n2 - c)))
    return tables


def test_both_tests_give_scipy_stats_p_values_and_statistics() -> None:
    # scipy.stats is the reference the hand-written tails replaced (it stays in the test
    # extra): every table, including Fisher's extreme tails, agrees to 1e-8 relative, far
    # below what alpha can tell apart.
    np = pytest.importorskip("numpy", exc_type=ImportError)
    stats = pytest.importorskip("scipy.stats", exc_type=ImportError)
    seen = set()
    for canary, baseline in _tables():
        test, statistic, p = one_sided(canary, baseline)
        seen.add(test)
        if test == "none":
            assert (p, math.isnan(statistic)) == (1.0, True)
            continue
        if test == "fisher_exact":
            table = np.array([canary, baseline])
            expected = stats.fisher_exact(table, alternative="greater")
            want_statistic, want_p = float(expected.statistic), float(expected.pvalue)
        else:
            want_statistic, want_p = statistic, float(stats.norm.sf(statistic))
        assert p == pytest.approx(want_p, rel=1e-8, abs=1e-300), (canary, baseline, test)
        if math.isnan(want_statistic):
            assert math.isnan(statistic), (canary, baseline)
        else:
            assert statistic == pytest.approx(want_statistic, rel=1e-12), (canary, baseline)
        assert 0.0 <= p <= 1.0
    assert seen == {"none", "fisher_exact", "z_test"}


def _exact_upper_tail(at_least: int, population: int, marked: int, drawn: int) -> Fraction:
    """P(X >= at_least) in exact rationals, for tables with few bad events: each density
    is C(drawn, x) C(population - drawn, marked - x) / C(population, marked), products of
    at most `marked` big integers."""
    whole = math.comb(population, marked)
    return sum(
        (
            Fraction(math.comb(drawn, x) * math.comb(population - drawn, marked - x), whole)
            for x in range(at_least, min(drawn, marked) + 1)
        ),
        Fraction(0),
    )


@pytest.mark.parametrize(
    ("at_least", "population", "marked", "drawn"),
    [
        (1, 10**12 + 4 * 10**6, 40, 2 * 10**6),
        (3, 10**16 + 10**9 + 13, 13, 10**9 + 3),  # scipy says 1.3e-35: it is 2.9e-19
        (2, 10**13, 7, 10**9),
        (5, 10**15, 30, 10**12),
        (1, 10**11, 1, 10**10),
        (20, 10**14, 25, 10**13),
        # A canary huge next to a baseline of one or two events (x / n close to 1).
        (10**16, 10**16 + 1, 10**16, 10**16),
        (10**17, 10**17 + 1, 10**17, 10**17),
        (622559906124447, 622559906124477, 622559906124448, 622559906124475),
    ],
)
def test_fishers_tail_stays_exact_for_populations_of_trillions(
    at_least: int, population: int, marked: int, drawn: int
) -> None:
    # lgamma differences lost ~N log N x 1e-16 in the log: 0.4 % at 10^12, and at 10^16 a
    # p-value of 3e-19 came out 1.0 (a far worse canary passed). Checked against exact
    # rational arithmetic, which scipy itself misses here.
    exact = float(_exact_upper_tail(at_least, population, marked, drawn))
    got = hypergeom_upper_tail(at_least, population, marked, drawn)
    assert got == pytest.approx(exact, rel=1e-9, abs=0)  # approx's default abs is 1e-12


def test_fishers_tail_sums_a_few_dozen_terms_however_large_the_counts() -> None:
    # Where one_sided chooses Fisher (an expected cell below 5) the variance is below 5
    # too: summing every term of the support instead took 3.5 s of the gate's worker at
    # 2 million canary events.
    worst = 0
    for canary, baseline in [
        *_tables(),
        ((1, 2 * 10**4 - 1), (2 * 10**4 - 1, 10**8)),
        ((1, 2 * 10**6 - 1), (2 * 10**6 - 1, 10**12)),
        ((0, 2 * 10**6), (2 * 10**6, 10**12)),
    ]:
        (a, b), (c, d) = canary, baseline
        if one_sided(canary, baseline)[0] != "fisher_exact":
            continue
        worst = max(worst, hypergeom_tail_terms(a, a + b + c + d, a + c, a + b)[1])
    assert 0 < worst <= 60


def test_a_canary_comparison_loads_neither_scipy_nor_numpy() -> None:
    # Importing scipy.stats cost the daemon ~1.4 s and ~70 MB of RSS for its whole life,
    # at its first canary comparison.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sentinel.evaluate.canary import CanaryInput, Counts, Settings, compare\n"
        "from sentinel.rules.model import CanaryPolicy\n"
        "policy = CanaryPolicy(min_canary_events=0, min_baseline_events=0)\n"
        "for canary in (Counts(3, 1000), Counts(600, 10_000)):\n"
        "    compare(CanaryInput('r', 'ratio', policy, canary, Counts(50, 100_000)), Settings())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'numpy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_identical_canary_passes_once_the_comparison_could_catch_a_doubling() -> None:
    assert ratio(Counts(50, 10_000), Counts(950, 190_000)) == "pass"


def test_a_canary_worse_within_the_tolerance_passes_however_significant() -> None:
    # +10 % on a million requests: certainly worse, but less than the +20 % tolerated.
    c = compare(
        CanaryInput("r", "ratio", ANY, Counts(5_500, 1e6), Counts(95_000, 19e6)), Settings()
    )
    assert c.p_value is not None and c.p_value < 1e-6
    assert c.verdict == "pass"


def test_a_doubled_ratio_fails_with_the_effect_and_both_p_values() -> None:
    c = compare(
        CanaryInput("http-5xx-ratio", "ratio", ANY, Counts(100, 10_000), Counts(950, 190_000)),
        Settings(),
    )
    assert c.verdict == "fail"
    assert c.effect == pytest.approx(1.0)
    assert c.tolerated == pytest.approx(0.006)
    assert c.margin_p_value is not None and c.margin_p_value < 0.01
    assert c.reason.startswith("http-5xx-ratio: canary 1 % vs baseline 0.5 % (+100 %")


def test_worse_beyond_the_tolerance_but_not_provably_so_is_marginal() -> None:
    # 0.75 % vs 0.5 % on 10,000: significant, above the tolerated 0.6 %, not surely so.
    c = compare(
        CanaryInput("r", "ratio", ANY, Counts(75, 10_000), Counts(950, 190_000)), Settings()
    )
    assert c.p_value is not None and c.p_value < 0.01
    assert c.margin_p_value is not None and c.margin_p_value > 0.01
    assert c.verdict == "marginal"


def test_below_the_minimum_events_is_pending_with_the_counts_still_needed() -> None:
    policy = CanaryPolicy(min_canary_events=1000, min_baseline_events=1000)
    c = compare(CanaryInput("r", "ratio", policy, Counts(0, 400), Counts(5, 20_000)), Settings())
    assert c.verdict == "pending"
    assert c.needed == {"canary": 600, "baseline": 0}
    assert c.reason == "r: canary needs 600 more events (has 400)"


def test_without_the_power_to_catch_a_doubling_an_ok_canary_is_pending_not_pass() -> None:
    c = compare(CanaryInput("r", "ratio", ANY, Counts(5, 1000), Counts(95, 19_000)), Settings())
    assert c.verdict == "pending"
    assert c.power is not None and c.power < 0.5
    assert 5_000 < c.needed["canary"] < 10_000
    assert c.needed["baseline"] == pytest.approx(19 * c.needed["canary"])


def test_before_full_power_only_overwhelming_evidence_fails() -> None:
    # 10 % errors on 300 requests against 0.5 %: no need to wait for more traffic.
    assert ratio(Counts(30, 300), Counts(950, 190_000)) == "fail"
    # 1.7 % on 300 (p ~ 0.003): beyond alpha, not beyond early_alpha: wait.
    assert ratio(Counts(5, 300), Counts(950, 190_000)) in ("marginal", "pending")


@pytest.mark.parametrize(
    ("policy", "verdict"),
    [(CanaryNoData.FAIL, "fail"), (CanaryNoData.REMOVE, "removed"), (CanaryNoData.ZERO, "pending")],
)
def test_a_side_without_series_follows_the_no_data_policy(
    policy: CanaryNoData, verdict: str
) -> None:
    with_policy = CanaryPolicy(no_data=policy)
    assert ratio(None, Counts(10, 1000), with_policy) == verdict


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    assert quantile(0.95, hist(FAST, 1000)) == pytest.approx(1 + 0.5 * 13 / 14)
    assert quantile(0.95, hist(SLOW, 1000)) == pytest.approx(2.3125)
    # Beyond the highest finite bucket: its bound, as histogram_quantile answers.
    assert quantile(0.95, hist((0, 0, 0, 0, 0, 0, 0, 0, 10, 90), 100)) == 10.0
    assert quantile(0.95, Buckets(())) is None


def test_observations_above_a_latency_are_interpolated_inside_its_bucket() -> None:
    buckets = hist(FAST, 1000)
    assert count_above(buckets, 1.25) == pytest.approx(1000 - (820 + 140 * 0.5))
    assert count_above(buckets, 20.0) is None  # the +Inf bucket cannot be split


def test_a_p95_half_again_slower_fails_and_an_equal_one_passes() -> None:
    slow = compare(
        CanaryInput("p95", "latency", ANY, hist(SLOW, 900), hist(FAST, 17_100), 0.95), Settings()
    )
    assert slow.verdict == "fail"
    assert slow.effect == pytest.approx(2.3125 / (1 + 0.5 * 13 / 14) - 1)
    same = compare(
        CanaryInput("p95", "latency", ANY, hist(FAST, 900), hist(FAST, 17_100), 0.95), Settings()
    )
    assert same.verdict == "pass"


def test_a_tolerance_beyond_the_highest_finite_bucket_can_never_fail_only_be_marginal() -> None:
    top_heavy = (0, 0, 0, 0, 0, 0, 0, 0, 96, 4)  # P95 9.95 s: tolerated 11.9 s > 10 s
    worse = (0, 0, 0, 0, 0, 0, 0, 0, 80, 20)
    c = compare(
        CanaryInput("p95", "latency", ANY, hist(worse, 10_000), hist(top_heavy, 10_000), 0.95),
        Settings(),
    )
    assert c.verdict == "marginal"
    assert "beyond the highest finite bucket (10 s): cannot fail" in c.reason


def _input(
    name: str, verdict_counts: Counts, critical: bool = True, weight: float = 1.0
) -> CanaryInput:
    policy = CanaryPolicy(critical=critical, weight=weight, min_canary_events=0)
    return CanaryInput(name, "ratio", policy, verdict_counts, Counts(950, 190_000))


OK = Counts(50, 10_000)
BAD = Counts(200, 10_000)


def test_a_failing_critical_slo_fails_the_canary_alone() -> None:
    j = judge([_input("a", OK), _input("b", OK), _input("c", BAD)], Settings())
    assert j.decision == "fail"
    assert j.score == pytest.approx(66.7)
    assert j.reasons[0].startswith("c: ")


def test_a_failing_non_critical_slo_only_lowers_the_weighted_score() -> None:
    slos = [_input("a", OK, weight=3), _input("b", OK), _input("c", BAD, critical=False)]
    j = judge(slos, Settings())
    assert (j.decision, j.score) == ("marginal", 80.0)
    heavy = [_input("a", OK), _input("c", BAD, critical=False, weight=3)]
    assert judge(heavy, Settings()).decision == "fail"  # 25 % of the weight standing


def test_any_pending_slo_keeps_the_canary_pending_never_pass() -> None:
    j = judge([_input("a", OK), _input("b", Counts(0, 10))], Settings())
    assert j.decision == "pending"


def test_nothing_to_compare_is_pending() -> None:
    j = judge([], Settings())
    assert (j.decision, j.reasons) == ("pending", ["no SLO could be compared"])


def test_an_answer_is_read_into_both_sides_with_a_missing_bad_series_as_zero() -> None:
    samples = [
        Sample({"sentinel_part": "canary:total"}, 100.0),
        Sample({"sentinel_part": "baseline:total"}, 1900.0),
        Sample({"sentinel_part": "baseline:bad"}, 19.0),
    ]
    sides = sides_from_answer(False, samples)
    assert sides == {"canary": Counts(0.0, 100.0), "baseline": Counts(19.0, 1900.0)}
    assert sides_from_answer(False, samples[1:])["canary"] is None


@pytest.mark.parametrize(
    "samples",
    [
        [Sample({"sentinel_part": "canary:total"}, math.nan)],
        [
            Sample({"sentinel_part": "canary:bad"}, 5.0),
            Sample({"sentinel_part": "canary:total"}, 1.0),
        ],
        [Sample({"sentinel_part": "canary:bucket", "le": "fast"}, 1.0)],
    ],
    ids=["nan", "bad-over-total", "bad-le"],
)
def test_an_answer_no_honest_source_gives_is_refused(samples: list[Sample]) -> None:
    with pytest.raises(UnusableAnswer):
        sides_from_answer("bucket" in str(samples), samples)


def _slo(sli: RatioSLI | LatencySLI) -> SLO:
    return SLO("svc", "x", sli, 0.005, 300.0, labels=(("service", "svc"),))


def test_both_sides_travel_in_one_escaped_query_beside_the_rules_own_matchers() -> None:
    sli = RatioSLI(
        Selector("http_requests_total", (Matcher("status", MatchOp.RE, "5.."),)),
        Selector("http_requests_total"),
    )
    sides = {
        "canary": (Matcher("version", MatchOp.EQ, 'v2"}or vector(1)'),),
        "baseline": (Matcher("version", MatchOp.EQ, "v1"),),
    }
    query = canary_query(_slo(sli), sides, 600.0, (Matcher("env", MatchOp.EQ, "prod"),))
    assert query.count("\nor\n") == 3
    assert 'version="v2\\"}or vector(1)"' in query
    assert (
        'sum(increase(http_requests_total{service="svc", status=~"5..", env="prod", '
        'version="v1"}[10m]))' in query
    )
    assert '"sentinel_part", "canary:bad"' in query and '"baseline:total"' in query


def test_a_latency_sli_is_compared_on_its_buckets() -> None:
    sli = LatencySLI(Selector("chat_seconds"), 0.95)
    sides = {"canary": (Matcher("track", MatchOp.EQ, "canary"),), "baseline": ()}
    query = canary_query(
        _slo(sli), {**sides, "baseline": (Matcher("track", MatchOp.EQ, "stable"),)}, 60.0
    )
    assert 'sum by (le) (increase(chat_seconds_bucket{service="svc", track="canary"}[1m]))' in query


def test_while_another_slo_lacks_power_a_fail_needs_the_early_boundary() -> None:
    # Alone, 0.8 % vs 0.5 % on 10,000 fails (margin p ~ 0.006 < alpha) ...
    worse = _input("worse", Counts(80, 10_000))
    assert judge([worse], Settings()).decision == "fail"
    # ... but while another SLO is still gathering traffic, the pipeline will look again:
    # each look at alpha would add its chance of failing an identical canary.
    slow = _input("slow", Counts(5, 1000))
    j = judge([worse, slow], Settings())
    assert j.decision == "pending"
    assert {c.slo: c.verdict for c in j.slos} == {"worse": "marginal", "slow": "pending"}
