"""Which vanished instances may be forgotten (sentinel/daemon/vanished.py), on plain data:
all of an instance's results (the SLO's own and each burn tier's) must be no_data, its
last answer older than the cutoff, and every alert of it quiet."""

from __future__ import annotations

from sentinel.daemon.vanished import vanished
from sentinel.evaluate.slo import InstanceKey, SLOResult, Status
from sentinel.rules.model import SLO, RatioSLI, RuleGroup, Selector

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
