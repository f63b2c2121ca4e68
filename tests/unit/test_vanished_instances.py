"""Which vanished instances may be forgotten (sentinel/daemon/vanished.py), on plain data:
the SLO's own result of the instance no_data, its last answer older than the cutoff,
every alert of it (burn tiers included, whatever their status) quiet, and not every
instance the SLO remembers gone at once."""

from __future__ import annotations

from sentinel.daemon.vanished import vanished
from sentinel.errors import SourceError
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import InstanceKey, SLOResult, Status
from sentinel.evaluate.wiring import renderers
from sentinel.rules.model import SLO, PromQLSLI, RatioSLI, RuleGroup, Selector
from sentinel.sources.base import Sample

ERRORS = SLO(
    service="platform",
    name="errors",
    sli=RatioSLI(Selector("bad"), Selector("total")),
    threshold=0.005,
    objective=0.995,
    window=300,
    group_by=("service",),
)
GROUP = RuleGroup("platform", "platform.yaml", "platform", 30.0, (ERRORS,))


def result(service: str, status: str = "no_data", tier: str | None = None) -> SLOResult:
    labels = {"service": service} | ({"tier": tier} if tier else {})
    kind = "burn_rate" if tier else "ratio"
    return SLOResult(
        service, "errors", Status(status), None, 0.005, 0.995, 300, 0, labels, kind=kind
    )


def test_only_instances_absent_before_the_cutoff_with_quiet_alerts_are_forgotten() -> None:
    seen: dict[InstanceKey, float] = {("a",): 100.0, ("b",): 100.0, ("c",): 500.0, ("d",): 100.0}
    results = [
        result("a"),
        result("a", tier="page-quick"),  # the same instance's burn tier: forgotten with it
        result("a", "ok", tier="ticket-slow"),  # a long window still holds it; quiet
        result("b"),
        result("b", tier="page-quick"),  # a firing tier keeps the whole instance
        result("c"),  # absent, but not for long enough
        result("d", "ok"),  # an answer holds it (its last_seen is stale only in this test)
        result("e"),  # never held by an answer: the SLO as a whole, not an instance
    ]
    firing = {result("b", tier="page-quick").key}
    gone = vanished(
        GROUP,
        results,
        lambda slo_key, instance: seen.get(instance),
        lambda key: key not in firing,
        cutoff=200.0,
        remembered=lambda slo_key: len(seen),
    )
    assert [(v.instance, v.alert_keys) for v in gone] == [
        (
            ("a",),
            [
                result("a").key,
                result("a", tier="page-quick").key,
                result("a", tier="ticket-slow").key,
            ],
        )
    ]


def test_nothing_is_forgotten_when_every_remembered_instance_is_gone() -> None:
    """All of an SLO's data missing at once (a renamed metric, a stopped exporter) is not
    instances retiring: each stays no_data."""
    seen: dict[InstanceKey, float] = {("a",): 100.0, ("b",): 100.0}
    gone = vanished(
        GROUP,
        [result("a"), result("b")],
        lambda slo_key, instance: seen.get(instance),
        lambda key: True,
        cutoff=200.0,
        remembered=lambda slo_key: len(seen),
    )
    assert gone == []


class FlakySource:
    """Answers one sample per service, or fails like an unreachable Prometheus."""

    def __init__(self) -> None:
        self.down = False
        self.services = ["a"]

    async def instant(self, query: str, at: float) -> list[Sample]:
        if self.down:
            raise SourceError("prometheus", query, "connection refused")
        return [Sample({"service": s}, 0.001) for s in self.services]


async def test_an_outage_is_not_an_absence() -> None:
    """While the source cannot answer, the absence clock of the engine's instances pauses:
    a Prometheus down for longer than forget_after does not make them vanish, and
    intermittent failures do not restart the clock of one that is really gone."""
    slo = SLO(
        service="platform",
        name="p",
        sli=PromQLSLI("x"),
        threshold=1.0,
        window=300,
        group_by=("service",),
    )
    source = FlakySource()
    engine = Engine({"prometheus": source}, renderers())  # type: ignore[dict-item]
    await engine.evaluate_once([slo], 1000.0)
    assert engine.last_seen(slo.key, ("a",)) == 1000.0
    source.down = True
    report = await engine.evaluate_once([slo], 9000.0)
    assert [r.status for r in report.results] == [Status.NO_DATA]
    assert engine.last_seen(slo.key, ("a",)) == 9000.0  # 8,000 s of outage: no absence
    # "a" is gone for good (answers without it), with a failure every other cycle: only
    # the answered cycles count, 3 x 30 s of absence after 6 cycles.
    source.down, source.services = False, ["b"]
    for n in range(1, 7):
        source.down = n % 2 == 0
        await engine.evaluate_once([slo], 9000.0 + 30 * n)
    assert engine.last_seen(slo.key, ("a",)) == 9000.0 + 30 * 6 - 90
