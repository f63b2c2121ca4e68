"""The engine renders each (SLO, window, matchers) query once and keeps it; what it plans
is always what the renderer writes, and the gate's stream of distinct matchers cannot
grow what it keeps without bound."""

from __future__ import annotations

from sentinel.evaluate import engine as engine_module
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.wiring import renderers
from sentinel.query.promql import slo_query
from sentinel.rules.catalogues import builtin_catalogue
from sentinel.rules.model import SLO, BurnPolicy, Matcher, MatchOp, RatioSLI, Selector

MONTH = 30 * 86400.0
SLO_5XX = SLO(
    service="shop",
    name="5xx",
    sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
    threshold=0.005,
    objective=0.995,
    window=300,
    group_by=("service",),
    period=MONTH,
    burn=BurnPolicy(builtin_catalogue(MONTH), min_events=10),
)


def test_planned_queries_are_the_rendered_ones_and_kept_within_bounds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engine_module, "RENDERED_KEPT", 50)
    engine = Engine({}, renderers())
    first = engine.plan_budgets([SLO_5XX])[SLO_5XX.key]
    assert first == engine.plan_budgets([SLO_5XX])[SLO_5XX.key]
    for window, planned in first.items():
        assert planned.query == slo_query(SLO_5XX, window, ())
    for i in range(200):  # a gate asked about 200 services
        extra = [Matcher("service", MatchOp.EQ, f"svc-{i}")]
        planned = engine.plan([SLO_5XX], 120.0, extra)[SLO_5XX.key]
        assert planned.query == slo_query(SLO_5XX, 120.0, extra)
        assert len(engine._rendered) <= 50
    changed = SLO(**{**SLO_5XX.__dict__, "threshold": 0.01, "window": 600})
    assert engine.plan([changed])[changed.key].query == slo_query(changed, None, ())
