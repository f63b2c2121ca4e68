"""The engine lends each instance's labels and key from one cycle to the next
(`slo.Names`): the results must still be exactly those a fresh evaluation gives, through
instances that come and go, failed queries, burn tiers, and a reload that changes an SLO
under the same key."""

from __future__ import annotations

import dataclasses

from sentinel.errors import SourceError
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import SLOResult
from sentinel.evaluate.wiring import renderers
from sentinel.query.promql import PART_LABEL
from sentinel.rules.catalogues import builtin_catalogue
from sentinel.rules.model import SLO, BurnPolicy, RatioSLI, Selector
from sentinel.sources.base import Sample

MONTH = 30 * 86400.0


def ratio_slo(group_by: tuple[str, ...], name: str = "5xx") -> SLO:
    return SLO(
        service="shop",
        name=name,
        sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
        threshold=0.005,
        objective=0.995,
        window=300,
        group_by=group_by,
        period=MONTH,
        burn=BurnPolicy(builtin_catalogue(MONTH), min_events=1),
    )


class Answers:
    """Every query (the SLO's own and each window's) answers bad and total per instance."""

    def __init__(self) -> None:
        self.instances: list[dict[str, str]] = []
        self.bad = 1.0
        self.down = False

    async def instant(self, query: str, at: float) -> list[Sample]:
        if self.down:
            raise SourceError("prometheus", query, "connection refused")
        out = []
        for labels in self.instances:
            out.append(Sample({**labels, PART_LABEL: "bad"}, self.bad))
            out.append(Sample({**labels, PART_LABEL: "total"}, 100.0))
        return out


def fields(results: list[SLOResult]) -> list[tuple[object, ...]]:
    """Every field of every result, and the key each one reports."""
    return [(*dataclasses.astuple(r)[:-1], r.key, r.instance) for r in results]


async def fresh(slo: SLO, source: Answers, at: float, known: list[SLOResult]) -> list[SLOResult]:
    """What an engine with nothing lent yet gives for the same instant and instances."""
    engine = Engine({"prometheus": source}, renderers())  # type: ignore[dict-item]
    for r in known:  # the instances the long-lived engine remembers
        if r.kind != "burn_rate" and r.labels:
            engine._known.setdefault(slo.key, {})[tuple(r.labels.values())] = at
    return (await engine.evaluate_once([slo], at)).results


async def test_lent_labels_and_keys_give_what_a_fresh_evaluation_gives() -> None:
    slo = ratio_slo(("service", "region"))
    source = Answers()
    engine = Engine({"prometheus": source}, renderers())  # type: ignore[dict-item]
    steps = [
        [{"service": "a", "region": "eu"}, {"service": "b", "region": "us"}],
        [{"service": "a", "region": "eu"}, {"service": "b", "region": "us"}],  # lent now
        [{"service": "a", "region": "eu"}, {"service": "c", "region": "eu"}],  # c new, b gone
        None,  # the source fails: every known instance no_data
        [{"service": "b", "region": "us"}],  # b back
    ]
    previous: list[SLOResult] = []
    for n, instances in enumerate(steps):
        at = 1000.0 + 30 * n
        source.down = instances is None
        source.instances = instances or source.instances
        source.bad = float(n)  # the values move every cycle; the names do not
        got = (await engine.evaluate_once([slo], at)).results
        source.down = instances is None
        want = await fresh(slo, source, at, previous)
        assert fields(got) == fields(want), f"cycle {n}"
        assert {r.labels.get("tier") for r in got} == {
            None,
            "page-quick",
            "page-slow",
            "ticket-quick",
            "ticket-slow",
        }
        previous = got
    assert any(r.key == "b/5xx{region=us,service=b,tier=page-quick}" for r in got)


async def test_a_reload_that_changes_an_slo_under_the_same_key_gets_new_labels() -> None:
    """The same service and name (so the same SLO key), grouped by another label after a
    reload: labels lent from before the reload would name the wrong label."""
    source = Answers()
    source.instances = [{"service": "a", "cluster": "a"}]
    engine = Engine({"prometheus": source}, renderers())  # type: ignore[dict-item]
    before = (await engine.evaluate_once([ratio_slo(("service",))], 1000.0)).results
    assert before[0].labels == {"service": "a"}
    reloaded = ratio_slo(("cluster",))
    assert reloaded.key == ratio_slo(("service",)).key
    after = (await engine.evaluate_once([reloaded], 1030.0)).results
    assert fields(after) == fields(await fresh(reloaded, source, 1030.0, []))
    assert after[0].labels == {"cluster": "a"}
    assert after[0].key == "shop/5xx{cluster=a}"


async def test_a_forgotten_instance_is_not_lent_again() -> None:
    """Vanished instances forgotten by the daemon take their lent names with them."""
    slo = ratio_slo(("service",))
    source = Answers()
    source.instances = [{"service": "a"}, {"service": "b"}]
    engine = Engine({"prometheus": source}, renderers())  # type: ignore[dict-item]
    await engine.evaluate_once([slo], 1000.0)
    engine.forget_instances(slo.key, [("b",)])
    kept = engine._names[slo.key]
    assert set(kept[1]) == {("a",)} and set(kept[2]) == {("a",)}
    source.instances = [{"service": "a"}]
    got = (await engine.evaluate_once([slo], 1030.0)).results
    assert {r.labels["service"] for r in got} == {"a"}
